#!/usr/bin/env python3
"""Can one decoder run score all of a node's children? (issue 10)

At the 7B shape the value model's runs took 438 of its 598 busy seconds in the
40-question search (bench/RESULTS.md): tsst scores each child's rest (its new step) in
a run of its own over the node's prefix, because ONNX Runtime's CUDA
GroupQueryAttention takes several new positions over a past for one sequence only and
refuses an attention bias. Every such run reads all the weights for ~20 positions.

The torch route's decoder (tools/export/parts.TorchDecoder: attention written out as
MatMul and Softmax) takes a mask per query when exported with one of shape
[B, T, P+T]: then all the children's rests can go side by side in one run (tree
attention: a child's positions see the prefix and their own earlier positions, with
position ids restarting after the prefix for each child). This script exports that
decoder for a value model (no lm_head, hidden states out), then times, in ONNX Runtime
and over the same prefix cache:
  - per child: one run per child's rest, as tsst scores now;
  - tree: one run with every child's rest;
and checks that both give the same values (value head on the last position of each
child). The prefix run is common to both and reported apart.

  tree_value.py --export-args "--tiny-random --dtype fp32" --device cpu
  tree_value.py --export-args "--random-shape llava-1.5-7b --num-layers 8 --init-device cuda --dtype fp16" --device cuda
Prints one JSON line per setting and a last one with the ratio.
"""
import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "export"))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

import export_llava  # noqa: E402
from parts import TorchDecoder, llava_parts  # noqa: E402


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export-args", required=True, help="export_llava.py's model arguments")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prefix", type=int, default=900, help="positions of the node's prefix")
    ap.add_argument("--children", type=int, default=5)
    ap.add_argument("--rest", default="10-40", help="a child's rest length, drawn in A-B")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="where the ONNX export goes (default: a temporary folder)")
    return ap.parse_args()


class Runner:
    """One session; inputs from the host, the past and the presents on the device."""

    def __init__(self, path, device):
        providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
        self.sess = ort.InferenceSession(path, providers=providers)
        self.device = "cuda" if device.startswith("cuda") else "cpu"
        self.outputs = [o.name for o in self.sess.get_outputs()]
        self.past_names = [i.name for i in self.sess.get_inputs() if i.name.startswith("past_key_values.")]

    def run(self, embeds, mask, positions, past):
        """Returns (hidden states [1, T, H] on the host, presents on the device, ms)."""
        io = self.sess.io_binding()
        io.bind_cpu_input("inputs_embeds", embeds)
        io.bind_cpu_input("attention_mask", mask)
        io.bind_cpu_input("position_ids", positions)
        for name, value in zip(self.past_names, past):
            io.bind_ortvalue_input(name, value)
        for name in self.outputs:
            io.bind_output(name, self.device)
        start = time.perf_counter()
        self.sess.run_with_iobinding(io)
        outs = io.get_outputs()
        hidden = outs[0].numpy()
        ms = (time.perf_counter() - start) * 1000
        return hidden, outs[1:], ms


def causal(p, t):
    """[1, t, p+t]: query i sees keys 0..p+i."""
    return np.tril(np.ones((t, p + t), dtype=np.int64), k=p)[None]


def tree_mask(p, lengths):
    """[1, T, p+T]: each child's positions see the prefix and their own earlier ones."""
    total = sum(lengths)
    m = np.zeros((total, p + total), dtype=np.int64)
    m[:, :p] = 1
    at = 0
    for n in lengths:
        m[at:at + n, p + at:p + at + n] = np.tril(np.ones((n, n), dtype=np.int64))
        at += n
    return m[None]


def main():
    a = parse_args()
    margs = export_llava.parse_args(shlex.split(a.export_args) + ["--kind", "value", "--out", "/dev/null"])
    torch.manual_seed(margs.seed)
    dtype = torch.float16 if margs.dtype == "fp16" else torch.float32
    model, tok, _, _, head = export_llava.load(margs, dtype)
    _, _, lm, _, embed = llava_parts(model)
    tc = model.config.text_config
    dec = TorchDecoder(lm, None, tc, with_logits=False, with_hidden=True).eval()
    work = a.work or tempfile.mkdtemp(prefix="tree-value-")
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "decoder.onnx")
    t0 = time.time()
    with torch.no_grad():
        export_llava.export_torch_decoder(dec, model.config, dtype, path, work, tree=True)
    print(json.dumps({"exported_s": round(time.time() - t0, 1), "layers": tc.num_hidden_layers,
                      "hidden": tc.hidden_size}), flush=True)
    head_dim = dec.head_dim
    del dec
    runner = Runner(path, a.device)
    np_dtype = np.float16 if dtype == torch.float16 else np.float32
    head = head.float().cpu()
    rng = np.random.default_rng(a.seed)
    lo, hi = (int(x) for x in a.rest.split("-"))

    def embeds(n):
        ids = torch.from_numpy(rng.integers(3, tok.get_vocab_size(), size=(1, n)))
        with torch.no_grad():
            return embed(ids.to(embed.weight.device)).to(dtype).cpu().numpy().astype(np_dtype)

    def values(hidden, ends):
        with torch.no_grad():
            return head(torch.from_numpy(hidden[0, ends].astype(np.float32))).reshape(-1).tolist()

    empty = [ort.OrtValue.ortvalue_from_numpy(
        np.zeros((1, tc.num_key_value_heads, 0, head_dim), dtype=np_dtype),
        runner.device, 0)] * (2 * tc.num_hidden_layers)
    p = a.prefix
    prefix_ms, child_ms, tree_ms, diffs = [], [], [], []
    for rep in range(a.reps + 1):  # the first is a warm-up
        pre = embeds(p)
        _, past, ms = runner.run(pre, causal(0, p), np.arange(p, dtype=np.int64)[None], empty)
        lengths = [int(rng.integers(lo, hi + 1)) for _ in range(a.children)]
        rests = [embeds(n) for n in lengths]
        one, total = [], 0.0
        for r, n in zip(rests, lengths):
            hidden, _, cms = runner.run(r, causal(p, n), np.arange(p, p + n, dtype=np.int64)[None], past)
            one += values(hidden, [n - 1])
            total += cms
        cat = np.concatenate(rests, axis=1)
        pos = np.concatenate([np.arange(p, p + n, dtype=np.int64) for n in lengths])[None]
        ends = list(np.cumsum(lengths) - 1)
        hidden, _, tms = runner.run(cat, tree_mask(p, lengths), pos, past)
        together = values(hidden, ends)
        if rep == 0:
            continue
        prefix_ms.append(ms)
        child_ms.append(total)
        tree_ms.append(tms)
        diffs.append(max(abs(x - y) for x, y in zip(one, together)))
    med = statistics.median
    common = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
              "layers": tc.num_hidden_layers, "prefix": p, "children": a.children, "rest": a.rest}
    print(json.dumps({**common, "mode": "prefix", "ms": round(med(prefix_ms), 2)}))
    print(json.dumps({**common, "mode": "per_child", "node_ms": round(med(child_ms), 2)}))
    print(json.dumps({**common, "mode": "tree", "node_ms": round(med(tree_ms), 2)}))
    print(json.dumps({**common, "tree_speedup": round(med(child_ms) / med(tree_ms), 2),
                      "max_value_diff": float(max(diffs))}))


if __name__ == "__main__":
    main()
