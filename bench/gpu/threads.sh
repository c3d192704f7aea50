#!/usr/bin/env bash
# On the device, after boot.sh and the parts: ONNX Runtime's intra-op thread pools in
# CUDA sessions, one thread without spinning (TSST_ORT_INTRA_THREADS=1) against ONNX
# Runtime's default (a spinning pool of every core; 0), end to end with tiny fp16
# models (tiny-random LLaVA exported for CUDA, the policy's logits biased as in
# export-7b.sh), so that host overhead is all there is to see: 40 questions at the
# reference settings, `--batch 64`, LIMIT_S each (alternating, twice).
#   bench/gpu/threads.sh [LIMIT_S]
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
R=$(pwd)
TSST=${TSST:-/opt/work/bin/tsst}
B=${BUILDER:-/opt/work/builder}
limit=${1:-40}
export PYTHONPATH=/opt/ortgpu/site:$B/site
for kind in policy value; do
  [ -f /opt/work/tiny-$kind/manifest.json ] && continue
  bias=()
  [ $kind = policy ] && bias=(--text-only --token-rate ".=0.04")
  python3 tools/export/export_llava.py --tiny-random --kind $kind --dtype fp16 --execution-provider cuda \
    --no-goldens "${bias[@]}" --builder $B/models/builder.py --out /opt/work/tiny-$kind > $OUT/tiny-export-$kind.log 2>&1 ||
    { tail -20 $OUT/tiny-export-$kind.log; exit 1; }
done
W=/opt/work/threads
rm -rf $W && mkdir -p $W && cd $W
$TSST data synth --out synth --n 80 --seed 3 > /dev/null
bash "$G/ref-config.sh" 40 /opt/work/tiny-policy /opt/work/tiny-value > ref.yaml
for rep in 1 2; do
  for t in 0 1; do
    log=$OUT/threads-$t-$rep.log
    start=$(date +%s.%N)
    TSST_ORT_INTRA_THREADS=$t RUST_LOG=info,tsst_models=debug timeout $limit $TSST run --config ref.yaml \
      --device cuda:0 --batch 64 --out runs-$t-$rep --quiet > /dev/null 2> $log
    rc=$?
    end=$(date +%s.%N)
    sed 's/\x1b\[[0-9;]*m//g' $log | grep "batch decoded" | awk -v t=$t -v rc=$rc -v wall=$(awk "BEGIN{print $end-$start}") '
      { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        n++; req += v["requests"]; steps += v["steps"]; ms += v["ms"] }
      END { printf "intra_threads=%s rc=%s wall=%.1f s policy_batches=%d expansions=%d steps=%d policy_busy=%.1f s expansions_per_s=%.1f\n", t, rc, wall, n, req, steps, ms / 1000, req / wall }'
    grep -c "question failed" $log | sed 's/^/  questions_failed=/'
  done
done
cd "$R"
