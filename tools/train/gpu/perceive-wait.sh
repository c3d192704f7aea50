#!/usr/bin/env bash
# A device call that waits for perceive.sh (`bash tools/train/gpu/perceive-wait.sh MAXSEC`):
# until it is done, a stage failed or MAXSEC passed. What is ready goes to $OUT as soon as it
# is (a call cut short by the device's time limit still brings it back): the stage marks and
# logs every 20 s, and each value model's checkpoint in fp16 once its warmup.py run is done.
G=${G:-/opt/perceive} PY=${PY:-/opt/torch/.venv/bin/python3}
R=$(pwd)
end=$(( $(date +%s) + $1 ))
# The variants perceive.sh started (whatever its NAMES): the folders its warmup.py runs log to.
variants() { for f in $G/*/log.jsonl; do [ -f "$f" ] && basename "$(dirname "$f")"; done; }
collect() {
  (cd $G && cp stages.txt $OUT/ 2>/dev/null
   ls *.log */log.jsonl pack-*/pack.json result.json 2>/dev/null > /tmp/list
   tar czf $OUT/logs.tgz -T /tmp/list)
  for name in $(variants); do
    if [ -f $G/$name/summary.json ] && [ ! -f $OUT/$name-fp16.tar.gz ]; then
      rm -rf /tmp/h$name && mkdir -p /tmp/h$name && cp -r $G/$name/value $G/$name/policy $G/$name/log.jsonl $G/$name/summary.json /tmp/h$name/ &&
        $PY $R/tools/train/gpu/half.py /tmp/h$name $OUT/$name-fp16.tar.gz.part && mv $OUT/$name-fp16.tar.gz.part $OUT/$name-fp16.tar.gz
    fi
  done
}
last=0
while [ "$(date +%s)" -lt $end ]; do
  grep -qE ' done$|FAIL' $G/stages.txt 2>/dev/null && break
  [ $(( $(date +%s) - last )) -ge 20 ] && { collect; last=$(date +%s); }
  sleep 3
done
collect
cat $G/stages.txt; tail -n 3 $G/run.log
for name in $(variants); do echo "== $name" &&
  grep -E 'policy_eval|policy_test|value_eval|"done"|note' $G/$name/log.jsonl | tail -n 4 | cut -c1-400; done
cat $G/result.json 2>/dev/null
true
