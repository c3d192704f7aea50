#!/usr/bin/env bash
# First device call for perceive.sh (run from the repo root, carrying .gpu-carry/perceive with
# tsst.xz: a release build of `tsst`, xz-compressed, and optionally pack-64 etc.): copies the repo to /opt/perceive/repo,
# unpacks the binary and starts perceive.sh in its own session, so it runs on between calls.
# Then `perceive-wait.sh MAXSEC` calls keep the machine busy and bring the results back.
set -eu
G=/opt/perceive
mkdir -p $G/repo $G/bin
tar --exclude=./.gpu-carry --exclude=./target --exclude=./.ort --exclude=./.venv-tools -cf - . | tar -C $G/repo -xf -
python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'), 1<<24)" \
  .gpu-carry/perceive/tsst.xz $G/bin/tsst
chmod +x $G/bin/tsst
# Packs made here (`warmup.py prepare --contrasts`, as perceive.sh does) save the device their time.
for p in .gpu-carry/perceive/pack-*; do [ -d "$p" ] && cp -r "$p" $G/; done
cd $G/repo
G=$G PY=/opt/torch/.venv/bin/python3 BIN=$G/bin/tsst setsid nohup bash tools/train/gpu/perceive.sh \
  > $G/run.log 2>&1 < /dev/null &
sleep 5
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$G/bin/tsst --version; nproc; cat $G/stages.txt
