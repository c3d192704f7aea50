#!/usr/bin/env bash
# On the device, after boot.sh, the parts and export-7b.sh: issue 10's "Generation"
# figure. tsst's decode step (timing, with the floor from the bandwidth measured in the
# same call) next to PyTorch's on the same policy and prompt: Hugging Face `generate`
# fp16 eager, and with a static cache whose decode steps generate compiles (CUDA
# graphs), at batch 1 / 16 / 64 (hf_decode.py). Compiling takes a minute or so a batch.
#   bench/gpu/generation.sh [BATCHES]   (default 1,16,64)
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
batches=${1:-1,16,64}
W=/opt/work/generation
rm -rf $W && mkdir -p $W
$(realpath "${TSST:-/opt/work/bin/tsst}") data synth --out $W/synth --n 2 --seed 3 > /dev/null
echo "== tsst (timing)"
TIMING=/opt/work/bin/timing bash "$G/decode.sh" /opt/work/policy-L32 --batch $batches 2>&1 | grep -E "^(BW|PREFILL|DECODE)"
echo "== PyTorch (hf_decode.py)"
PYTHONPATH=/opt/ortgpu/site python3 -u "$G/hf_decode.py" --policy /opt/work/policy-L32 \
  --export-args="--random-shape llava-1.5-7b --init-device cuda --dtype fp16" \
  --dataset-root $W/synth --batch $batches --device cuda 2> $W/hf.log || tail -5 $W/hf.log
