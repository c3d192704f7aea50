#!/usr/bin/env bash
# On the device, after export-7b.sh: the decode step of the 32-layer 7B-shaped policy
# with and without CUDA graphs (TSST_CUDA_GRAPHS), each under the floor from the
# bandwidth measured in the same call; the greedy tokens of row 0 must agree.
#   bench/gpu/steps.sh [BATCHES]   (default 1,16,64)
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
batches=${1:-1,16,64}
for graphs in 0 1; do
  echo "== TSST_CUDA_GRAPHS=$graphs"
  TSST_CUDA_GRAPHS=$graphs TIMING=/opt/work/bin/timing bash "$G/decode.sh" /opt/work/policy-L32 \
    --batch "$batches" --json "$OUT/steps-graphs$graphs.json" 2>&1 | grep -E "^(BW|PREFILL|DECODE)|rror"
done
python3 - "$OUT/steps-graphs0.json" "$OUT/steps-graphs1.json" <<'PY'
import json, sys
runs = [[json.loads(l) for l in open(p) if l.strip()] for p in sys.argv[1:]]
steps = [{r["batch"]: r for r in run if r.get("what") == "decode"} for run in runs]
for b in sorted(steps[0]):
    off, on = steps[0][b], steps[1].get(b)
    if not on:
        print(f"batch {b}: no graph run"); continue
    same = off["row0_ids"] == on["row0_ids"]
    print(f"batch {b}: step {off['step_median_ms']:.3f} -> {on['step_median_ms']:.3f} ms "
          f"({off['step_median_ms'] / on['step_median_ms']:.2f}x), floor ratio "
          f"{off['ratio']:.2f} -> {on['ratio']:.2f}, row 0 tokens {'same' if same else 'DIFFER'}")
PY
