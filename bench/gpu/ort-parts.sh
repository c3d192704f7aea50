#!/usr/bin/env bash
# The onnxruntime-gpu wheel in parts that fit a device call beside this repository's
# working tree: ../shared/gpu/prepare-ort-cuda.sh cuts 52 MB parts, which no longer
# fit with the committed demo models (models/demo, ~14 MB; a call carries 64 MiB in
# all). This runs it, then cuts the wheel again into 36 MB parts (.gpu-carry/part0..6).
# Carry them as ../shared/GPU.md says, one call each, and in the last call:
#   cd /opt/ortgpu && cat part? > ort.whl && python3 -m zipfile -e ort.whl site
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
bash "$root/../shared/gpu/prepare-ort-cuda.sh" >/dev/null
cat .gpu-carry/part? > .gpu-carry/ort.whl
rm -f .gpu-carry/part?
split -b 36000000 -d -a 1 .gpu-carry/ort.whl .gpu-carry/part
rm .gpu-carry/ort.whl
tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
ls -l .gpu-carry
echo "tracked working tree: $tree bytes; largest part plus it must stay under 67108864"
