#!/usr/bin/env bash
# On the device, first call (carry .gpu-carry/boot, made by bench/gpu/carry.sh): unpacks
# tsst (and a baseline build, if carried) to /opt/work/bin, ONNX Runtime's core libraries and
# Python package under /opt/ortgpu/site (env.sh's ORT_DYLIB_PATH), and the
# model builder to /opt/work/builder; prints the card.
set -eu
mkdir -p /opt/work/bin /opt/ortgpu/site/onnxruntime/capi
unxz() { python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'), 1<<24)" "$1" "$2"; }
unxz .gpu-carry/boot/tsst.xz /opt/work/bin/tsst && chmod +x /opt/work/bin/tsst
if [ -f .gpu-carry/boot/tsst-base.xz ]; then
  unxz .gpu-carry/boot/tsst-base.xz /opt/work/bin/tsst-base && chmod +x /opt/work/bin/tsst-base
fi
if [ -f .gpu-carry/boot/examples.tar.xz ]; then
  unxz .gpu-carry/boot/examples.tar.xz /tmp/examples.tar && tar -C /opt/work/bin -xf /tmp/examples.tar
fi
unxz .gpu-carry/boot/core.tar.xz /tmp/core.tar && tar -C /opt/ortgpu/site -xf /tmp/core.tar
rm -rf /opt/work/builder && cp -r .gpu-carry/boot/builder /opt/work/builder
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc; df -h /opt | tail -1
