#!/usr/bin/env bash
# Issue 12: does a value model with its own, stronger perception learn to check a stated
# fact against the image? bench/RESULTS.md ("Can the value model check a fact against the
# image?"): the demo's value model, which shares the policy's 64-token perception, stays at
# chance on `step1` contrasts. Here two small LLaVAs are warmed up from scratch on the same
# grounded chains, side by side: A with the default shape (64 px, patch 8: 64 image tokens)
# and B with patch 4 (256 image tokens). Each one's value model is then trained on scene
# contrasts (contrasts.py) and scored on held-out ones (contrast_eval.py).
#   bash tools/train/gpu/perceive.sh        (from the repository root)
# Environment: G work folder (/opt/perceive), PY python with torch, BIN the tsst binary,
# N questions (25000), MIN policy minutes each (4), EPOCHS contrast epochs (3), DEVICE
# (cuda), SHAPE_B (B's small_llava shape overrides). Progress in $G/stages.txt; the
# results in $G/result.json. Not yet run on a GPU: checked end to end on the CPU at toy scale
# (N=300 MIN=0.3 EPOCHS=1 DEVICE=cpu, 11 minutes on a 2-core VM).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
G=${G:-/opt/perceive} PY=${PY:-python3} BIN=${BIN:-tsst}
N=${N:-25000} MIN=${MIN:-4} EPOCHS=${EPOCHS:-3} DEVICE=${DEVICE:-cuda}
SHAPE_B=${SHAPE_B:-'{"patch_size": 4}'}
D=$G/data
mkdir -p $G
mark() { echo "$(date -u +%T) $*" | tee -a $G/stages.txt; }
fail() { mark "FAIL $*"; exit 1; }
mark start
$BIN data synth --out $D --n $N --seed 41 --difficulty easy --splits 0.9,0.05,0.05 > $G/synth.log 2>&1 || fail synth
sed -e "s#^dataset_root: .*#dataset_root: $D#" -e "s#^data_partition: .*#data_partition: '0_999999'#" \
  -e 's#^data_subset: .*#data_subset: train#' config/demo.yaml > $G/warmup.yaml
for s in train val test; do
  $BIN warmup --config $G/warmup.yaml --split $s --out $G/warmup-$s > $G/warmup-$s.log 2>&1 || fail warmup-$s
done
$PY tools/train/warmup.py prepare --data-root $D --warmup $G/warmup-train --warmup-val $G/warmup-val \
  --warmup-test $G/warmup-test --out $G/pack > $G/prepare.log 2>&1 || fail prepare
for s in train test; do
  $PY tools/train/contrasts.py $G/warmup-$s/warmup_value.json --out $G/contrasts-$s.json --seed 1 \
    > $G/contrasts-$s.log 2>&1 || fail contrasts-$s
done
mark data-done
. "$(dirname "$0")/warm-args.sh"
warm() { name=$1; shift
  $PY tools/train/warmup.py train --pack $G/pack --out $G/$name --device $DEVICE "${WARM_ARGS[@]}" \
    --lr 1e-3 --max-minutes $MIN "$@" > $G/$name.log 2>&1
}
warm A & a=$!
warm B --shape "$SHAPE_B" & b=$!
wait $a || fail warm-A
wait $b || fail warm-B
mark warm-done
contrast() { name=$1
  $PY tools/train/train.py --kind value --base $G/$name/value --data $G/contrasts-train.json --image-root $D \
    --out $G/$name-cx --full --lr 1e-4 --head-lr 1e-3 --epochs $EPOCHS --batch 16 --device $DEVICE \
    --rank-weight 1 --save-every 100000 > $G/$name-cx.log 2>&1
}
contrast A & a=$!
contrast B & b=$!
wait $a || fail contrast-A
wait $b || fail contrast-B
mark contrast-done
$PY tools/train/contrast_eval.py $G/contrasts-test.json --image-root $D --model A-warm=$G/A/value \
  --model B-warm=$G/B/value --model A=$G/A-cx/hf --model B=$G/B-cx/hf > $G/result.json 2> $G/eval.log || fail eval
for name in A B; do
  echo "$name: $(grep '"stage": "done"' $G/$name.log | tail -1)" >> $G/stages.txt
done
mark done
cat $G/result.json
