#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), seeded from the project's own
# files (configs, dataset fixtures, encoded tasks), and prints one line per target.
# Needs nightly and cargo-fuzz: rustup toolchain install nightly; cargo install cargo-fuzz
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
root=..
mkdir -p corpus/decode_envelope corpus/parse_config corpus/load_dataset
cp "$root"/config/eval/*.yaml "$root"/config/*.yaml corpus/parse_config/
printf '%s' '{"schema":1,"id":"expand/r/q/0/1","body":{"kind":"expand","run":"r","question":"q","round":0,"node":1}}' \
  > corpus/decode_envelope/expand.json
printf '%s' '{"schema":1,"id":"verify/r/q","body":{"kind":"verify","run":"r","question":"q"}}' \
  > corpus/decode_envelope/verify.json
{ printf '\x00'; cat "$root"/tests/fixtures/aokvqa/aokvqa_v1p0_val.json; } > corpus/load_dataset/aokvqa.bin
{ printf '\x01'; cat "$root"/tests/fixtures/scienceqa/problems.json; printf '\x00'; cat "$root"/tests/fixtures/scienceqa/pid_splits.json; } > corpus/load_dataset/scienceqa.bin
{ printf '\x02'; cat "$root"/tests/fixtures/vcr/val.jsonl; } > corpus/load_dataset/vcr.bin
status=0
for target in decode_envelope parse_config load_dataset; do
  log=$(mktemp)
  if cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1; then
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]*' || true)
    echo "$target: no crash in ${seconds}s (${runs:-?} runs)"
  else
    echo "$target: FAILED, see $log and fuzz/artifacts/$target"; status=1
  fi
done
exit $status
