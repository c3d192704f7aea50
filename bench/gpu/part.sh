#!/usr/bin/env bash
# On the device, calls 2.. (carry .gpu-carry/pN): `bash bench/gpu/part.sh N [last]`. The
# last joins the parts into ONNX Runtime's CUDA provider beside the core libraries.
set -eu
mv .gpu-carry/p$1 /opt/ortgpu/
if [ "${2:-}" = last ]; then
  cat /opt/ortgpu/p? | python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), open(sys.argv[1],'wb'), 1<<24)" \
    /opt/ortgpu/site/onnxruntime/capi/libonnxruntime_providers_cuda.so
  rm -f /opt/ortgpu/p?
  md5sum /opt/ortgpu/site/onnxruntime/capi/*.so*
fi
ls -la /opt/ortgpu
