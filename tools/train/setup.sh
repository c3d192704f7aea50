#!/usr/bin/env bash
# Installs the Python tools (tools/export, tools/train: torch, transformers, peft,
# onnx, onnxruntime) into the ignored .venv-tools/ at the pinned versions, and prints
# the venv's python. Run again, it installs nothing while the requirements are
# unchanged (a stamp holds their hash). torch from PyPI brings its CUDA libraries:
# about 5 GB on disk, about 2 minutes on a fast link.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.venv-tools"
reqs=("$root/tools/export/requirements.txt" "$root/tools/train/requirements.txt")
want=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
stamp="$venv/.tsst-requirements"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi
python=$(command -v python3 || true)
[ -n "$python" ] || { echo "setup: python3 is needed" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv" >&2
"$venv/bin/pip" install --quiet -r "${reqs[0]}" -r "${reqs[1]}" >&2
"$venv/bin/python" -c "import torch, transformers, peft, onnx, onnxruntime" >&2
echo "$want" > "$stamp"
echo "$venv/bin/python"
