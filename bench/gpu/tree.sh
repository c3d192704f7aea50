#!/usr/bin/env bash
# On the device, after boot.sh and the parts: can one decoder run score all of a node's
# children (tree attention in the torch route's decoder) instead of one run per child?
# tree_value.py exports the value decoder with a per-query mask and times both ways on
# the same prefix, checking that the values agree. LAYERS (default 8) keeps the export
# short; both ways read the same weights, so the ratio carries to 32 layers.
#   bench/gpu/tree.sh [PREFIX] [LAYERS]
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
prefix=${1:-900} layers=${2:-8}
for rest in 10-40 20-90; do
  PYTHONPATH=/opt/ortgpu/site python3 -u "$G/tree_value.py" --device cuda --prefix $prefix --rest $rest \
    --export-args "--random-shape llava-1.5-7b --num-layers $layers --init-device cuda --dtype fp16" \
    --work /opt/work/tree-value 2>&1 | grep -v Warning
done
