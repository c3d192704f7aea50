#!/usr/bin/env python3
"""Where a decode step's GPU time goes, kernel by kernel, against its bytes floor (issue 10).

With CUDA graphs the 7B step is still 1.35-1.64x the floor at batch 16-64
(bench/RESULTS.md), so the gap is no longer launches: some kernels read their bytes
slower than the card can. This drives the exported genai decoder the way tsst does
(one buffer per cache tensor bound as past and present, a mask as wide as the buffers,
the embeddings and logits on the device; optionally as a CUDA graph), times the step,
and records one profiled stretch of steps with torch's profiler (CUPTI sees ONNX
Runtime's kernels too, graph replays included). Kernels are grouped into matmuls,
attention, normalisation, rotary and the rest; matmuls are set against the weights'
bytes and attention against the KV bytes, each over the bandwidth given (measured in
the same call by bench/gpu/bandwidth.py).

  kernels.py MODEL_DIR --bandwidth-tbs 3.05 [--batch 16,64] [--past 770] [--graphs 0,1]
  kernels.py VALUE_DIR --bandwidth-tbs 3.05 --batch 1 --past 900 --new 20 --graphs 0
      (a value model's rest over a node's prefix: GroupQueryAttention takes several new
      positions over a past at batch 1 only)
  kernels.py tests/fixtures/models/tiny-policy --device cpu   (timing only: a smoke test)
Prints one JSON line per (graphs, batch) with the step, the GPU time inside it and
each group's time and floor, then the top kernels.
"""
import argparse
import json
import os
import re
import statistics
import tempfile
import time

import numpy as np
import torch  # before onnxruntime: CUDA, and CUPTI for the profiler, from torch's wheel
import onnxruntime as ort  # noqa: E402

GROUPS = [  # (group, pattern over the kernel's name), first match wins
    ("attention", r"flash|fmha|_mha|attention|Attention|softmax|Softmax"),
    ("matmul", r"gemm|gemv|cutlass|xmma|cublas|Gemm|matmul|MatMul|splitK|sm90|sm80"),
    ("norm", r"LayerNorm|layer_norm|RMS|Rms"),
    ("rotary", r"Rotary|rotary"),
]

NUMPY = {torch.float16: np.float16, torch.float32: np.float32, torch.int64: np.int64,
         torch.int32: np.int32}
TYPES = {"tensor(float16)": torch.float16, "tensor(float)": torch.float32,
         "tensor(int64)": torch.int64, "tensor(int32)": torch.int32}


def group(name):
    for g, pattern in GROUPS:
        if re.search(pattern, name):
            return g
    return "other"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", default="16,64")
    ap.add_argument("--past", type=int, default=770, help="positions in the cache at the first step")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (and as many profiled)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--graphs", default="0,1", help="0: plain runs, 1: CUDA graph replays")
    ap.add_argument("--new", type=int, default=1,
                    help="positions a run writes (1: a decode step; ~20: a value model's rest)")
    ap.add_argument("--bandwidth-tbs", type=float, default=None)
    ap.add_argument("--top", type=int, default=12)
    return ap.parse_args()


class Step:
    """One decoder session with its buffers bound once; `run()` is one decode step."""

    def __init__(self, model, manifest, batch, past, capacity, device, graphs, new):
        d = manifest["decoder"]
        cuda = device.startswith("cuda")
        opts = {"device_id": 0, "use_tf32": 0, "arena_extend_strategy": "kSameAsRequested",
                # flash, memory-efficient or plain attention, as tsst pins them (device.rs)
                "sdpa_kernel": str(1 | 2 | 16)}
        if graphs:
            opts["enable_cuda_graph"] = "1"
        providers = [("CUDAExecutionProvider", opts)] if cuda else ["CPUExecutionProvider"]
        self.sess = ort.InferenceSession(os.path.join(model, d["file"]), providers=providers)
        types = {i.name: i.type for i in self.sess.get_inputs()}
        types.update({o.name: o.type for o in self.sess.get_outputs()})
        dev = torch.device("cuda:0" if cuda else "cpu")
        self.dev, self.cuda = dev, cuda
        ftype = TYPES[types[d["inputs_embeds"]]]
        kv = (batch, d["num_kv_heads"], capacity, d["head_dim"])
        self.kv = [torch.randn(kv, dtype=ftype, device=dev) * 0.1 for _ in range(2 * d["num_layers"])]
        self.embeds = torch.randn((batch, new, d["hidden_size"]), dtype=ftype, device=dev) * 0.1
        self.mask = torch.zeros((batch, capacity), dtype=TYPES[types[d["attention_mask"]]], device=dev)
        self.mask[:, : past + new] = 1
        # A policy's logits, or a value model's hidden states (what tsst reads of each).
        out = d["hidden_states"] if manifest.get("kind") == "value" else d["logits"]
        width = d["vocab_size"] if out == d.get("logits") else d["hidden_size"]
        self.out = torch.empty((batch, new, width), dtype=TYPES[types[out]], device=dev)
        self.past, self.capacity, self.new = past, capacity, new
        b = self.sess.io_binding()
        kind, index = ("cuda", 0) if cuda else ("cpu", 0)

        def bind(fn, name, t):
            fn(name, kind, index, NUMPY[t.dtype], list(t.shape), t.data_ptr())

        bind(b.bind_input, d["inputs_embeds"], self.embeds)
        bind(b.bind_input, d["attention_mask"], self.mask)
        for i in range(d["num_layers"]):
            k, v = self.kv[2 * i], self.kv[2 * i + 1]
            bind(b.bind_input, d["past_key"].format(i=i), k)
            bind(b.bind_input, d["past_value"].format(i=i), v)
            bind(b.bind_output, d["present_key"].format(i=i), k)
            bind(b.bind_output, d["present_value"].format(i=i), v)
        bind(b.bind_output, out, self.out)
        self.binding = b
        self.options = ort.RunOptions()
        if cuda:
            self.options.add_run_config_entry("gpu_graph_id", "1" if graphs else "-1")
        self.k = 0

    def run(self):
        """One run at the next `new` positions; the mask's new columns are set in place,
        as the graph binds the same buffer every step."""
        at = self.past + self.new * (self.k + 1)
        self.mask[:, at: min(at + self.new, self.capacity)] = 1
        self.k += 1
        self.sess.run_with_iobinding(self.binding, self.options)
        if self.cuda:
            torch.cuda.synchronize()


