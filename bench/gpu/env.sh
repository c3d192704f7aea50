# Sourced on the GPU machine (/work/shared/GPU.md): the onnxruntime-gpu library carried
# over in parts and unpacked under /opt/ortgpu, and the CUDA libraries torch ships.
export ORT_DYLIB_PATH=/opt/ortgpu/site/onnxruntime/capi/libonnxruntime.so.1.31.1
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3.12/site-packages/nvidia/*/lib | tr '\n' ':')/usr/local/cuda/lib64:$LD_LIBRARY_PATH
