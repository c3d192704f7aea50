#!/usr/bin/env bash
# Three warm-up trainings side by side on one GPU.
# Carry: runs/small/pack (or pack16), runs/easy/pack; the packs are made by warmup.py prepare.
export PYTHONUNBUFFERED=1
P=${PY:-python3}
MIN=${MIN:-4.2}
. "$(dirname "$0")/warm-args.sh"
run() { name=$1; pack=$2; shift 2
  $P tools/train/warmup.py train --pack $pack --out /tmp/$name "${WARM_ARGS[@]}" --max-minutes $MIN \
    "$@" > $OUT/$name.log 2>&1
  $P tools/train/gpu/half.py /tmp/$name $OUT/$name.tar.gz; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
run A runs/small/pack --lr 1e-3 --train-n 16000 &
run B runs/easy/pack --lr 1e-3 &
run C runs/small/pack --lr 2e-3 --warmup-steps 400 --train-n 16000 &
wait
for n in A B C; do echo "== $n"; grep -E '"policy_eval"|"policy_test"|"done"|note' $OUT/$n.log | cut -c1-260 | tail -8; done