def measure(a, manifest, batch, graphs):
    d = manifest["decoder"]
    capacity = a.past + a.new * (2 * a.steps + a.warmup + 2) + 8
    s = Step(a.model, manifest, batch, a.past, capacity, a.device, graphs, a.new)
    for _ in range(a.warmup):
        s.run()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        s.run()
        times.append((time.perf_counter() - t0) * 1e3)
    row = {"graphs": graphs, "batch": batch, "new": a.new, "past": a.past + a.new * (a.warmup + a.steps),
           "step_ms": round(statistics.median(times), 3)}
    files = [os.path.join(a.model, f) for f in os.listdir(a.model) if f.startswith(d["file"])]
    weights = sum(os.path.getsize(f) for f in files)
    elem = 2 if s.kv[0].dtype == torch.float16 else 4
    mean_past = a.past + a.new * (a.warmup + a.steps + a.steps / 2)
    kv_bytes = batch * d["num_layers"] * 2 * d["num_kv_heads"] * d["head_dim"] * elem * mean_past
    if a.bandwidth_tbs:
        row["floor_ms"] = round((weights + kv_bytes) / (a.bandwidth_tbs * 1e12) * 1e3, 3)
    if not s.cuda:
        print(json.dumps(row), flush=True)
        return
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(a.steps):
            s.run()
    fd, trace = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    prof.export_chrome_trace(trace)
    events = json.load(open(trace)).get("traceEvents", [])
    os.remove(trace)
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    per = a.steps
    by_group, by_name, count = {}, {}, {}
    for e in kernels:
        name = e.get("name", "?")
        g = group(name) if e["cat"] == "kernel" else e["cat"]
        by_group[g] = by_group.get(g, 0.0) + e.get("dur", 0) / 1e3 / per
        by_name[name] = by_name.get(name, 0.0) + e.get("dur", 0) / 1e3 / per
        count[name] = count.get(name, 0) + 1
    row["gpu_ms"] = round(sum(by_group.values()), 3)
    row["kernels_per_step"] = round(len(kernels) / per, 1)
    row["groups_ms"] = {g: round(v, 3) for g, v in sorted(by_group.items(), key=lambda x: -x[1])}
    if a.bandwidth_tbs:
        bw = a.bandwidth_tbs * 1e12
        row["matmul_floor_ms"] = round(weights / bw * 1e3, 3)
        row["attention_floor_ms"] = round(kv_bytes / bw * 1e3, 3)
    print(json.dumps(row), flush=True)
    for name, ms in sorted(by_name.items(), key=lambda x: -x[1])[: a.top]:
        print(f"  {ms:8.3f} ms {count[name] / per:6.1f}x  {group(name):9s} {name[:110]}")
    del s
    torch.cuda.empty_cache()


def main():
    a = parse_args()
    manifest = json.load(open(os.path.join(a.model, "manifest.json")))
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    print(json.dumps({"device": name, "ort": ort.__version__, "torch": torch.__version__,
                      "bandwidth_tbs": a.bandwidth_tbs}), flush=True)
    for graphs in [int(g) for g in a.graphs.split(",")]:
        if graphs and not a.device.startswith("cuda"):
            continue
        for batch in [int(b) for b in a.batch.split(",")]:
            measure(a, manifest, batch, graphs)


if __name__ == "__main__":
    main()
