#!/usr/bin/env bash
# issue 12 on the GPU, first device call (run from the repo root; carry .gpu-carry/boot, made by
# bench/gpu/carry.sh): copies the repo to /opt/gst/repo, unpacks the tsst binary, ONNX Runtime's
# core libraries and Python package and the genai builder, and starts tools/train/gpu/st-run.sh
# (with this call's environment: V0, EXPORT_ARGS, ROUNDS) in its own session so it runs on
# between calls. The CUDA provider follows in parts (st-part.sh).
set -eu
G=/opt/gst
mkdir -p $G/repo $G/bin /opt/ortgpu/site
tar --exclude=./.gpu-carry --exclude=./target --exclude=./.ort -cf - . | tar -C $G/repo -xf -
unxz() { python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'), 1<<24)" "$1" "$2"; }
unxz .gpu-carry/boot/tsst.xz $G/bin/tsst && chmod +x $G/bin/tsst
unxz .gpu-carry/boot/core.tar.xz /tmp/core.tar && tar -C /opt/ortgpu/site -xf /tmp/core.tar
cp -r .gpu-carry/boot/builder $G/builder
# A part of the CUDA provider may come along when it fits (st-part.sh joins /opt/ortgpu/p?).
for p in .gpu-carry/p?; do if [ -e "$p" ]; then mv "$p" /opt/ortgpu/; fi; done
cd $G/repo
setsid nohup bash tools/train/gpu/st-run.sh > $G/run.log 2>&1 < /dev/null &
sleep 3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$G/bin/tsst --version || true
ls -la /opt/ortgpu /opt/ortgpu/site/onnxruntime/capi; cat $G/stages.txt 2>/dev/null; nproc; df -h /opt | tail -1
