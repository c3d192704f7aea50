#!/usr/bin/env bash
# On the device, after the value model's export: value calls as a search makes them (a
# question's nodes side by side, each child's step 1-60 words drawn afresh every call),
# timed by the carried build's value_timing and, where carry.sh's
# TSST_BASELINE_VALUE_TIMING carried one, a baseline build's, in the same call. Each
# prints its last call's phases (prefix, rests' embedding, runs) and ms a text.
#   bench/gpu/value-ab.sh [NODES] [CALLS]   (default 16 nodes, 2 calls)
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
for t in value_timing value_timing-base; do
  [ -x /opt/work/bin/$t ] || continue
  echo "== $t"
  /opt/work/bin/$t /opt/work/value-L32 --device cuda:0 --nodes "${1:-16}" --calls "${2:-2}" \
    --rest-words 1-60 --adjacent 1 2>&1 | tail -n 3
done
