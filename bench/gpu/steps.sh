#!/usr/bin/env bash
# On the device, after export-7b.sh: the decode step of the 32-layer 7B-shaped policy
# with and without CUDA graphs (TSST_CUDA_GRAPHS), each under the floor from the
# bandwidth measured in the same call; the greedy tokens of row 0 must agree. Where a
# baseline timing tool was carried (carry.sh's TSST_BASELINE_TIMING: /opt/work/bin/timing-base),
# its graph step is timed too, in the same call.
#   bench/gpu/steps.sh [BATCHES]   (default 1,16,64, or STEPS_BATCHES in the environment,
#   as session.sh's `steps` passes it on)
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
batches=${1:-${STEPS_BATCHES:-1,16,64}}
# The search samples at temperature 1: `sampled` times that sampler too (its tokens
# differ from the greedy runs', so only its step and host-side phases are compared).
runs=("graphs0 0 timing" "graphs1 1 timing" "sampled 1 timing --temperature 1")
[ -x /opt/work/bin/timing-base ] && runs+=("base1 1 timing-base")
for run in "${runs[@]}"; do
  set -- $run
  echo "== $1 (TSST_CUDA_GRAPHS=$2, $3 ${*:4})"
  TSST_CUDA_GRAPHS=$2 TIMING=/opt/work/bin/$3 bash "$G/decode.sh" /opt/work/policy-L32 \
    --batch "$batches" --json "$OUT/steps-$1.json" "${@:4}" 2>&1 | grep -E "^(BW|PREFILL|DECODE)|rror"
done
python3 - "$OUT"/steps-*.json <<'PY'
import json, os, sys
runs = {os.path.basename(p)[6:-5]: [json.loads(l) for l in open(p) if l.strip()] for p in sys.argv[1:]}
steps = {k: {r["batch"]: r for r in v if r.get("what") == "decode"} for k, v in runs.items()}
off = steps["graphs0"]
for other in [k for k in steps if k != "graphs0"]:
    for b in sorted(off):
        a, o = off[b], steps[other].get(b)
        if not o:
            print(f"{other} batch {b}: no run"); continue
        same = a["row0_ids"] == o["row0_ids"]
        tokens = "sampled" if other == "sampled" else ("same" if same else "DIFFER")
        print(f"{other} batch {b}: step {a['step_median_ms']:.3f} -> {o['step_median_ms']:.3f} ms "
              f"({a['step_median_ms'] / o['step_median_ms']:.2f}x of graphs0), floor ratio "
              f"{a['ratio']:.2f} -> {o['ratio']:.2f}, host ms {o.get('step_host_ms')}, row 0 tokens {tokens}")
PY
