#!/usr/bin/env bash
# On the GPU machine: the card's read bandwidth measured now, then decode timing of
# MODEL_DIR (models/examples/timing.rs) with the floor computed from that measurement.
#   bench/gpu/decode.sh MODEL_DIR [timing options]   (TIMING: the timing binary)
set -euo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
bw=$(python3 "$G/bandwidth.py" | tee /dev/stderr | sed -n 's/.*read_tbs=\([0-9.]*\).*/\1/p')
exec "${TIMING:-.gpu-carry/bin/timing}" "$1" --device "${DEVICE:-cuda:0}" --bandwidth-tbs "$bw" "${@:2}"
