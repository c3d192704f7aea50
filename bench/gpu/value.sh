#!/usr/bin/env bash
# On the device, after boot.sh, the parts and export-7b.sh: the value model's calls in
# isolation at the 7B shape (models/examples/value_timing, carried by carry.sh), with
# a node's children scored from their shared prefix (default) and whole
# (TSST_VALUE_PREFIX_REUSE=0), then once more with ONNX Runtime's profile, summed by
# operator (profile_top.py). Where a value call's ~60 ms a text go (bench/RESULTS.md).
#   bench/gpu/value.sh [NODES] [CALLS]
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
nodes=${1:-64} calls=${2:-3}
T=/opt/work/bin/value_timing
M=/opt/work/value-L32
$T $M --device cuda:0 --nodes $nodes --calls $calls 2>&1 | grep -v "^\s*$" | tail -$((calls + 1))
TSST_VALUE_PREFIX_REUSE=0 $T $M --device cuda:0 --nodes $nodes --calls $calls 2>&1 | tail -$((calls + 1))
rm -rf /opt/work/prof && mkdir -p /opt/work/prof
TSST_ORT_PROFILE=/opt/work/prof/value $T $M --device cuda:0 --nodes 16 --calls 2 2>&1 | tail -2
for f in /opt/work/prof/value*.json; do python3 "$G/profile_top.py" "$f" --top 10; done 2>&1 | head -60
