#!/usr/bin/env bash
# On the device, after boot.sh, the parts and export-7b.sh: the value model's calls in
# isolation at the 7B shape (models/examples/value_timing, carried by carry.sh), with
# attention pinned to flash / memory-efficient kernels (TSST_ATTENTION=flash, the
# default) and with ONNX Runtime's own choice (`auto`: cuDNN's fused attention on
# Hopper, one cuDNN graph built per new shape). Each case once with every rest of a call
# one length (call 1 repeats call 0's lengths), once with each child's step 1-60 words
# drawn afresh every call, as a search's are. Why a child's rest took 47 ms inside the
# search and 7.5 ms here (bench/RESULTS.md, "The value model alone and inside the
# search"). Then the policy's decode step at batch 16 and 64 under both settings.
#   bench/gpu/value.sh [NODES]
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
nodes=${1:-32}
T=/opt/work/bin/value_timing
M=/opt/work/value-L32
for a in flash auto; do
  echo "== TSST_ATTENTION=$a, one length"
  TSST_ATTENTION=$a $T $M --device cuda:0 --nodes $nodes --calls 2 2>&1 | tail -3
  echo "== TSST_ATTENTION=$a, --rest-words 1-60"
  TSST_ATTENTION=$a $T $M --device cuda:0 --nodes $nodes --calls 3 --rest-words 1-60 2>&1 | tail -3
done
# A question's nodes next to each other in the call, as in the search: its nodes' texts
# then share one prefix up to where their chains part.
echo "== TSST_ATTENTION=flash, --rest-words 1-60 --adjacent 1"
TSST_ATTENTION=flash $T $M --device cuda:0 --nodes $nodes --calls 3 --rest-words 1-60 --adjacent 1 2>&1 | tail -3
for a in flash auto; do
  echo "== decode step, TSST_ATTENTION=$a"
  TSST_ATTENTION=$a TIMING=/opt/work/bin/timing bash "$G/decode.sh" /opt/work/policy-L32 --batch 16,64 2>&1 | tail -8
done
