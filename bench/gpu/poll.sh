#!/usr/bin/env bash
# On the device while session.sh runs: its stages, the newest log lines, and a copy of
# its results under $OUT.
cat /opt/work/stages.txt 2>/dev/null
tail -n 3 /opt/work/session.log 2>/dev/null
for f in /opt/work/out/run-*.log; do [ -f "$f" ] && { echo "== $f"; sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -E 'WARN|ERROR|batch decoded|row slots' | tail -n 4 | cut -c1-300; }; done
tail -n 2 /opt/work/out/smi-*.csv 2>/dev/null
cp -r /opt/work/out/. "$OUT"/ 2>/dev/null; true
