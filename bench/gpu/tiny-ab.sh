#!/usr/bin/env bash
# On the device, after boot.sh and the parts: two settings of one environment variable
# end to end with tiny fp16 models (tiny-random LLaVA exported for CUDA, the policy's
# logits biased as in export-7b.sh), so that host and synchronisation overhead is all
# there is to see: 40 questions at the reference settings, `--batch 64`, LIMIT_S each,
# the two settings alternating, twice. Prints expansions, and the policy's and the
# value model's busy time (value: milliseconds a text).
#   bench/gpu/tiny-ab.sh LIMIT_S VAR A B      e.g. tiny-ab.sh 30 TSST_ARENA_SHRINK 1 0
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
R=$(pwd)
TSST=${TSST:-/opt/work/bin/tsst}
B=${BUILDER:-/opt/work/builder}
limit=$1 var=$2 a=$3 b=$4
export PYTHONPATH=/opt/ortgpu/site:$B/site
for kind in policy value; do
  [ -f /opt/work/tiny-$kind/manifest.json ] && continue
  bias=()
  [ $kind = policy ] && bias=(--text-only --token-rate ".=0.04")
  python3 tools/export/export_llava.py --tiny-random --kind $kind --dtype fp16 --execution-provider cuda \
    --no-goldens "${bias[@]}" --builder $B/models/builder.py --out /opt/work/tiny-$kind > $OUT/tiny-export-$kind.log 2>&1 ||
    { tail -20 $OUT/tiny-export-$kind.log; exit 1; }
done
W=/opt/work/tiny-ab
rm -rf $W && mkdir -p $W && cd $W
$TSST data synth --out synth --n 80 --seed 3 > /dev/null
bash "$G/ref-config.sh" 40 /opt/work/tiny-policy /opt/work/tiny-value > ref.yaml
for rep in 1 2; do
  for v in $a $b; do
    log=$OUT/ab-$var-$v-$rep.log
    start=$(date +%s.%N)
    env $var=$v RUST_LOG=info,tsst_models=debug timeout $limit $TSST run --config ref.yaml \
      --device cuda:0 --batch 64 --out runs-$v-$rep --quiet > /dev/null 2> $log
    rc=$?
    end=$(date +%s.%N)
    sed 's/\x1b\[[0-9;]*m//g' $log | awk -v s="$var=$v" -v rc=$rc -v wall=$(awk "BEGIN{print $end-$start}") '
      /batch decoded|texts scored/ { delete v; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
      /batch decoded/ { n++; req += v["requests"]; pms += v["ms"] }
      /texts scored/ { texts += v["texts"]; vms += v["ms"] }
      END { printf "%s rc=%s wall=%.1f s expansions=%d policy_busy=%.1f s value_busy=%.1f s value_ms_a_text=%.1f\n", s, rc, wall, req, pms / 1000, vms / 1000, (texts ? vms / texts : 0) }'
    grep -c "question failed" $log | sed 's/^/  questions_failed=/'
  done
done
cd "$R"
