#!/usr/bin/env bash
# Installs the ONNX Runtime shared library tsst loads at run time (ort with
# load-dynamic): the PyPI wheel onnxruntime==1.31.1, unpacked into .ort/ (ignored by
# git). Prints the library's path. Pass --gpu for onnxruntime-gpu (CUDA 13).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=1.31.1
package=onnxruntime
[ "${1:-}" = "--gpu" ] && package=onnxruntime-gpu
dest="$root/.ort/$package-$version"
lib="$dest/onnxruntime/capi/libonnxruntime.so.$version"
if [ -f "$lib" ]; then
  echo "$lib"
  exit 0
fi
python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "fetch-ort: python3 is needed to download the $package wheel from PyPI" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --python-version 3.11 --implementation cp \
  -d "$tmp" "$package==$version" >&2
wheel=$(ls "$tmp"/*.whl)
mkdir -p "$dest"
# Only the native libraries are needed, not the Python package around them.
"$python" - "$wheel" "$dest" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("onnxruntime/capi/libonnxruntime"):
            z.extract(name, dest)
PY
[ -f "$lib" ] || { echo "fetch-ort: $lib missing from $(basename "$wheel")" >&2; exit 1; }
echo "$lib"
