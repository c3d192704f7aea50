"""Does a policy's letter follow its step 2? Teacher-forced on a pack's held-out chains:
for each, the greedy letter after the chain as it is (`real`: the right letter) and after
the chain with step 2 concluding on another option (`followed`, warmup.followed: does the
letter move to that option's?). A policy whose answer ignores its chain scores near 0 on
`followed`; one that reads the letter off step 2 scores near 1.

    python3 tools/train/follow_check.py --pack PACK CHECKPOINT [CHECKPOINT ...] [--n 150]

A checkpoint is a warmup.py or train.py policy folder, or `from_onnx.py`'s rebuild.
"""
import argparse
import gzip
import json
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import small_llava as S  # noqa: E402
import warmup as W  # noqa: E402


def letter_accuracy(model, data, images, letters):
    """Share of items whose greedy token at the final letter's position is the target's."""
    right = 0
    for item in data.items:
        ids, mask, _, px = W.policy_batch([item], images, "cpu")
        target = item["target"]
        k = max(i for i, t in enumerate(target) if t in letters)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=px).logits
        right += int(logits[0, len(item["prefix"]) + k - 1].argmax()) == target[k]
    return round(right / max(1, len(data.items)), 3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--pack", required=True)
    ap.add_argument("--n", type=int, default=150, help="held-out chains (policy_val)")
    a = ap.parse_args(argv)
    from tokenizers import Tokenizer
    from transformers import LlavaForConditionalGeneration
    tok = Tokenizer.from_file(os.path.join(a.pack, "tokenizer", "tokenizer.json"))
    special = S.special_ids(tok)
    letters = {tok.token_to_id(x) for x in "ABCDE"} - {None}
    with gzip.open(os.path.join(a.pack, "policy_val.json.gz"), "rt") as f:
        real = json.load(f)[:a.n]
    followed = [x for x in (W.followed(r, random.Random(i)) for i, r in enumerate(real)) if x]
    images = S.Images(os.path.join(a.pack, "images.npz"), "cpu")
    for path in a.checkpoints:
        model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
        n_img = S.n_image_tokens(model.config)
        out = {name: letter_accuracy(model, W.Data(recs, tok, special, images, n_img, "policy"), images, letters)
               for name, recs in (("real", real), ("followed", followed))}
        print(json.dumps({"checkpoint": path, "chains": len(real), **out}))


if __name__ == "__main__":
    main()
