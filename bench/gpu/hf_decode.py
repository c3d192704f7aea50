#!/usr/bin/env python3
"""PyTorch's decode step on the same model as tsst's `timing` (issue 10, "Generation"):
Hugging Face `generate` in fp16 eager with its dynamic cache, and the strongest setup
transformers offers, a static cache whose decode steps `generate` compiles with
torch.compile (CUDA graphs), at batch 1 / 16 / 64 over one prompt with its image.

The policy is rebuilt from the export's own arguments (reference_loop.rebuild: the same
random weights and logit bias as the ONNX decoder). The prompt is the first synthetic
question's, as tsst's timing tool builds it (576 image tokens at the 7B shape). Each
setting runs greedy `generate` twice per batch, for WARMUP and WARMUP + STEPS new tokens
(end of sequence suppressed); the step is the difference over STEPS, so the prefill and
the first steps drop out. The static cache is as long for both runs (a stopping rule
ends the shorter one), so the compiled graphs are built once per batch size, in a
warm-up run not timed.

  hf_decode.py --policy DIR --export-args "..." --dataset-root synth [--batch 1,16,64]
      [--steps 32] [--warmup 8] [--modes eager,static] [--device cuda]
Prints one JSON line per (mode, batch): step_ms, tok_s and whether the steps ran
compiled.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import StoppingCriteria, StoppingCriteriaList  # noqa: E402

import reference_loop as R  # noqa: E402  (also puts tools/export on the path)
import goldens as G  # noqa: E402
import preprocess  # noqa: E402
import prompt as P  # noqa: E402


class After(StoppingCriteria):
    """Ends every row once `n` tokens are past the prompt."""

    def __init__(self, prompt_len, n):
        self.end = prompt_len + n

    def __call__(self, input_ids, scores, **kwargs):
        done = input_ids.shape[1] >= self.end
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="the exported policy directory")
    ap.add_argument("--export-args", required=True, help="the model arguments the export was run with")
    ap.add_argument("--dataset-root", required=True, help="a `tsst data synth` folder (its first train question)")
    ap.add_argument("--batch", default="1,16,64")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--modes", default="eager,static")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()

    model, tok, special, _ = R.rebuild(a.export_args, "policy", a.policy, a.device)
    with open(os.path.join(a.policy, "manifest.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(a.dataset_root, "aokvqa_v1p0_train.json")) as f:
        q = json.load(f)[0]
    text = P.conversation(q["question"], q["choices"], None, True, "")
    ids = tok.encode(text).ids
    if not ids or ids[0] != special["bos"]:
        ids = [special["bos"]] + ids
    ids = G.expand_image_tokens(ids, special["image"], manifest["vision"]["num_image_tokens"])
    image = os.path.join(a.dataset_root, "train2017", f"{q['image_id']:012d}.jpg")
    pixels = preprocess.preprocess(Image.open(image), manifest["vision"]["image_size"]).to(a.device, model.dtype)
    cuda = a.device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    @torch.no_grad()
    def generate(batch, new, total, static):
        x = torch.tensor([ids] * batch, device=a.device)
        kwargs = dict(input_ids=x, pixel_values=pixels.expand(batch, *pixels.shape[1:]),
                      attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=total,
                      min_new_tokens=total, pad_token_id=special["pad"], eos_token_id=special["eos"],
                      stopping_criteria=StoppingCriteriaList([After(len(ids), new)]))
        if static:
            kwargs["cache_implementation"] = "static"
        sync()
        t = time.perf_counter()
        out = model.generate(**kwargs)
        sync()
        assert out.shape[1] == len(ids) + new, (out.shape, len(ids), new)
        return time.perf_counter() - t

    total = a.warmup + a.steps
    device = torch.cuda.get_device_name() if cuda else "cpu"
    for mode in a.modes.split(","):
        static = mode == "static"
        for batch in [int(b) for b in a.batch.split(",")]:
            try:
                generate(batch, total, total, static)  # warm-up (and compilation)
                short = generate(batch, a.warmup, total, static)
                long = generate(batch, total, total, static)
            except torch.OutOfMemoryError as e:
                print(json.dumps({"mode": mode, "batch": batch, "error": str(e)[:200]}), flush=True)
                torch.cuda.empty_cache()
                continue
            step = (long - short) / a.steps
            print(json.dumps({"system": "transformers generate", "mode": mode, "batch": batch,
                              "prompt_len": len(ids), "step_ms": round(step * 1e3, 3),
                              "tok_s": round(batch / step, 1), "device": device,
                              # whether generate compiled its decode steps (it does for a
                              # static cache on a GPU)
                              "compiled": hasattr(model, "_compiled_call"),
                              "torch": torch.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
