#!/usr/bin/env bash
# On the device, after boot.sh and the last part.sh: one benchmarking session in the
# background (its own session, so it runs on between device calls), from a copy of the
# repository at /opt/work/repo: bandwidth and the 7B-shaped export, the reference loop
# (reference.sh), then tsst end to end (e2e.sh), on the same card. The machine goes back
# after 30 s without a call: keep one in flight (a sleep, then poll.sh) while it runs. Progress in
# /opt/work/stages.txt; results in /opt/work/out, which poll.sh copies back.
#   bash bench/gpu/session.sh [N E2E_LIMIT_S REFERENCE_LIMIT_S [VARIANT...]]
# Variants of the tsst run, one e2e.sh each (default: new; `stems:150` runs one for 150 s
# instead of E2E_LIMIT_S): `new` (the carried build),
# `base` (the baseline build, carry.sh's TSST_BASELINE_BIN), `noreuse` (the carried
# build scoring every text whole, TSST_VALUE_PREFIX_REUSE=0), `stems` (the carried build
# with question stems, TSST_STEM_CACHE_MB=${STEM_MB:-8916}: a third of an H100's policy budget,
# and without CUDA graphs, which stems cannot share the arena with),
# `noshrink` (the carried build never handing arena memory back: TSST_ARENA_SHRINK=0),
# `auto` (the carried build with ONNX Runtime's own attention kernels: TSST_ATTENTION=auto),
# `graphs` (TSST_CUDA_GRAPHS=1, the default since 2026-12-07), `nographs` (the policy's decode
# steps without CUDA graphs: TSST_CUDA_GRAPHS=0), `slotstems` (prefix reuse in the
# policy's row slots, the default since 2026-12-07: TSST_SLOT_REUSE=1), `noreuse-slots`
# (without it: TSST_SLOT_REUSE=0).
# `value` is no e2e run but value.sh (the value model's calls in isolation and the
# decode step, under both attention settings), run where it stands in the list; so are
# `noref` (no reference run at all), `generation` (generation.sh: the decode step
# against PyTorch's generate), `steps` (steps.sh: the decode step with and without CUDA
# graphs), `tree`
# (tree.sh: a node's children scored in one run), `kernels` (kernels.sh: the step kernel by
# kernel against its floor), `value-ab` (value-ab.sh: value calls against a baseline
# build's) and `reference`, which otherwise runs
# before the variants.
set -eu
n=${1:-40} e2e_limit=${2:-600} ref_limit=${3:-240}
shift $(( $# < 3 ? $# : 3 ))
variants=${*:-new}
rm -rf /opt/work/repo /opt/work/out && mkdir -p /opt/work/repo /opt/work/out
tar --exclude=./.gpu-carry --exclude=./target --exclude=./.ort -cf - . | tar -C /opt/work/repo -xf -
cd /opt/work/repo
cat > /opt/work/session-run.sh <<RUN
set -u
export OUT=/opt/work/out TSST=/opt/work/bin/tsst BUILDER=/opt/work/builder
stage() { echo "\$(date -u +%T) \$*" >> /opt/work/stages.txt; }
stage export; bash bench/gpu/export-7b.sh > \$OUT/export.txt 2>&1 || { stage export failed; exit 1; }
case " $variants " in
  *" reference "*|*" noref "*) ;;
  *) stage reference; bash bench/gpu/reference.sh $n $ref_limit > \$OUT/reference.txt 2>&1 ;;
esac
for spec in $variants; do
  v=\${spec%%:*} limit=\${spec#*:}; [ "\$limit" = "\$spec" ] && limit=$e2e_limit
  bin=/opt/work/bin/tsst extra=()
  case \$v in
    noref) continue ;;
    reference) stage reference; bash bench/gpu/reference.sh $n $ref_limit > \$OUT/reference.txt 2>&1; continue ;;
    value|value-ab|generation|tree|steps|kernels) stage \$v; bash bench/gpu/\$v.sh > \$OUT/\$v.txt 2>&1; continue ;;
    new) ;;
    base) bin=/opt/work/bin/tsst-base ;;
    noreuse) extra=(TSST_VALUE_PREFIX_REUSE=0) ;;
    stems) extra=(TSST_STEM_CACHE_MB=${STEM_MB:-8916} TSST_CUDA_GRAPHS=0) ;;
    noshrink) extra=(TSST_ARENA_SHRINK=0) ;;
    auto) extra=(TSST_ATTENTION=auto) ;;
    graphs) extra=(TSST_CUDA_GRAPHS=1) ;;
    nographs) extra=(TSST_CUDA_GRAPHS=0) ;;
    slotstems) extra=(TSST_SLOT_REUSE=1) ;;
    noreuse-slots) extra=(TSST_SLOT_REUSE=0) ;;
    *) stage "unknown variant \$v"; continue ;;
  esac
  tag=-\$v; [ \$v = new ] && tag=
  stage e2e \$v; TSST=\$bin TAG=\$tag bash bench/gpu/e2e.sh 64 $n \$limit "\${extra[@]}" > \$OUT/e2e-\$v.txt 2>&1
done
stage done
RUN
: > /opt/work/stages.txt
setsid nohup bash /opt/work/session-run.sh > /opt/work/session.log 2>&1 < /dev/null &
sleep 2; cat /opt/work/stages.txt
