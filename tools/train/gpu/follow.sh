#!/usr/bin/env bash
# One device call (issue 12): models/demo's warm-up recipe with `--follow-chain 1`: each
# training chain also once with step 2 concluding on another option and the letter that
# option's (loss on the final answer only), so that the answer follows the chain. Alone on
# the card, MIN minutes (4.5), policy only. Carry .gpu-carry/dval/pack-64 (value-demo.sh's).
# INIT=.gpu-carry/dval/ck LR=2e-4 fine-tunes models/demo's policy instead of starting afresh.
# The policy comes back in fp16 as $OUT/F-fp16.tar.gz, the log as $OUT/F.log.
set -eu
export PYTHONUNBUFFERED=1
PY=${PY:-/opt/torch/.venv/bin/python3} MIN=${MIN:-4.5} DEVICE=${DEVICE:-cuda} LR=${LR:-1e-3}
init=(); [ -n "${INIT:-}" ] && init=(--init $INIT --warmup-steps 50)
[ $DEVICE = cpu ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
. "$(dirname "$0")/warm-args.sh"
$PY tools/train/warmup.py train --pack .gpu-carry/dval/pack-64 --out /tmp/F --device $DEVICE "${WARM_ARGS[@]}" \
  --lr $LR "${init[@]}" --train-n 16000 --follow-chain 1 --max-minutes $MIN --value-steps 0 > $OUT/F.log 2>&1 \
  || { tail -20 $OUT/F.log; exit 1; }
$PY tools/train/gpu/half.py /tmp/F $OUT/F-fp16.tar.gz
grep -E 'policy_eval|policy_test|"done"|note' $OUT/F.log | tail -n 8 | cut -c1-200
