#!/usr/bin/env bash
# Continue two warm-up trainings from their checkpoints, side by side on one GPU.
# Carry: the packs and runs/gpu/init{A,B}/policy (the first run's checkpoints, untarred there).
export PYTHONUNBUFFERED=1
P=${PY:-python3}
MIN=${MIN:-3}
run() { name=$1; pack=$2; shift 2
  $P tools/train/warmup.py train --pack $pack --out /tmp/$name --seed 1 --steps 40000 --batch 128 \
    --max-minutes $MIN --eval-every 200 --eval-n 250 --eval-batch 256 --test-n 500 \
    --max-new 128 --log-every 200 --value-steps 2000 --value-max-minutes 0.8 --value-eval-every 500 \
    --value-eval-n 1500 --value-n 60000 "$@" > $OUT/$name.log 2>&1
  $P tools/train/gpu/half.py /tmp/$name $OUT/$name.tar.gz; }
run B2 runs/easy/pack --init runs/gpu/initB/policy --lr 5e-4 --warmup-steps 100 &
run A2 runs/small/pack16 --init runs/gpu/initA/policy --lr 1e-3 --warmup-steps 100 --train-n 16000 &
wait
for n in B2 A2; do echo "== $n"; grep -E '"policy_eval"|"policy_test"|"value_eval"|"done"|note' $OUT/$n.log | cut -c1-200 | tail -12; done
