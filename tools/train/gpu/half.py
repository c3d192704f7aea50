# Re-save a warmup.py output's checkpoints in fp16 and tar them (what comes back must be small).
import os, sys, tarfile, shutil
from safetensors.torch import load_file, save_file
src, dst = sys.argv[1], sys.argv[2]
with tarfile.open(dst, "w:gz") as t:
    for name in ("policy", "value"):
        d = os.path.join(src, name)
        if not os.path.isdir(d):
            continue
        for f in os.listdir(d):
            p = os.path.join(d, f)
            if f.endswith(".safetensors"):
                sd = load_file(p)
                save_file({k: v.half().contiguous() for k, v in sd.items()}, p, metadata={"format": "pt"})
        t.add(d, arcname=name)
    for f in ("log.jsonl", "summary.json"):
        if os.path.exists(os.path.join(src, f)):
            t.add(os.path.join(src, f), arcname=f)
