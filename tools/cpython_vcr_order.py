#!/usr/bin/env python3
"""Writes tests/fixtures/vcr/cpython_order.json: VCR orders as the original tool
computes them (ids sorted, then random.seed(seed); random.shuffle(ids)), which
datasets/tests/loaders.rs checks tsst against. Run from the repository root:
python3 tools/cpython_vcr_order.py
"""
import json
import random
import sys


def order(ids, seed):
    ids = sorted(ids)
    random.seed(seed)
    random.shuffle(ids)
    return ids


def annot_ids(path):
    ids = []
    for line in open(path):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the original would stop here; tsst reports the line as bad
        if "annot_id" in record and record["annot_id"] not in ids:
            ids.append(record["annot_id"])
    return ids


cases = []
for fixture in ["tests/fixtures/vcr/val.jsonl", "tests/fixtures/broken/vcr/val.jsonl"]:
    ids = annot_ids(fixture)
    for seed in [0, 11, 42, 2**40 + 7]:
        cases.append({"fixture": fixture, "seed": seed, "order": order(ids, seed)})
# VCR val's size, ids in the published form: the whole order is long, so its head and
# tail are kept.
ids = [f"val-{i}" for i in range(26534)]
for seed in [0, 42]:
    o = order(ids, seed)
    cases.append({"generated": "val-{i} for i < 26534", "seed": seed, "head": o[:40], "tail": o[-10:]})
json.dump(
    {"python": sys.version.split()[0], "cases": cases},
    open("tests/fixtures/vcr/cpython_order.json", "w"),
    indent=1,
)
