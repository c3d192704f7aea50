#!/usr/bin/env python3
"""The reference search loop, re-implemented faithfully in PyTorch: the baseline of
tsst's questions per GPU-hour (issue 10).

The original pipeline searches one question at a time: for every frontier node one
Hugging Face `generate` call samples `num_beams` continuations of one step (the image
goes in with every call), and the value model scores every child alone. Search rules
are TSST.md's (and tsst's): identical siblings merge, keep `branch` children drawn
without replacement with probability proportional to value^(1/0.5), finish on the
markers, end-of-sequence, 1000 characters or `max_length` tokens, stop at
`n_consistency` solutions or after 30 rounds, restart from the root when the frontier
empties.

The models are the ones `tools/export/export_llava.py` exported, rebuilt here from the
same seed and arguments (random weights are made again, identically), with the logit
bias read from the exported decoder (initializer `logits_bias`), so both systems
sample from the same distribution. The data is the same A-OKVQA-format split.

  reference_loop.py --policy DIR --value DIR --dataset-root synth --n 4 \
      --export-args "--random-shape llava-1.5-7b --init-device cuda --dtype fp16" --device cuda
Prints one JSON line: questions, seconds, questions per hour and the work done.
"""
import argparse
import json
import os
import random
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EXPORT = os.path.join(HERE, "..", "..", "tools", "export")
sys.path.insert(0, EXPORT)

import onnx  # noqa: E402
import torch  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import StoppingCriteria, StoppingCriteriaList  # noqa: E402

import export_llava  # noqa: E402
import goldens as G  # noqa: E402
import preprocess  # noqa: E402
import prompt as P  # noqa: E402

