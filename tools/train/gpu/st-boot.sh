#!/usr/bin/env bash
# issue 12 on the GPU, first device call (run from the repo root; carry .gpu-carry/boot and
# .gpu-carry/p0): copies the repo to /opt/gst/repo, unpacks the tsst binary, the ONNX Runtime
# core libraries and the genai builder, stores the first part of the CUDA provider, and starts
# tools/train/gpu/st-run.sh in its own session so it runs on between calls.
set -eu
G=/opt/gst
mkdir -p $G/repo $G/bin /opt/ortgpu/site/onnxruntime/capi
tar --exclude=./.gpu-carry --exclude=./target --exclude=./.ort -cf - . | tar -C $G/repo -xf -
unxz() { python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'), 1<<24)" "$1" "$2"; }
unxz .gpu-carry/boot/tsst.xz $G/bin/tsst && chmod +x $G/bin/tsst
unxz .gpu-carry/boot/core.tar.xz /tmp/core.tar && tar -C /opt/ortgpu/site/onnxruntime/capi -xf /tmp/core.tar
cp -r .gpu-carry/boot/genai $G/genai
mv .gpu-carry/p0 /opt/ortgpu/
cd $G/repo
setsid nohup bash tools/train/gpu/st-run.sh > $G/run.log 2>&1 < /dev/null &
sleep 3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$G/bin/tsst --version || true
ls -la /opt/ortgpu /opt/ortgpu/site/onnxruntime/capi; cat $G/stages.txt 2>/dev/null; nproc; df -h /opt | tail -1
