#!/usr/bin/env bash
# issue 12 on the GPU: device calls 2.. (carry .gpu-carry/pN, from bench/gpu/carry.sh): `bash tools/train/gpu/st-part.sh N [last]`.
# The last one joins the parts into libonnxruntime_providers_cuda.so and marks ONNX Runtime CUDA ready.
set -eu
mv .gpu-carry/p$1 /opt/ortgpu/
if [ "${2:-}" = last ]; then
  cat /opt/ortgpu/p? | python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), open(sys.argv[1],'wb'), 1<<24)" \
    /opt/ortgpu/site/onnxruntime/capi/libonnxruntime_providers_cuda.so
  md5sum /opt/ortgpu/site/onnxruntime/capi/*.so*
  rm -f /opt/ortgpu/p?
  touch /opt/ortgpu/ready
fi
ls -la /opt/ortgpu; cat /opt/gst/stages.txt; tail -n 3 /opt/gst/run.log
for f in /opt/gst/B/log.jsonl /opt/gst/B2/log.jsonl; do [ -f $f ] && grep -E 'policy_eval|policy_test|note' $f | tail -n 2 | cut -c1-220; done; true
