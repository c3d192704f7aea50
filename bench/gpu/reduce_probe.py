"""Which of the sample graph's operators is slow on CUDA? Times one-op ONNX graphs over
[rows, vocab] float32 logits on the device (IoBinding, device input and outputs).
  reduce_probe.py [cpu]   (on the device: PYTHONPATH=/opt/ortgpu/site, after env.sh)"""
import sys, time
import numpy as np
import onnx
from onnx import helper, TensorProto
import onnxruntime as ort

def graph(op, rows, vocab, **attrs):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, vocab])
    inits, ins = [], ["x"]
    if op == "TopK":
        inits.append(helper.make_tensor("k", TensorProto.INT64, [1], [1])); ins.append("k")
        outs = ["v", "i"]
    elif op == "ReduceSum":
        inits.append(helper.make_tensor("axes", TensorProto.INT64, [1], [1])); ins.append("axes")
        outs = ["y"]
    elif op == "CumSum":
        inits.append(helper.make_tensor("axis", TensorProto.INT64, [], [1])); ins.append("axis")
        outs = ["y"]
    else:
        outs = ["y"]
    node = helper.make_node(op, ins, outs, **attrs)
    types = {"i": TensorProto.INT64, "y": TensorProto.INT64 if op == "ArgMax" else TensorProto.FLOAT}
    ys = [helper.make_tensor_value_info(o, types.get(o, TensorProto.FLOAT), None) for o in outs]
    g = helper.make_graph([node], op, [x], ys, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString(), outs

DEV = sys.argv[1] if len(sys.argv) > 1 else "cuda"
PROV = ("CUDAExecutionProvider", {"device_id": 0}) if DEV == "cuda" else "CPUExecutionProvider"
for rows in [1, 16, 64]:
    vocab = 32064
    data = ort.OrtValue.ortvalue_from_numpy(np.random.randn(rows, vocab).astype(np.float32), DEV, 0)
    for op, attrs in [("ArgMax", dict(axis=1, keepdims=1)), ("ReduceMax", dict(axes=[1], keepdims=1)),
                      ("ReduceSum", dict(keepdims=1)), ("TopK", dict(axis=1)), ("Exp", {}),
                      ("CumSum", {})]:
        m, outs = graph(op, rows, vocab, **attrs)
        s = ort.InferenceSession(m, providers=[PROV])
        b = s.io_binding(); b.bind_ortvalue_input("x", data)
        for o in outs: b.bind_output(o, DEV, 0)
        for _ in range(5): s.run_with_iobinding(b)
        t = time.perf_counter(); n = 50
        for _ in range(n): s.run_with_iobinding(b)
        print(f"rows={rows:3d} {op:10s} {(time.perf_counter() - t) / n * 1e3:8.3f} ms", flush=True)
