#!/usr/bin/env bash
# On the GPU machine, from the project root: unpack the onnxruntime-gpu wheel if needed
# (its parts carried to /opt/ortgpu, GPU.md), measure the card's bandwidth, and export
# the 32-layer LLaVA-1.5-7B-shaped random fp16 policy and value to /opt/work. The
# onnxruntime-genai builder (with onnx_ir and ml_dtypes) is expected under
# .gpu-carry/builder (models/ and site/). Writes logs under $OUT.
set -euo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
if [ ! -f "$ORT_DYLIB_PATH" ]; then
  cd /opt/ortgpu && cat part0 part1 part2 part3 part4 > ort.whl && python3 -m zipfile -e ort.whl site && cd - >/dev/null
fi
mkdir -p /opt/work
# The model arguments; bench/gpu/reference_loop.py rebuilds the same weights from them.
MODEL_ARGS="--random-shape llava-1.5-7b --init-device cuda --dtype fp16"
B=$(realpath "${BUILDER:-.gpu-carry/builder}")
export PYTHONPATH=/opt/ortgpu/site:$B/site
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv | tee $OUT/gpu.txt
python3 $G/bandwidth.py > $OUT/bandwidth.txt 2>&1 || true
# Random weights never write a period: the policy's logits are biased so that steps end
# after drawn lengths (a "." about 4% of positions, plus the tokens that contain one) and
# only tokens the tokenizer has are written (solutions then end at markers or at 1000
# characters). bench/gpu/reference_loop.py reads the same bias from the decoder.
for kind in policy value; do
  [ -f /opt/work/$kind-L32/manifest.json ] && continue
  bias=()
  [ $kind = policy ] && bias=(--text-only --token-rate ".=0.04")
  /usr/bin/time -v python3 tools/export/export_llava.py $MODEL_ARGS "${bias[@]}" \
    --kind $kind --execution-provider cuda --no-goldens \
    --builder $B/models/builder.py --out /opt/work/$kind-L32 > $OUT/export-$kind.log 2>&1 || { tail -30 $OUT/export-$kind.log; exit 1; }
  tail -3 $OUT/export-$kind.log
done
ls -la /opt/work/*/
