#!/usr/bin/env bash
# Here, from the project root: what a device session needs beyond the working tree, in
# .gpu-carry/ (ignored by .gitignore). A call carries at most 64 MiB with the tree, so:
#   boot/   one call (bench/gpu/boot.sh): the CUDA build of tsst and ONNX Runtime's core
#           libraries and Python package, xz-compressed; onnxruntime-genai 0.18's model builder (models/) with
#           onnx_ir and ml_dtypes (site/) for the export;
#   p0..pN  one call each (bench/gpu/part.sh N [last]): ONNX Runtime's CUDA provider
#           (284 MB), xz-compressed and cut to fit beside the tree.
# Needs the CUDA build first:
#   CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda -p tsst-workers
# TSST_BASELINE_BIN=PATH adds another build (say, of the last commit before a change) as
# boot/tsst-base.xz, for a before/after on the same card (session.sh's `base`).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
ver=1.31.1
bin=${TSST_CUDA_BIN:-target/cuda/release/tsst}
[ -x "$bin" ] || { echo "no CUDA build at $bin" >&2; exit 1; }
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tsst-gpu-carry
mkdir -p "$cache"
fetch() { # package==version [platform]
  ls "$cache"/"$(echo "${1%%==*}" | tr - _)"-"${1##*==}"-*.whl >/dev/null 2>&1 ||
    pip download -q --no-deps "$1" --python-version 3.12 --only-binary=:all: \
      --platform manylinux_2_28_x86_64 -d "$cache"
}
fetch onnxruntime-gpu==$ver
fetch onnxruntime-genai==0.18.0
fetch onnx_ir==1.1.0
fetch ml_dtypes==0.7.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf .gpu-carry && mkdir -p .gpu-carry/boot
python3 -m zipfile -e "$cache"/onnxruntime_gpu-$ver-*.whl "$work/ort"
capi=$work/ort/onnxruntime/capi
# The Python package too (its bindings; `import onnxruntime` with PYTHONPATH=/opt/ortgpu/site),
# all but the CUDA provider, which goes in parts.
tar -C "$work/ort" --exclude=libonnxruntime_providers_cuda.so --exclude=libonnxruntime_providers_tensorrt.so \
  -cf - onnxruntime | xz -6 -T2 > .gpu-carry/boot/core.tar.xz
xz -6 -T2 -c "$bin" > .gpu-carry/boot/tsst.xz
# The models crate's timing examples, where built:
#   CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda -p tsst-models --examples
ex=$(dirname "$bin")/examples
# TSST_BASELINE_TIMING=PATH adds another build's timing tool as timing-base (steps.sh),
# TSST_BASELINE_VALUE_TIMING=PATH its value_timing as value_timing-base.
if [ -x "$ex/value_timing" ] && [ -x "$ex/timing" ]; then
  extra=()
  if [ -n "${TSST_BASELINE_TIMING:-}" ]; then
    cp "$TSST_BASELINE_TIMING" "$work/timing-base" && extra=(-C "$work" timing-base)
  fi
  if [ -n "${TSST_BASELINE_VALUE_TIMING:-}" ]; then
    cp "$TSST_BASELINE_VALUE_TIMING" "$work/value_timing-base" && extra+=(-C "$work" value_timing-base)
  fi
  tar -C "$ex" -cf - value_timing timing "${extra[@]}" | xz -6 -T2 > .gpu-carry/boot/examples.tar.xz
fi
if [ -n "${TSST_BASELINE_BIN:-}" ]; then
  xz -6 -T2 -c "$TSST_BASELINE_BIN" > .gpu-carry/boot/tsst-base.xz
fi
python3 -m zipfile -e "$cache"/onnxruntime_genai-0.18.0-*.whl "$work/genai"
mkdir -p .gpu-carry/boot/builder/site
cp -r "$work/genai/onnxruntime_genai/models" .gpu-carry/boot/builder/
for w in "$cache"/onnx_ir-*.whl "$cache"/ml_dtypes-*.whl; do
  python3 -m zipfile -e "$w" .gpu-carry/boot/builder/site
done
xz -6 -T2 -c "$capi/libonnxruntime_providers_cuda.so" > "$work/cuda.xz"
tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
part=$(( (64 * 1048576 - tree) * 9 / 10 ))
split -b $part -d -a 1 "$work/cuda.xz" .gpu-carry/p
du -sb .gpu-carry/boot .gpu-carry/p?
echo "tracked tree: $tree bytes; each carry (tree + one folder) stays under 67108864"
