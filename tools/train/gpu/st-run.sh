#!/usr/bin/env bash
# issue 12 on the GPU (started by st-boot.sh in /opt/gst/repo, in its own session): the easy
# synthetic data, version 0, then `tsst selftrain` on CUDA once ONNX Runtime CUDA is there.
# Version 0 is either
#   V0=warmup (default): the warm-up's grounded chains, warmup.py prepare, the warm-up B then
#     B2 (as tools/train/gpu/warm.sh / cont.sh, alone on the card, the first 16,000 training
#     questions), exported;
#   V0=demo: models/demo's policy and value, rebuilt as checkpoints (from_onnx.py), exported.
# EXPORT_ARGS are export_llava.py's (the trainer's --export-arg should match them).
# Stage marks go to /opt/gst/stages.txt (epoch seconds, time, name).
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
G=/opt/gst
PY=/opt/torch/.venv/bin/python3
BIN=$G/bin/tsst
D=$G/data/synth-easy
V0=${V0:-warmup}
ST=${ST:-st}
NAME=${NAME:-gpu}
EXPORT_ARGS=${EXPORT_ARGS:-}
mark() { echo "$(date +%s) $(date -u +%T) $*" >> $G/stages.txt; }
fail() { mark "FAIL $*"; exit 1; }
mark start
export PYTHONPATH=$G/builder/site
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 1000 > $G/smi.csv &
warmup() {
  pids=()
  for s in train val test; do
    $BIN warmup --config config/selftrain/gpu/warmup.yaml --split $s --out $G/warmup-$s > $G/warmup-$s.log 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  for s in train val test; do [ -f $G/warmup-$s/warmup_policy.json ] || fail warmup-$s; done
  mark warmup-done
  $PY tools/train/warmup.py prepare --data-root $D --warmup $G/warmup-train --warmup-val $G/warmup-val \
    --warmup-test $G/warmup-test --out $G/pack > $G/prepare.log 2>&1 || fail prepare
  mark prepare-done
  common="--pack $G/pack --steps 40000 --batch 128 --eval-n 250 --eval-batch 256 --max-new 128 --log-every 200 --train-n 16000"
  $PY tools/train/warmup.py train $common --out $G/B --seed 0 --lr 1e-3 --warmup-steps 200 --max-minutes ${BMIN:-2.5} \
    --eval-every 250 --test-n 0 --value-steps 0 > $G/B.log 2>&1 || fail B
  mark B-done
  $PY tools/train/warmup.py train $common --out $G/B2 --seed 1 --init $G/B/policy --lr 5e-4 --warmup-steps 100 \
    --max-minutes ${B2MIN:-2.0} --eval-every 200 --test-n 500 --value-steps 2000 --value-max-minutes 0.7 \
    --value-eval-every 500 --value-eval-n 1500 --value-n 60000 > $G/B2.log 2>&1 || fail B2
  mark B2-done
  mkdir -p $G/v0/policy $G/v0/value
  cp -r $G/B2/policy $G/v0/policy/hf && cp -r $G/B2/value $G/v0/value/hf || fail copy
  # The warm-up's checkpoints in fp16 (a copy: half.py rewrites in place), in case they are needed elsewhere.
  mkdir -p /tmp/B2h && cp -r $G/B2/policy $G/B2/value $G/B2/log.jsonl $G/B2/summary.json /tmp/B2h/ && \
    $PY tools/train/gpu/half.py /tmp/B2h $G/warmup-B2-fp16.tar.gz
}
demo() {
  for k in policy value; do
    $PY tools/train/from_onnx.py models/demo/$k --out $G/v0/$k/hf > $G/from-onnx-$k.log 2>&1 || fail from-onnx-$k
  done
  mark from-onnx-done
}
if [ -f $G/v0/policy/onnx/manifest.json ] && [ -f $G/v0/value/onnx/manifest.json ]; then
  mark v0-kept  # a later run on the same machine (ST, ROUNDS, new configs) starts from the same version 0
else
  $BIN data synth --out $D --n 25000 --seed 11 --difficulty easy --splits 0.96,0.02,0.02 > $G/synth.log 2>&1 || fail synth
  mark synth-done
  case $V0 in
    warmup) warmup ;;
    demo) demo ;;
    *) fail "V0=$V0" ;;
  esac
  pids=()
  for k in policy value; do
    $PY tools/export/export_llava.py --checkpoint $G/v0/$k/hf --kind $k --out $G/v0/$k/onnx \
      --builder $G/builder/models/builder.py $EXPORT_ARGS > $G/export-v0-$k.log 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  for k in policy value; do [ -f $G/v0/$k/onnx/manifest.json ] || fail export-v0-$k; done
  mark export-v0-done
fi
while [ ! -f /opt/ortgpu/ready ]; do sleep 1; done
source bench/gpu/env.sh
mark selftrain-start
$BIN selftrain --config config/selftrain/gpu/search.yaml --trainer config/selftrain/gpu/trainer.yaml \
  --rounds ${ROUNDS:-2} --eval config/selftrain/gpu/direct.yaml --eval config/selftrain/gpu/beam.yaml \
  --out $G/$ST --name $NAME --warm-start $G/v0/policy/onnx $G/v0/value/onnx \
  --device cuda:0 --fresh-questions --batch 128 --quiet > $G/selftrain.log 2>&1
mark "selftrain-done $ST rc=$?"
