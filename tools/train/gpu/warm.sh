#!/usr/bin/env bash
# Three warm-up trainings side by side on one GPU.
# Carry: runs/small/pack (or pack16), runs/easy/pack; the packs are made by warmup.py prepare.
export PYTHONUNBUFFERED=1
P=${PY:-python3}
MIN=${MIN:-4.2}
run() { name=$1; pack=$2; shift 2
  $P tools/train/warmup.py train --pack $pack --out /tmp/$name --seed 0 --steps 40000 --batch 128 \
    --warmup-steps 200 --max-minutes $MIN --eval-every 250 --eval-n 250 --eval-batch 256 --test-n 500 \
    --max-new 128 --log-every 200 --value-steps 2000 --value-max-minutes 0.7 --value-eval-every 500 \
    --value-eval-n 1500 --value-n 60000 "$@" > $OUT/$name.log 2>&1
  $P tools/train/gpu/half.py /tmp/$name $OUT/$name.tar.gz; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
run A runs/small/pack --lr 1e-3 --train-n 16000 &
run B runs/easy/pack --lr 1e-3 &
run C runs/small/pack --lr 2e-3 --warmup-steps 400 --train-n 16000 &
wait
for n in A B C; do echo "== $n"; grep -E '"policy_eval"|"policy_test"|"done"|note' $OUT/$n.log | cut -c1-260 | tail -8; done
