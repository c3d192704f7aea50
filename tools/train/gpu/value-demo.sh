#!/usr/bin/env bash
# One device call (issue 12): a value model on models/demo's policy backbone, trained on the
# grounded prefixes plus contrasts (each question's chains with one fact or the final letter
# made false, value 0) with the within-question ranking term, alone on the card.
# Carry .gpu-carry/dval with ck/ (`tools/train/from_onnx.py models/demo/policy --out ...`) and
# pack-64/ (`warmup.py prepare --contrasts`, the seed-11 data as in perceive.sh). VMIN value
# minutes (7.5). The checkpoints come back in fp16 as $OUT/D-fp16.tar.gz.
set -eu
export PYTHONUNBUFFERED=1
PY=${PY:-/opt/torch/.venv/bin/python3} VMIN=${VMIN:-7.5} DEVICE=${DEVICE:-cuda} C=.gpu-carry/dval
[ $DEVICE = cpu ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
. "$(dirname "$0")/warm-args.sh"
$PY tools/train/warmup.py train --pack $C/pack-64 --init $C/ck --out /tmp/D --device $DEVICE "${WARM_ARGS[@]}" \
  --steps 0 --test-n 0 --train-n 16000 --value-steps 100000 --value-max-minutes $VMIN --value-n 0 \
  --value-rank-weight 1 > $OUT/D.log 2>&1 || { tail -20 $OUT/D.log; exit 1; }
rm -rf /tmp/D/policy
$PY tools/train/gpu/half.py /tmp/D $OUT/D-fp16.tar.gz
grep -E 'value_eval|"done"|note' $OUT/D.log | tail -n 6 | cut -c1-300
