#!/usr/bin/env bash
# On the device, after boot.sh, the parts and export-7b.sh: the value model's calls in
# isolation at the 7B shape (models/examples/value_timing, carried by carry.sh): a
# node's children scored from their shared prefix, each child's rest a run, with every
# rest of a call one length, then with lengths that vary as a search's do; then ONNX
# Runtime's profile, summed by operator (profile_top.py). Why a child's rest took 47 ms
# inside the search and 7.5 ms here (bench/RESULTS.md, "The value model alone and inside
# the search", which also has row slots, longer rests and the attention kernel).
#   bench/gpu/value.sh [NODES] [CALLS]
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
nodes=${1:-32} calls=${2:-2}
T=/opt/work/bin/value_timing
M=/opt/work/value-L32
echo "== default"
$T $M --device cuda:0 --nodes $nodes --calls $calls 2>&1 | tail -$((calls + 1))
# Each child's step 1-60 words, drawn afresh every call, as a search's steps vary: does a
# length not seen before cost more? Also with arena memory never handed back after a
# prefix's prefill (TSST_ARENA_SHRINK=0).
for v in "" TSST_ARENA_SHRINK=0; do
  echo "== ${v:-default}, --rest-words 1-60"
  env $v $T $M --device cuda:0 --nodes $nodes --calls 3 --rest-words 1-60 2>&1 | tail -3
done
# The same with a question's nodes next to each other in the call, as in the search: its
# nodes' texts then share one prefix up to where their chains part, and every rest
# carries its node's chain since then.
echo "== default, --rest-words 1-60 --adjacent 1"
$T $M --device cuda:0 --nodes $nodes --calls 3 --rest-words 1-60 --adjacent 1 2>&1 | tail -3
# Where the time of varied lengths goes, by operator.
rm -rf /opt/work/prof && mkdir -p /opt/work/prof
echo "== profile, --rest-words 1-60"
TSST_ORT_PROFILE=/opt/work/prof/value $T $M --device cuda:0 --nodes 8 --calls 3 --rest-words 1-60 2>&1 | tail -1
python3 "$G/profile_top.py" /opt/work/prof/value*.json --top 8 2>&1 | grep -v " 0 runs" | head -40