END_MARKERS = ["###", "---", "</s>", ". . .", "USER", "Human"]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="the exported policy directory")
    ap.add_argument("--value", required=True, help="the exported value directory")
    ap.add_argument("--export-args", required=True,
                    help="the model arguments the export was run with (source, seed, dtype, layers)")
    ap.add_argument("--dataset-root", required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--n", type=int, default=4, help="questions (the split's first N)")
    ap.add_argument("--time-limit", type=float, default=0, help="stop after this many seconds (0: none)")
    ap.add_argument("--num-beams", type=int, default=5)
    ap.add_argument("--branch", type=int, default=5)
    ap.add_argument("--n-consistency", type=int, default=7)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--step-max-tokens", type=int, default=256)
    ap.add_argument("--max-rounds", type=int, default=30)
    ap.add_argument("--finish-max-chars", type=int, default=1000)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap.parse_args()


def rebuild(export_args, kind, policy_dir, device):
    """The exported model, made again in PyTorch from the export's own arguments."""
    args = export_llava.parse_args(shlex.split(export_args) + ["--kind", kind, "--out", "/dev/null"])
    torch.manual_seed(args.seed)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    model, tok, special, _, head = export_llava.load(args, dtype)
    if kind == "policy":
        graph = onnx.load(os.path.join(policy_dir, "decoder.onnx"), load_external_data=False)
        bias = [t for t in graph.graph.initializer if t.name == "logits_bias"]
        if bias:
            b = torch.from_numpy(numpy_helper.to_array(bias[0]).astype("float32"))
            export_llava.add_logit_bias_(model, {i: float(v) for i, v in enumerate(b) if v != 0})
    model = model.to(device).eval()
    if head is not None:
        head = head.to(device).eval()
    return model, tok, special, head


class StepEnd(StoppingCriteria):
    """Stops each row at its first token whose text contains the delimiter (or EOS,
    which generate handles itself)."""

    def __init__(self, delimiter_ids, start):
        self.ids = delimiter_ids
        self.start = start

    def __call__(self, input_ids, scores, **kwargs):
        if input_ids.shape[1] <= self.start:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return torch.isin(input_ids[:, -1], self.ids)


class Search:
    def __init__(self, a):
        self.a = a
        self.policy, self.tok, self.special, _ = rebuild(a.export_args, "policy", a.policy, a.device)
        self.value, _, _, self.head = rebuild(a.export_args, "value", a.policy, a.device)
        with open(os.path.join(a.policy, "manifest.json")) as f:
            self.manifest = json.load(f)
        vocab = self.tok.get_vocab_size()
        self.delims = torch.tensor([i for i in range(vocab) if "." in self.tok.decode([i])], device=a.device)
        self.n_img = self.manifest["vision"]["num_image_tokens"]
        self.work = {"generate_calls": 0, "value_calls": 0, "new_tokens": 0, "rounds": 0, "steps": 0}

    def ids(self, q, partial):
        text = P.conversation(q["question"], q["choices"], None, True, partial)
        ids = self.tok.encode(text).ids
        if not ids or ids[0] != self.special["bos"]:
            ids = [self.special["bos"]] + ids
        return G.expand_image_tokens(ids, self.special["image"], self.n_img)

    @torch.no_grad()
    def expand(self, q, pixels, node):
        a = self.a
        ids = torch.tensor([self.ids(q, node["text"])], device=a.device)
        budget = min(a.step_max_tokens, a.max_length - node["tokens"])
        if budget <= 0:
            return []
        out = self.policy.generate(
            input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
            do_sample=True, temperature=a.temperature, top_k=0, top_p=1.0,
            num_return_sequences=a.num_beams, max_new_tokens=budget,
            stopping_criteria=StoppingCriteriaList([StepEnd(self.delims, ids.shape[1])]),
            eos_token_id=self.special["eos"], pad_token_id=self.special["pad"])
        self.work["generate_calls"] += 1
        steps = []
        for row in out[:, ids.shape[1]:].tolist():
            new, eos = [], False
            for t in row:
                if t == self.special["eos"]:
                    eos = True
                    new.append(t)
                    break
                new.append(t)
                if "." in self.tok.decode([t]):
                    break
            self.work["new_tokens"] += len(new)
            text = self.tok.decode([t for t in new if t != self.special["eos"]]).strip()
            steps.append((text, len(new), eos))
        return steps

    @torch.no_grad()
    def score(self, q, pixels, text):
        ids = torch.tensor([self.ids(q, text)], device=self.a.device)
        out = self.value.model(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids))
        self.work["value_calls"] += 1
        return float(self.head(out.last_hidden_state[:, -1]).float()[0])

    def finished(self, node):
        t = node["text"]
        if "final answer" in t.lower() or any(m in t for m in END_MARKERS) or node["eos"]:
            return True
        return len(t) > self.a.finish_max_chars or node["tokens"] >= self.a.max_length

    def select(self, children, rng):
        k = self.a.branch
        if len(children) <= k:
            return children
        by_value = sorted(range(len(children)), key=lambda i: -children[i]["value"])
        largest = max([c["value"] for c in children if c["value"] > 0], default=0.0)
        left = [(i, (c["value"] / largest) ** 2) for i, c in enumerate(children) if c["value"] > 0]
        chosen = []
        while len(chosen) < k and left:
            total = sum(w for _, w in left)
            target, acc, pick = rng.random() * total, 0.0, len(left) - 1
            for pos, (_, w) in enumerate(left):
                acc += w
                if target < acc:
                    pick = pos
                    break
            chosen.append(left.pop(pick)[0])
        chosen += [i for i in by_value if i not in chosen][:k - len(chosen)]
        return [children[i] for i in chosen]

    def question(self, q, image_path, rng):
        a = self.a
        size = self.manifest["vision"]["image_size"]
        pixels = preprocess.preprocess(Image.open(image_path), size).to(a.device, self.policy.dtype)
        root = {"text": "", "tokens": 0, "eos": False}
        frontier, solutions = [root], []
        for _ in range(a.max_rounds):
            self.work["rounds"] += 1
            children = []
            for node in frontier:
                seen = set()
                steps = self.expand(q, pixels, node)
                kids = []
                for text, n, eos in steps:
                    if not text and not eos:
                        continue
                    full = f"{node['text']} {text}".strip() if text else node["text"]
                    if full in seen:
                        continue
                    seen.add(full)
                    kids.append({"text": full, "tokens": node["tokens"] + n, "eos": eos})
                if not kids and node["text"]:
                    solutions.append(node)
                children += kids
            self.work["steps"] += len(children)
            for c in children:
                c["value"] = self.score(q, pixels, c["text"])
            frontier = []
            for c in self.select(children, rng):
                (solutions if self.finished(c) else frontier).append(c)
            if len(solutions) >= a.n_consistency:
                break
            if not frontier:
                frontier = [root]
        return solutions


def main():
    a = parse_args()
    with open(os.path.join(a.dataset_root, f"aokvqa_v1p0_{a.split}.json")) as f:
        questions = json.load(f)[:a.n]
    t0 = time.time()
    search = Search(a)
    load_s = time.time() - t0
    rng = random.Random(a.seed)
    done, solutions = 0, 0
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.time()
    for q in questions:
        image = os.path.join(a.dataset_root, f"{a.split}2017", f"{q['image_id']:012d}.jpg")
        solutions += len(search.question(q, image, rng))
        done += 1
        if a.time_limit and time.time() - start > a.time_limit:
            break
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    secs = time.time() - start
    print(json.dumps({"system": "reference loop (PyTorch, transformers generate)", "questions": done,
                      "seconds": round(secs, 2), "questions_per_hour": round(done / secs * 3600, 2),
                      "load_seconds": round(load_s, 1), "solutions": solutions, **search.work,
                      "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
                      "torch": torch.__version__}))
    return 0 if done == len(questions) or a.time_limit else 1


if __name__ == "__main__":
    sys.exit(main())
