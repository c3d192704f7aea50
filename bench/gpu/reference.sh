#!/usr/bin/env bash
# On the GPU machine, after export-7b.sh: the reference search loop in PyTorch
# (reference_loop.py) over the first N synthetic questions e2e.sh searched (same seed,
# same split), cut at LIMIT_S seconds of search, GPU memory and utilisation sampled
# every 500 ms. Prints the loop's JSON line (questions per hour and the work done).
#   bench/gpu/reference.sh N LIMIT_S
set -uo pipefail
G=$(cd "$(dirname "$0")" && pwd)
. "$G/env.sh"
n=$1 limit=$2
R=$(pwd)
W=/opt/work/reference-n$n
rm -rf $W && mkdir -p $W && cd $W
$(realpath "${TSST:-$R/.gpu-carry/bin/tsst}") data synth --out synth --n $((n * 2)) --seed 3 > /dev/null
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 500 > $OUT/smi-reference.csv &
smi=$!
PYTHONPATH=/opt/ortgpu/site python3 $G/reference_loop.py --policy /opt/work/policy-L32 --value /opt/work/value-L32 \
  --export-args "--random-shape llava-1.5-7b --init-device cuda --dtype fp16" \
  --dataset-root synth --n $n --time-limit $limit --device cuda > $OUT/reference.json 2> $OUT/reference.log
echo "rc=$?"
kill $smi
util=$(awk -F', ' '{gsub(/ %/,"",$3); s+=$3; n++} END {printf "%.0f", s/n}' $OUT/smi-reference.csv)
peak=$(awk -F', ' '{gsub(/ MiB/,"",$2); if ($2>m) m=$2} END {print m}' $OUT/smi-reference.csv)
echo "peak_mib=$peak mean_util=$util%"
cat $OUT/reference.json; tail -3 $OUT/reference.log
