"""Sums an ONNX Runtime profile (TSST_ORT_PROFILE) by operator: per file, the
session runs' total and the operators that took the most of it.
    python3 bench/gpu/profile_top.py PROFILE.json [...] [--top 12]"""
import argparse
import collections
import json

parser = argparse.ArgumentParser()
parser.add_argument("profiles", nargs="+")
parser.add_argument("--top", type=int, default=12)
opts = parser.parse_args()
top = opts.top
for path in opts.profiles:
    events = json.load(open(path))
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    by_op = collections.Counter()
    count = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            provider = e.get("args", {}).get("provider", "?").replace("ExecutionProvider", "")
            by_op[(op, provider)] += e.get("dur", 0)
            count[(op, provider)] += 1
    run_us = sum(e.get("dur", 0) for e in runs)
    kernel_us = sum(by_op.values())
    print(f"{path}: {len(runs)} runs, {run_us / 1e3:.1f} ms in runs, {kernel_us / 1e3:.1f} ms in kernels (host-side op time)")
    for (op, provider), us in by_op.most_common(top):
        print(f"  {op:28s} {provider:6s} {us / 1e3:10.1f} ms  {count[(op, provider)]:7d} calls  {us / max(count[(op, provider)], 1):9.1f} us a call")
