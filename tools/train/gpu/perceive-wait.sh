#!/usr/bin/env bash
# A device call that waits for perceive.sh (`bash tools/train/gpu/perceive-wait.sh MAXSEC`):
# until it is done, a stage failed or MAXSEC passed; then brings back to $OUT the stage marks,
# the logs, the result and, once done, both value models' checkpoints in fp16.
G=${G:-/opt/perceive} PY=${PY:-/opt/torch/.venv/bin/python3}
end=$(( $(date +%s) + $1 ))
while [ "$(date +%s)" -lt $end ]; do
  grep -qE ' done$|FAIL' $G/stages.txt 2>/dev/null && break
  sleep 3
done
R=$(pwd)
cd $G
cp stages.txt $OUT/ 2>/dev/null
ls *.log A/log.jsonl B/log.jsonl pack-A/pack.json pack-B/pack.json result.json 2>/dev/null > /tmp/list
tar czf $OUT/logs.tgz -T /tmp/list
if grep -q ' done$' stages.txt; then
  for name in A B; do
    rm -rf /tmp/h$name && mkdir -p /tmp/h$name && cp -r $name/value $name/log.jsonl $name/summary.json /tmp/h$name/ &&
      $PY $R/tools/train/gpu/half.py /tmp/h$name $OUT/$name-fp16.tar.gz
  done
fi
cat stages.txt; tail -n 3 run.log
for name in A B; do [ -f $name/log.jsonl ] && echo "== $name" &&
  grep -E 'policy_eval|policy_test|value_eval|"done"|note' $name/log.jsonl | tail -n 4 | cut -c1-400; done
cat result.json 2>/dev/null
true
