#!/usr/bin/env bash
# Issue 12: a value model whose perception is not capped at the policy's. The policy is kept
# at 0.6-0.85 greedy accuracy on purpose (headroom for search), and a value model built from
# that policy inherits its perception: it cannot catch the policy's own perception mistakes
# (bench/RESULTS.md, "Can the value model check a fact against the image?": chance on `step1`).
# Here the value model's backbone is warmed up on the same grounded chains until it is as
# accurate as it gets (`--band 0 1`; with a shuffled-options copy of each chain, so that the
# answer's letter is looked up), then its value head is trained on the grounded prefixes
# plus contrasts (each question's chains with one fact or the final letter made false,
# value 0) with a within-question ranking term. Shapes side by side: A the default
# (64 px, patch 8: 64 image tokens); B the same tower on 128 px images (256 image tokens),
# in case resolution limits perception (the 336 px scenes' shapes are 8-10 px across at
# 64 px, distinct by eye); C a wider, deeper decoder (320 x 6 layers) on 64 px, since most
# of the demo policy's mistakes are the answer's letter, which is a lookup in the text;
# P the default shape with its policy kept inside the band (0.6-0.85, as models/demo's),
# a candidate demo policy that saw the options shuffled. The data is the demo's (seed 11,
# the first 16,000 training questions, as models/demo's warm-up), so a model from here
# pairs with models/demo/policy on the same test split. Run once with A C P (2026-12-07,
# bench/RESULTS.md, "Letters that do not follow the chain").
#   bash tools/train/gpu/perceive.sh        (from the repository root)
# Environment: G work folder (/opt/perceive), PY python with torch, BIN the tsst binary,
# MIN policy minutes each (6), VMIN value minutes each (2.5), DEVICE (cuda), IMG_B (B's image
# size, 128), NAMES the variants to train (A C P), N questions (25000). Progress in $G/stages.txt; the
# held-out contrast check in $G/result.json; each model's log in $G/<name>/log.jsonl.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
G=${G:-/opt/perceive} PY=${PY:-python3} BIN=${BIN:-tsst}
N=${N:-25000} MIN=${MIN:-6} VMIN=${VMIN:-2.5} DEVICE=${DEVICE:-cuda} IMG_B=${IMG_B:-128}
NAMES=${NAMES:-A C P}
D=$G/data
mkdir -p $G
mark() { echo "$(date -u +%T) $*" | tee -a $G/stages.txt; }
fail() { mark "FAIL $*"; exit 1; }
mark start
$BIN data synth --out $D --n $N --seed 11 --difficulty easy --splits 0.96,0.02,0.02 > $G/synth.log 2>&1 || fail synth
sed -e "s#^dataset_root: .*#dataset_root: $D#" -e "s#^data_partition: .*#data_partition: '0_999999'#" \
  -e 's#^data_subset: .*#data_subset: train#' config/demo.yaml > $G/warmup.yaml
pids=()
for s in train val test; do
  $BIN warmup --config $G/warmup.yaml --split $s --out $G/warmup-$s > $G/warmup-$s.log 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
for s in train val test; do [ -f $G/warmup-$s/warmup_value.json ] || fail warmup-$s; done
# One pack per image size; a pack already in $G (carried) is used as it is.
size() { [ $1 = B ] && echo $IMG_B || echo 64; }
shape() { case $1 in
  B) echo "{\"image_size\": $IMG_B}" ;;
  C) echo '{"hidden": 320, "layers": 6, "heads": 10, "kv_heads": 5, "intermediate": 896}' ;;
  *) echo '{}' ;; esac; }
prepare() { px=$1
  [ -f $G/pack-$px/pack.json ] && return 0
  $PY tools/train/warmup.py prepare --data-root $D --warmup $G/warmup-train --warmup-val $G/warmup-val \
    --warmup-test $G/warmup-test --contrasts --image-size $px --out $G/pack-$px > $G/prepare-$px.log 2>&1
}
pids=()
for px in $(for name in $NAMES; do size $name; done | sort -u); do prepare $px & pids+=($!); done
for p in "${pids[@]}"; do wait $p || fail prepare; done
$PY tools/train/contrasts.py $G/warmup-test/warmup_value.json --out $G/contrasts-test.json --seed 1 \
  > $G/contrasts-test.log 2>&1 || fail contrasts-test
mark data-done
. "$(dirname "$0")/warm-args.sh"
warm() { name=$1; shift
  $PY tools/train/warmup.py train --pack $G/pack-$(size $name) --out $G/$name --device $DEVICE "${WARM_ARGS[@]}" \
    --lr 1e-3 --max-minutes $MIN --band 0 1 --prefer-max 1 --train-n 16000 --shuffle-options 1 \
    --value-steps 100000 --value-max-minutes $VMIN --value-n 0 --value-rank-weight 1 "$@" > $G/$name.log 2>&1
}
pids=()
band() { [ $1 = P ] && echo "--band 0.6 0.85 --prefer-max 0.8"; }
for name in $NAMES; do warm $name --shape "$(shape $name)" $(band $name) & pids+=($!); done
for p in "${pids[@]}"; do wait $p || fail warm; done
mark warm-done
models=(--model demo=models/demo/value)
for name in $NAMES; do models+=(--model $name=$G/$name/value); done
$PY tools/train/contrast_eval.py $G/contrasts-test.json --image-root $D "${models[@]}" > $G/result.json 2> $G/eval.log \
  || fail eval
for name in $NAMES; do
  echo "$name: $(grep '"stage": "done"' $G/$name/log.jsonl | tail -1)" >> $G/stages.txt
done
mark done
cat $G/result.json
