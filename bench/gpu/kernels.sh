#!/usr/bin/env bash
# On the device, after export-7b.sh (or the policy's export alone): the decode step of the
# 32-layer 7B-shaped policy kernel by kernel (kernels.py), plain and as a CUDA graph, under
# the floor from the bandwidth measured in the same call; then, where the value model was
# exported, one of its runs over a node's prefix.
#   bench/gpu/kernels.sh [BATCHES]   (default 16,64, or KERNELS_BATCHES; `none` profiles only
#   the value run, as session.sh's `kernels` does with KERNELS_BATCHES=none in its environment)
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
bw=$(python3 "$G/bandwidth.py" | tee /dev/stderr | sed -n 's/.*read_tbs=\([0-9.]*\).*/\1/p')
batches=${1:-${KERNELS_BATCHES:-16,64}}
if [ "$batches" != none ]; then
  PYTHONPATH=/opt/ortgpu/site python3 -u "$G/kernels.py" /opt/work/policy-L32 --batch "$batches" \
    --bandwidth-tbs "$bw" 2>&1 | grep -v "Warning\|VerifyEachNode"
fi
# The value model's runs: a child's rest (20 positions) over a node's 900-position prefix.
if [ -f /opt/work/value-L32/manifest.json ]; then
  PYTHONPATH=/opt/ortgpu/site python3 -u "$G/kernels.py" /opt/work/value-L32 --batch 1 --past 900 \
    --new 20 --graphs 0 --bandwidth-tbs "$bw" 2>&1 | grep -v "Warning\|VerifyEachNode"
fi
