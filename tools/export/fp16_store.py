"""Store an exported model's float32 weights as float16 where that loses nothing.

An fp32 model whose weights came from an fp16 or bf16-trained checkpoint saved in fp16
holds values that float16 represents exactly; stored as float16 with a `Cast` back to
float32 in front of their users, the files are half the size and the graph computes
the same numbers (ONNX Runtime folds the casts into constants when the session loads,
so inference runs in fp32 as before). Only tensors that round-trip exactly are
converted; the rest (e.g. the decoder's rotary cos/sin caches) stay float32. This is
what keeps the committed demo models small enough for the repository.

  fp16_store.py DIR      # rewrites DIR/*.onnx in place, prints what it converted
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SUFFIX = "__fp16"


def store_fp16(path, min_elements=1024):
    """Rewrites `path`; returns (tensors converted, tensors kept fp32, bytes before, after)."""
    before = os.path.getsize(path)
    model = onnx.load(path)
    graph = model.graph
    inputs = {i.name for i in graph.input}
    casts, kept, converted = [], 0, 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or init.name in inputs:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_elements:
            continue
        half = arr.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), arr):
            kept += 1
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, name + SUFFIX))
        casts.append(helper.make_node("Cast", [name + SUFFIX], [name], to=TensorProto.FLOAT, name=name + SUFFIX))
        converted += 1
    if casts:
        nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend(casts + nodes)
        onnx.save(model, path)
    return converted, kept, before, os.path.getsize(path)


def main(argv):
    if len(argv) != 1:
        raise SystemExit(__doc__)
    for f in sorted(os.listdir(argv[0])):
        if f.endswith(".onnx"):
            c, k, b, a = store_fp16(os.path.join(argv[0], f))
            print(f"{f}: {c} tensors stored as fp16, {k} not exact in fp16 kept fp32; {b} -> {a} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
