# Device probe: the value decoder's run time for a prefill, one decode step, and a
# continuation of k positions over a past in a shared buffer (batch 1), IoBinding.
import json, sys, time
import numpy as np
import onnxruntime as ort
d = sys.argv[1]
m = json.load(open(d + "/manifest.json"))["decoder"]
L, H, D, W = m["num_layers"], m["num_kv_heads"], m["head_dim"], m["hidden_size"]
so = ort.SessionOptions()
s = ort.InferenceSession(d + "/" + m["file"], so, providers=["CUDAExecutionProvider"])
outs = [o.name for o in s.get_outputs()]
want = m.get("hidden_states") or m.get("logits")
cap = 1280
buf = [ort.OrtValue.ortvalue_from_numpy(np.zeros((1, H, cap, D), np.float16), "cuda", 0) for _ in range(2 * L)]
def run(past, new, shared=True, reps=5):
    ts = []
    for _ in range(reps):
        b = s.io_binding()
        b.bind_cpu_input(m["inputs_embeds"], np.random.rand(1, new, W).astype(np.float16))
        b.bind_cpu_input(m["attention_mask"], np.ones((1, past + new), np.int64))
        for i in range(L):
            for j, (pn, qn) in enumerate([(m["past_key"], m["present_key"]), (m["past_value"], m["present_value"])]):
                if shared:
                    b.bind_ortvalue_input(pn.format(i=i), buf[2 * i + j])
                    b.bind_ortvalue_output(qn.format(i=i), buf[2 * i + j])
                else:
                    b.bind_ortvalue_input(pn.format(i=i), ort.OrtValue.ortvalue_from_numpy(np.zeros((1, H, past, D), np.float16), "cuda", 0))
                    b.bind_output(qn.format(i=i), "cuda")
        b.bind_output(want, "cuda")
        t = time.perf_counter(); s.run_with_iobinding(b); ts.append((time.perf_counter() - t) * 1e3)
    return sorted(ts)[len(ts) // 2]
print("prefill 1000 (no past, own presents):", run(0, 1000, shared=False))
for past, new in [(1000, 1), (1000, 2), (1000, 8), (1000, 20), (1000, 64), (700, 300), (0, 20)]:
    print(f"shared buffer past={past} new={new}: {run(past, new):.1f} ms")
print("own presents past=1000 new=20:", run(1000, 20, shared=False))
