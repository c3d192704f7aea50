#!/usr/bin/env bash
# On the device, after boot.sh, the parts and export-7b.sh: the value model's calls in
# isolation at the 7B shape (models/examples/value_timing, carried by carry.sh): a
# node's children scored from their shared prefix, each child's rest a run (default),
# in row slots one position a run (TSST_VALUE_RESTS=steps), and whole where VALUE_WHOLE
# is set (TSST_VALUE_PREFIX_REUSE=0); then the default and steps once more with ONNX
# Runtime's profile, summed by operator (profile_top.py). Where a value call's ~60 ms
# a text go (bench/RESULTS.md).
#   bench/gpu/value.sh [NODES] [CALLS]
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
nodes=${1:-32} calls=${2:-2}
T=/opt/work/bin/value_timing
M=/opt/work/value-L32
for v in "" TSST_VALUE_RESTS=steps ${VALUE_WHOLE:+TSST_VALUE_PREFIX_REUSE=0}; do
  echo "== ${v:-default}"
  env $v $T $M --device cuda:0 --nodes $nodes --calls $calls 2>&1 | tail -$((calls + 1))
done
# Each child's own step 100 words longer: does a run's cost follow its positions?
for v in "" TSST_VALUE_RESTS=steps; do
  echo "== ${v:-default}, --rest-words 100"
  env $v $T $M --device cuda:0 --nodes 8 --calls $calls --rest-words 100 2>&1 | tail -$((calls + 1))
done
# Each child's step 1-60 words, drawn afresh every call, as a search's steps vary. The
# e2e run's rests (~30 positions) took ~47 ms each where value_timing's (equal
# lengths) took 7.5 (bench/RESULTS.md): does a length not seen before cost more?
# Also with arena memory never handed back after a prefix's prefill (TSST_ARENA_SHRINK=0).
for v in "" TSST_VALUE_RESTS=steps TSST_ARENA_SHRINK=0; do
  echo "== ${v:-default}, --rest-words 1-60"
  env $v $T $M --device cuda:0 --nodes $nodes --calls 3 --rest-words 1-60 2>&1 | tail -3
done
# The same with a question's nodes next to each other in the call, as in the search: its
# nodes' texts then share one prefix up to where their chains part, and every rest
# carries its node's chain since then.
echo "== default, --rest-words 1-60 --adjacent 1"
$T $M --device cuda:0 --nodes $nodes --calls 3 --rest-words 1-60 --adjacent 1 2>&1 | tail -3
# Which attention kernel GroupQueryAttention picks (flash, memory-efficient, ...).
echo "== attention kernels"
ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO=1 $T $M --device cuda:0 --nodes 2 --calls 1 2>&1 |
  grep -i "attention" | sed 's/Node=[^ ]*//' | sort | uniq -c | head -20
for v in runs steps; do
  rm -rf /opt/work/prof-$v && mkdir -p /opt/work/prof-$v
  echo "== profile, TSST_VALUE_RESTS=$v"
  TSST_VALUE_RESTS=$v TSST_ORT_PROFILE=/opt/work/prof-$v/value $T $M --device cuda:0 --nodes 8 --calls 2 2>&1 | tail -1
  python3 "$G/profile_top.py" /opt/work/prof-$v/value*.json --top 8 2>&1 | grep -v " 0 runs" | head -40
done
