#!/usr/bin/env bash
# On the GPU machine: one embedded `tsst run` on CUDA at the reference search settings
# (num_beams 5, branch 5, n_consistency 7, max_length 1024, steps up to 256 tokens)
# over N synthetic questions with the models export-7b.sh wrote, GPU memory and
# utilisation sampled every 500 ms. Prints wall time, peak memory, question statuses
# and how often a batch was split (budget) or halved (out of memory).
#   bench/gpu/e2e.sh BATCH N LIMIT_S [VAR=VALUE...]   (TSST: the binary, TAG: a suffix)
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
TSST=$(realpath "${TSST:-.gpu-carry/bin/tsst}")
batch=$1 n=$2 limit=$3; shift 3
for kv in "$@"; do export "$kv"; done
W=/opt/work/run-b$batch-n$n
rm -rf $W && mkdir -p $W && cd $W
$TSST data synth --out synth --n $((n * 2)) --seed 3 > /dev/null
bash "$G/ref-config.sh" $n /opt/work/policy-L32 /opt/work/value-L32 > ref.yaml
tag=b$batch-n$n${TAG:-}
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 500 > $OUT/smi-$tag.csv &
smi=$!
start=$(date +%s.%N)
# At the limit the run gets SIGTERM and writes what finished (the rest `pending`).
RUST_LOG=info,tsst_models=debug timeout -k 120 $limit $TSST run --config ref.yaml --device cuda:0 --batch $batch --out runs --quiet > $OUT/run-$tag.out 2> $OUT/run-$tag.log
rc=$?
end=$(date +%s.%N)
kill $smi
echo "rc=$rc wall=$(awk "BEGIN{printf \"%.1f\", $end-$start}") s"
peak=$(awk -F', ' '{gsub(/ MiB/,"",$2); if ($2+0>m) m=$2+0} END {print m}' $OUT/smi-$tag.csv)
util=$(awk -F', ' '{gsub(/ %/,"",$3); s+=$3; n++} END {printf "%.0f", s/n}' $OUT/smi-$tag.csv)
echo "peak_mib=$peak mean_util=$util%"
f=$(ls runs/*/results.jsonl 2>/dev/null | head -1)
if [ -n "$f" ]; then
  echo "results: $(wc -l < $f) lines; status counts:"; python3 -c "
import json,collections,sys
c=collections.Counter(); r=collections.Counter()
for l in open('$f'):
    d=json.loads(l); c[d.get('status')]+=1
    if d.get('status')!='done': r[str(d.get('reason') or d.get('error'))[:160]]+=1
print(dict(c)); [print(' ',k,v) for k,v in r.items()]"
  cp runs/*/metrics.json $OUT/metrics-$tag.json 2>/dev/null
fi
grep -c "question failed" $OUT/run-$tag.log | sed "s/^/questions_failed_in_log=/"
grep -c "backend failed" $OUT/run-$tag.log | sed "s/^/backend_failures=/"
# Policy batches: admissions into the row slots and decode steps per batch, prompt
# positions prefilled per expanded node, question stems (tsst_models=debug; the
# cumulative fields are read off the last line).
grep "batch decoded" $OUT/run-$tag.log | sed 's/\x1b\[[0-9;]*m//g' | awk '
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    n++; req += v["requests"]; adm += v["admissions"]; steps += v["steps"]; ms += v["ms"]; if (v["most_rows"] > rows) rows = v["most_rows"]
    si += v["step_inputs_ms"] * v["steps"]; sb += v["step_bind_ms"] * v["steps"]; sr += v["step_run_ms"] * v["steps"]; ss += v["step_sample_ms"] * v["steps"]
    am += v["admit_ms"]; sm += v["steps_ms"]; sc += v["prefixes_copied"] }
  END { if (n) printf "policy_batches=%d requests=%d admissions=%d steps=%d (%.0f a batch) slots<=%d policy_busy_s=%.1f prefilled_per_expansion=%.0f stems=%s stem_hits=%s stem_misses=%s prefixes_copied=%d\n", n, req, adm, steps, steps / n, rows, ms / 1000, (req ? v["prefilled"] / req : 0), v["stems"], v["stem_hits"], v["stem_misses"], sc
        if (steps) printf "policy_step_ms (host side, a step): inputs=%.3f bind=%.3f run=%.3f sample=%.3f\n", si / steps, sb / steps, sr / steps, ss / steps
        printf "policy_split_s: admitting (prefills, gathers)=%.1f steps=%.1f\n", am / 1000, sm / 1000 }'
# Value batches: texts, those scored whole (not from a shared prefix), time.
grep "texts scored" $OUT/run-$tag.log | sed 's/\x1b\[[0-9;]*m//g' | awk '
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    n++; t += v["texts"]; w += v["whole"]; ms += v["ms"] }
    { pr += v["prompts_ms"]; px += v["prefix_ms"]; re += v["rests_ms"]; ru += v["runs_ms"]; wh += v["whole_ms"]; hd += v["head_ms"] }
  END { if (n) printf "value_batches=%d texts=%d whole=%d value_busy_s=%.1f prefilled_per_text=%.0f stems=%s stem_hits=%s stem_misses=%s\nvalue_phases_s: prompts=%.1f prefix=%.1f rests=%.1f runs=%.1f whole=%.1f head=%.1f\n", n, t, w, ms / 1000, (t ? v["prefilled"] / t : 0), v["stems"], v["stem_hits"], v["stem_misses"], pr / 1000, px / 1000, re / 1000, ru / 1000, wh / 1000, hd / 1000 }'
# Expansions (policy requests) after the first batch, over the time from its end to the
# last batch's end, and the same over only the first WINDOW seconds (default 120) so that
# runs of different limits compare over the same stretch; then how many questions had
# finished (the quiet run's progress line).
grep "batch decoded" $OUT/run-$tag.log | sed 's/\x1b\[[0-9;]*m//g' | awk -v w=${WINDOW:-120} '
  { split($1, a, "T"); split(a[2], b, ":"); t = b[1] * 3600 + b[2] * 60 + b[3]
    for (i = 1; i <= NF; i++) if ($i ~ /^requests=/) { split($i, r, "="); q = r[2] }
    if (NR == 1) t0 = t; else { n += q; last = t; if (t - t0 <= w) { nw += q; lastw = t } } }
  END { if (last > t0) printf "expansions_per_s=%.2f (%d in %.1f s after the first batch)\n", n / (last - t0), n, last - t0
        if (lastw > t0) printf "expansions_per_s_first_%ds=%.2f (%d in %.1f s)\n", w, nw / (lastw - t0), nw, lastw - t0 }'
grep "questions finished" $OUT/run-$tag.log | sed 's/\x1b\[[0-9;]*m//g' | tail -1 | grep -o "done=.*"
grep -c "out of device memory" $OUT/run-$tag.log | sed 's/^/oom_retries=/'
grep -m2 "cache budget" $OUT/run-$tag.log
grep "allocating the row slots" $OUT/run-$tag.log | sed 's/\x1b\[[0-9;]*m//g' | tail -3
tail -5 $OUT/run-$tag.out
