"""Can a value model check a chain's facts against the image? On `contrasts.py`'s output
for questions it did not train on: each chain with one fact made false against the
grounded chain's prefix of the same steps (a warm-up record: a value model trained on
linearly scored prefixes values a shorter prefix lower, whatever its facts). Per model
and per kind of false fact: how often the true one is valued above the false one (0.5
is chance), and the mean values.

    python3 tools/train/contrast_eval.py runs/cx/contrasts-test.json --image-root data/cx \\
        --model v1=models/demo/value --model cx=runs/cx/value/hf [--questions 300]

A model is a checkpoint directory (`train.py`'s OUT/hf) or an exported model directory
(rebuilt from its ONNX files, `from_onnx.py`).
"""
import argparse
import json
import os
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from rescore import score  # noqa: E402


def shape(record):
    """A chain's steps and whether it states its final answer."""
    text = record["conversations"][1]["value"]
    return text.count("Step "), "Final Answer" in text


def pairs(records, limit):
    """(question, [(kind, true record, false record)]) for each question with both."""
    true, false = defaultdict(dict), defaultdict(list)
    for r in records:
        qid, _, kind = r["id"].partition("/contrast/")
        if kind:
            false[qid].append((kind, r))
        else:
            true[r["id"].rsplit("/warmup/", 1)[0]][shape(r)] = r
    out = []
    for q in sorted(false):
        matched = [(kind, true[q][shape(f)], f) for kind, f in false[q] if shape(f) in true[q]]
        if matched:
            out.append((q, matched))
    return out[:limit] if limit else out


def summary(groups, values):
    at, won, seen, true_v, false_v = 0, defaultdict(int), defaultdict(int), defaultdict(list), defaultdict(list)
    for _, matched in groups:
        for kind, _, _ in matched:
            t, f = values[at], values[at + 1]
            at += 2
            true_v[kind].append(t)
            false_v[kind].append(f)
            for key in (kind, "all"):
                seen[key] += 1
                won[key] += (t > f) + 0.5 * (t == f)
    mean = lambda xs: round(sum(xs) / len(xs), 3)  # noqa: E731
    return {"true_above_false": {k: round(won[k] / seen[k], 3) for k in sorted(seen)},
            "pairs": dict(sorted(seen.items())),
            "mean_true": {k: mean(v) for k, v in sorted(true_v.items())},
            "mean_false": {k: mean(v) for k, v in sorted(false_v.items())}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("contrasts", help="contrasts.py's output for held-out questions")
    ap.add_argument("--image-root", default=".")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=DIR", required=True)
    ap.add_argument("--questions", type=int, default=0, help="the first N questions only (0: all)")
    a = ap.parse_args(argv)
    with open(a.contrasts) as f:
        groups = pairs(json.load(f), a.questions)
    records = [r for _, matched in groups for _, t, f in matched for r in (t, f)]
    out = {"questions": len(groups)}
    for spec in a.model:
        name, path = spec.split("=", 1)
        out[name] = summary(groups, score(path, records, a.image_root))
        print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
