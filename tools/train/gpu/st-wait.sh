#!/usr/bin/env bash
# issue 12 on the GPU: a device call that keeps the machine busy while st-run.sh works, then
# brings back its progress. `bash tools/train/gpu/st-wait.sh MAXSEC [final] [rN]`: waits until
# selftrain is done (or a stage failed), round rN's beam evaluation is done (when rN is
# given; the last calls of the H100 run passed r1) or MAXSEC passed, then copies the stage marks, the
# nvidia-smi record and every log and metric to $OUT; with `final` also the last version's
# exported models and its checkpoints in fp16, and the warm-up's checkpoints in fp16.
G=/opt/gst
ST=${ST:-st}
NAME=${NAME:-gpu}
PY=/opt/torch/.venv/bin/python3
end=$(( $(date +%s) + $1 ))
while [ "$(date +%s)" -lt $end ]; do
  grep -qE "selftrain-done $ST|FAIL" $G/stages.txt 2>/dev/null && break
  [ -n "${3:-}" ] && grep -q "\"$3/eval/beam\"" $G/$ST/selftrain.json 2>/dev/null && break
  sleep 3
done
cp $G/stages.txt $G/smi.csv $OUT/ 2>/dev/null
cd $G
find . -maxdepth 1 -name '*.log' > /tmp/list
find B B2 pack v0 -maxdepth 2 \( -name log.jsonl -o -name summary.json -o -name pack.json -o -name manifest.json \) >> /tmp/list 2>/dev/null
[ -d $ST ] && find $ST \( -name '*.md' -o -name '*.json' -o -name '*.yaml' -o -name '*.log' -o -name '*.svg' -o -name results.jsonl \) \
  -not -name 'dplus.json' -not -name 'dv.json' -not -path '*/onnx/*' -not -path '*/hf/*' -not -path '*/state/*' >> /tmp/list
# The trainer's record of each version (records, steps, seconds) lies under models_root.
find st/models/$NAME -name train.json >> /tmp/list 2>/dev/null
tar czf $OUT/logs.tgz -T /tmp/list 2>/dev/null
if [ "${2:-}" = final ]; then
  cp $G/warmup-B2-fp16.tar.gz $OUT/ 2>/dev/null
  last=$(ls -d st/models/$NAME/v* 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$last" ] && [ -f $last/policy/onnx/manifest.json ] && [ -f $last/value/onnx/manifest.json ]; then
    v=$(basename $last)
    tar czf $OUT/$v-policy-onnx.tar.gz -C $last/policy onnx
    tar czf $OUT/$v-value-onnx.tar.gz -C $last/value onnx
    rm -rf /tmp/vh && mkdir -p /tmp/vh && cp -r $last/policy/hf /tmp/vh/policy && cp -r $last/value/hf /tmp/vh/value && \
      $PY /opt/gst/repo/tools/train/gpu/half.py /tmp/vh $OUT/$v-hf-fp16.tar.gz
  fi
fi
ls -la $OUT
cat $G/stages.txt
for f in B/log.jsonl B2/log.jsonl; do [ -f $f ] && echo "== $f" && grep -E 'policy_eval|policy_test|value_eval|"done"|note' $f | tail -n 4 | cut -c1-300; done
[ -f $ST/report.md ] && cat $ST/report.md
grep -E '^run |^all |FAIL|rror' selftrain.log 2>/dev/null | tail -n 30
tail -n 5 run.log 2>/dev/null; tail -n 3 selftrain.log 2>/dev/null | cut -c1-400
true
