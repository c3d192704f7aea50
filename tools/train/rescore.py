"""Value models compared on the same solutions: every finished solution of a beam run is
scored again by each model, so sampling noise does not enter the comparison. Per model:
the value's AUC as a classifier of right against wrong solutions, how often the
top-valued solution of a question is right, and, over the questions whose solutions
disagree, how often the top-valued one is right against chance (its share of right
ones).

    python3 tools/train/rescore.py --results RUN/results.jsonl --dv DV.json \\
        --image-root DATA --model v1=models/demo/value --model rank=OUT/hf ...

DV is `tsst label --input RUN/results.jsonl --value-out DV.json` of the same run: its
records carry each question's prompt exactly as the runtime builds it. A model is a
checkpoint directory (`train.py`'s OUT/hf) or an exported model directory (rebuilt
from its ONNX files, `from_onnx.py`). "run" in the output is the values the run itself
recorded.
"""
import argparse
import json
import os
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import train as T  # noqa: E402
from beam_analysis import auc, load, right  # noqa: E402


def question_of(record_id):
    """`{source}/{question}/value/{path}` -> question id."""
    return record_id.split("/")[1]


def summary(questions, values, absent):
    """The figures above for one model's `values` (per question, per solution);
    `absent` more questions had no right solution."""
    pos = [v for q, vs in zip(questions, values) for s, v in zip(q["solutions"], vs) if right(s)]
    neg = [v for q, vs in zip(questions, values) for s, v in zip(q["solutions"], vs) if not right(s)]
    top = [right(q["solutions"][max(range(len(vs)), key=vs.__getitem__)]) for q, vs in zip(questions, values)]
    mixed = [(q, vs) for q, vs in zip(questions, values)
             if 0 < sum(map(right, q["solutions"])) < len(q["solutions"])]
    mixed_top = sum(right(q["solutions"][max(range(len(vs)), key=vs.__getitem__)]) for q, vs in mixed)
    chance = sum(sum(map(right, q["solutions"])) / len(q["solutions"]) for q, _ in mixed)
    return {"auc": round(auc(pos, neg), 3), "top_right": round(sum(top) / (len(top) + absent), 3),
            "mixed_questions": len(mixed), "mixed_top_right": mixed_top, "mixed_chance": round(chance, 1)}


def score(path, records, image_root):
    """The value of each of `records` (train.py's value records) by the model at `path`."""
    with tempfile.TemporaryDirectory() as work:
        model, tok, special, head, _ = T.load_base(path, "value", work)
    model.eval()
    head.eval()
    cfg = model.config
    n_img = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    data = T.Examples(records, tok, special, image_root, cfg.vision_config.image_size, n_img, "value")
    values = []
    with torch.no_grad():
        for at in range(0, len(data.items), 32):
            values += T.values_of(model.model, head, data.items[at:at + 32], "cpu", torch.float32,
                                  special["pad"]).tolist()
    return values


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", required=True)
    ap.add_argument("--dv", required=True)
    ap.add_argument("--image-root", default=".")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=DIR")
    a = ap.parse_args(argv)
    questions = [q for q in load(a.results) if q["solutions"]]
    with open(a.dv) as f:
        dv = json.load(f)
    prompt = {}
    for r in dv:
        prompt.setdefault(question_of(r["id"]), r)
    # Dv holds no records of a question none of whose solutions is right: its top
    # solution is wrong whatever the model, so it only counts in `top_right`.
    absent = [q for q in questions if q["question_id"] not in prompt]
    if any(right(s) for q in absent for s in q["solutions"]):
        raise SystemExit(f"{a.dv} lacks questions of {a.results} that have right solutions: another run's?")
    questions = [q for q in questions if q["question_id"] in prompt]
    records = []
    for q in questions:
        base = prompt[q["question_id"]]
        human = next(t for t in base["conversations"] if t["from"] == "human")
        for k, s in enumerate(q["solutions"]):
            rec = {"id": f"{q['question_id']}/{k}", "conversations": [human, {"from": "gpt", "value": s["text"]}],
                   "value": float(right(s))}
            if base.get("image") is not None:
                rec["image"] = base["image"]
            records.append(rec)
    out = {"questions": len(questions) + len(absent), "all_wrong": len(absent), "solutions": len(records)}
    out["run"] = summary(questions, [[s["value"] for s in q["solutions"]] for q in questions], len(absent))
    for spec in a.model:
        name, path = spec.split("=", 1)
        flat = score(path, records, a.image_root)
        values, at = [], 0
        for q in questions:
            values.append(flat[at:at + len(q["solutions"])])
            at += len(q["solutions"])
        out[name] = summary(questions, values, len(absent))
        print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
