#!/usr/bin/env python3
"""Train one round of TSST's policy (SFT on D+) or value model (regression on Dv).

  train.py --kind policy --base DIR|tiny-random --data dplus.json --image-root ROOT --out OUT
  train.py --kind value  --base DIR|tiny-random --data dv.json    --image-root ROOT --out OUT

Reads the LLaVA training JSON tsst writes (`labels/src/datasets.rs`: `conversations`
with one human and one gpt turn, `image` relative to the dataset root, `value` on Dv
records) and builds every text with the llava_v1 template inference uses
(`tools/export/prompt.py`, a byte copy of `labels/src/prompt.rs`):
- policy: the prompt is `SYSTEM USER: <human> ASSISTANT:`, the target ` <gpt></s>`;
  the loss is on the target tokens only.
- value: the text is `SYSTEM USER: <human> ASSISTANT: <gpt>` with no `</s>` appended,
  so the head reads the same last token as at inference; MSE of the head's output
  (LayerNorm -> Linear on the last hidden state) against `value`. With
  `--rank-weight W > 0`, a batch holds whole questions (the records sharing an image
  and a human turn), and the loss adds W times a pairwise ranking term over each
  question's pairs whose targets differ by more than `--rank-margin`: log(1 +
  exp(-(v_better - v_worse))). Regression alone can fit targets that say how far a
  chain got and still leave a question's right and wrong solutions in any order;
  search picks among one question's solutions.

LoRA (peft) on the language model's projections (r 128 / alpha 256 by default) or full
fine-tuning (`--full`); the value head is always trained in full. Seeded; the state
(adapters, head, optimizer, step) is saved every `--save-every` steps under
`OUT/state` and a run started again resumes from it. One JSON line per step on stdout
(`{"step", "epoch", "loss"}`). At the end the adapters are merged and `OUT/hf` is a
Hugging Face checkpoint (with `value_head.safetensors` for a value model) that
`tools/export/export_llava.py --checkpoint OUT/hf` exports; `--export` runs that export
into `OUT/onnx`.

`--base` may also be a model directory this tool exported (`OUT/onnx`, what the
registry names): its checkpoint `OUT/hf` is trained on; a shipped one without its
checkpoint (`models/demo/value`) is rebuilt from its ONNX files first
(`from_onnx.py`, into `OUT/base-hf`). `--base tiny-random` starts from the tiny random LLaVA of the committed fixtures (its
seed and tokenizer), so the loop runs on the CPU with no checkpoint.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EXPORT = os.path.join(HERE, "..", "export")
sys.path.insert(0, EXPORT)

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

import goldens as G  # noqa: E402
import preprocess  # noqa: E402
import prompt as P  # noqa: E402
from parts import ValueHead  # noqa: E402

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=["policy", "value"], required=True)
    ap.add_argument("--base", required=True, help="a Hugging Face LLaVA checkpoint directory, or tiny-random")
    ap.add_argument("--data", required=True, help="D+ (policy) or Dv (value) JSON written by tsst")
    ap.add_argument("--image-root", default=".", help="the dataset root the records' images are relative to")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--head-lr", type=float, default=1e-3, help="value head learning rate")
    ap.add_argument("--batch", type=int, default=4, help="records per optimizer step")
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    ap.add_argument("--lora-r", type=int, default=128)
    ap.add_argument("--lora-alpha", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=50, help="steps between saved states")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--export", action="store_true", help="export OUT/hf to OUT/onnx when done")
    ap.add_argument("--export-arg", action="append", default=[], metavar="ARG",
                    help="passed on to export_llava.py, repeatable, e.g. --export-arg=--dtype=fp16 "
                         "(default: fp32 for the CPU)")
    ap.add_argument("--micro-batch", type=int, default=4,
                    help="value records per forward pass (their gradients summed over the batch); "
                         "the ranking term passes the whole batch at once")
    ap.add_argument("--rank-weight", type=float, default=0.0,
                    help="value: weight of the within-question ranking term (0: regression only)")
    ap.add_argument("--rank-margin", type=float, default=0.05,
                    help="value: targets closer than this are not ranked")
    return ap.parse_args(argv)


def load_base(base, kind, rebuild_dir):
    """(model, tokenizer, special ids, head or None, tokenizer saver). An exported model
    directory without its checkpoint beside it is rebuilt under `rebuild_dir`."""
    from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerFast
    if base == "tiny-random":
        import tiny
        tok = tiny.train_tokenizer()
        model = tiny.build_tiny(tok, 0)
        special = {"bos": 1, "eos": 2, "pad": 0, "image": tok.token_to_id(P.IMAGE_TOKEN)}
        head = None
        if kind == "value":
            head = ValueHead(model.config.text_config.hidden_size)
            tiny.init_value_head_(head, 0)

        def save_tok(d):
            tok.save(os.path.join(d, "tokenizer.json"))
            PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                    unk_token="<unk>", pad_token="<unk>").save_pretrained(d)
        return model, tok, special, head, save_tok
    import export_llava
    if os.path.exists(os.path.join(base, "manifest.json")):
        # A model directory this tool exported (OUT/onnx): train from its checkpoint.
        hf = os.path.join(os.path.dirname(os.path.abspath(base)), "hf")
        if not os.path.exists(os.path.join(hf, "config.json")):
            # A shipped model (models/demo) comes without its checkpoint: rebuilt from
            # the ONNX files and checked against the directory's goldens.
            import from_onnx
            rebuilt = os.path.join(rebuild_dir, "base-hf")
            from_onnx.convert(base, rebuilt)
            print(json.dumps({"rebuilt_checkpoint": rebuilt, "from": base}), flush=True)
            hf = rebuilt
        base = hf
    model = LlavaForConditionalGeneration.from_pretrained(base, dtype=torch.float32, attn_implementation="eager")
    tok = Tokenizer.from_file(os.path.join(base, "tokenizer.json"))
    special = export_llava.special_ids_from_checkpoint(base, tok, model.config)
    head = None
    if kind == "value":
        head = ValueHead(model.config.text_config.hidden_size)
        path = os.path.join(base, "value_head.safetensors")
        if os.path.exists(path):
            head.load_state_dict(load_file(path))
        else:
            torch.nn.init.normal_(head.linear.weight, std=0.02)
            torch.nn.init.zeros_(head.linear.bias)

    def save_tok(d):
        import shutil
        import genai_route
        for name in genai_route.TOKENIZER_FILES:
            if os.path.exists(os.path.join(base, name)):
                shutil.copy(os.path.join(base, name), os.path.join(d, name))
    return model, tok, special, head, save_tok


class Examples:
    """The records as token ids, image pixels and targets."""

    def __init__(self, records, tok, special, image_root, image_size, n_img, kind):
        self.items = []
        pixels = {}
        for r in records:
            turns = {t["from"]: t["value"] for t in r["conversations"]}
            human, gpt = turns["human"], turns["gpt"]
            has_image = r.get("image") is not None
            prefix = P.conversation_from_prompt(human.removeprefix(P.IMAGE_TOKEN + "\n"), has_image, "")
            if kind == "policy":
                ids = self.encode(tok, special, prefix)
                target = tok.encode(" " + gpt, add_special_tokens=False).ids + [special["eos"]]
                labels = [-100] * len(ids) + target
                ids = ids + target
            else:
                text = P.conversation_from_prompt(human.removeprefix(P.IMAGE_TOKEN + "\n"), has_image, gpt)
                ids, labels = self.encode(tok, special, text), None
                if r.get("value") is None:
                    raise SystemExit(f"{r['id']}: a value record without 'value'")
            px = None
            if has_image:
                if r["image"] not in pixels:
                    with Image.open(os.path.join(image_root, r["image"])) as im:
                        pixels[r["image"]] = preprocess.preprocess(im, image_size)
                px = pixels[r["image"]]
                n_before = len(ids)
                ids = G.expand_image_tokens(ids, special["image"], n_img)
                if labels is not None:
                    labels = [-100] * (len(ids) - n_before) + labels
            self.items.append({"id": r["id"], "ids": ids, "labels": labels, "pixels": px, "value": r.get("value"),
                               "question": (r.get("image"), human)})

    @staticmethod
    def encode(tok, special, text):
        ids = tok.encode(text).ids
        return ids if ids and ids[0] == special["bos"] else [special["bos"]] + ids


def batches(items, size, seed, by_question):
    """One epoch's batches of item indices, shuffled by `seed`: records at random, or
    (`by_question`) whole questions at random, a question larger than a batch in parts."""
    rng = random.Random(seed)
    if not by_question:
        perm = list(range(len(items)))
        rng.shuffle(perm)
        return [perm[i:i + size] for i in range(0, len(perm), size)]
    groups = {}
    for i, item in enumerate(items):
        groups.setdefault(item["question"], []).append(i)
    order = list(groups.values())
    rng.shuffle(order)
    out, current = [], []
    for group in order:
        for part in [group[i:i + size] for i in range(0, len(group), size)]:
            if current and len(current) + len(part) > size:
                out.append(current)
                current = []
            current += part
    if current:
        out.append(current)
    return out


def pair_terms(values, targets, questions, margin):
    """For each pair (i, j) of one question with target i above target j by more than
    `margin`: values[i] - values[j]. Empty when there is no such pair. `questions` is a
    tensor of question indices."""
    same = questions[:, None] == questions[None, :]
    above = targets[:, None] > targets[None, :] + margin
    return (values[:, None] - values[None, :])[same & above]


def rank_loss(values, targets, questions, margin):
    """Mean of log(1 + exp(-(v_i - v_j))) over the pairs of one question with
    t_i > t_j + margin; None where the batch has no such pair."""
    index = {}
    q = torch.tensor([index.setdefault(x, len(index)) for x in questions], device=values.device)
    d = pair_terms(values, torch.tensor(targets, device=values.device).float(), q, margin)
    return torch.nn.functional.softplus(-d).mean() if len(d) else None


def value_of(inner, head, item, device, dtype):
    ids = torch.tensor([item["ids"]], device=device)
    kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if item["pixels"] is not None:
        kwargs["pixel_values"] = item["pixels"].to(device, dtype)
    hidden = inner(**kwargs).last_hidden_state[:, -1]
    return head(hidden.to(head.linear.weight.dtype)).float().reshape(())


def values_of(inner, head, items, device, dtype, pad):
    """The values of several items in one forward pass: right-padded, so that each
    item's real positions see only its own earlier ones (causal attention) and its
    last real position's state is what `value_of` reads. Items without an image, or a
    mix, go one at a time."""
    if len(items) == 1 or not all(item["pixels"] is not None for item in items):
        return torch.stack([value_of(inner, head, item, device, dtype) for item in items])
    width = max(len(item["ids"]) for item in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, item in enumerate(items):
        ids[i, :len(item["ids"])] = torch.tensor(item["ids"])
        mask[i, :len(item["ids"])] = 1
    pixels = torch.cat([item["pixels"].reshape(1, *item["pixels"].shape[-3:]) for item in items])
    out = inner(input_ids=ids.to(device), attention_mask=mask.to(device),
                pixel_values=pixels.to(device, dtype)).last_hidden_state
    last = torch.tensor([len(item["ids"]) - 1 for item in items], device=device)
    hidden = out[torch.arange(len(items), device=device), last]
    return head(hidden.to(head.linear.weight.dtype)).float().reshape(len(items))


def policy_loss(model, item, device, dtype):
    ids = torch.tensor([item["ids"]], device=device)
    kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if item["pixels"] is not None:
        kwargs["pixel_values"] = item["pixels"].to(device, dtype)
    return model(**kwargs, labels=torch.tensor([item["labels"]], device=device)).loss


def main(argv=None):
    a = parse_args(argv)
    random.seed(a.seed)
    torch.manual_seed(a.seed)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    os.makedirs(a.out, exist_ok=True)
    state_dir = os.path.join(a.out, "state")
    model, tok, special, head, save_tok = load_base(a.base, a.kind, a.out)
    cfg = model.config
    with open(a.data) as f:
        records = json.load(f)
    if not records:
        # A round whose search found nothing correct: the next version is this one.
        print(json.dumps({"warning": f"{a.data}: no records; the model is the base unchanged"}), flush=True)
    n_img = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    data = Examples(records, tok, special, a.image_root, cfg.vision_config.image_size, n_img, a.kind)

    # The LlavaModel under the LM head: peft injects its layers in place, so this
    # module computes with the adapters too (the value head reads its last state).
    inner = model.model
    for p in model.parameters():
        p.requires_grad_(a.full)
    if not a.full:
        from peft import LoraConfig, get_peft_model
        lora = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=0.0, bias="none",
                          # The language model's projections only, not the vision tower's.
                          target_modules=r".*language_model.*\.(" + "|".join(LORA_TARGETS) + ")")
        model = get_peft_model(model, lora)
    model.to(a.device, dtype)
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": a.lr}]
    if head is not None:
        head.to(a.device, dtype)
        groups.append({"params": list(head.parameters()), "lr": a.head_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)

    ranking = head is not None and a.rank_weight > 0
    order = []
    for epoch in range(a.epochs):
        order += [(epoch, b) for b in batches(data.items, a.batch, a.seed + epoch, ranking)]
    step = 0
    if os.path.exists(os.path.join(state_dir, "state.pt")):
        saved = torch.load(os.path.join(state_dir, "state.pt"), map_location=a.device)
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        for n, t in saved["model"].items():
            trainable[n].data.copy_(t)
        if head is not None:
            head.load_state_dict(saved["head"])
        opt.load_state_dict(saved["opt"])
        step = saved["step"]
        print(json.dumps({"resumed_at_step": step}), flush=True)

    model.train()
    t0 = time.time()
    while step < len(order):
        epoch, batch = order[step]
        opt.zero_grad()
        total, ranked = 0.0, None
        if ranking:
            # The whole batch in one pass: the ranking term couples its items.
            items = [data.items[i] for i in batch]
            values = values_of(inner, head, items, a.device, dtype, special["pad"])
            targets = [item["value"] for item in items]
            loss = torch.nn.functional.mse_loss(values, torch.tensor(targets, device=a.device).float())
            rank = rank_loss(values, targets, [item["question"] for item in items], a.rank_margin)
            if rank is not None:
                ranked = round(rank.item(), 6)
                loss = loss + a.rank_weight * rank
            loss.backward()
            total = loss.item()
        elif head is not None:
            # Passes of --micro-batch items, their gradients summed: the batch's mean.
            for at in range(0, len(batch), a.micro_batch):
                items = [data.items[i] for i in batch[at:at + a.micro_batch]]
                values = values_of(inner, head, items, a.device, dtype, special["pad"])
                targets = torch.tensor([item["value"] for item in items], device=a.device).float()
                loss = torch.nn.functional.mse_loss(values, targets, reduction="sum") / len(batch)
                loss.backward()
                total += loss.item()
        else:
            for i in batch:
                loss = policy_loss(model, data.items[i], a.device, dtype) / len(batch)
                loss.backward()
                total += loss.item()
        opt.step()
        step += 1
        line = {"step": step, "of": len(order), "epoch": epoch, "loss": round(total, 6)}
        if ranked is not None:
            line["rank"] = ranked
        print(json.dumps(line), flush=True)
        if step % a.save_every == 0 or step == len(order):
            save_state(state_dir, model, head, opt, step)

    model.eval()
    if not a.full:
        model = model.merge_and_unload()
    hf = os.path.join(a.out, "hf")
    os.makedirs(hf, exist_ok=True)
    model.to("cpu", torch.float32).save_pretrained(hf, safe_serialization=True)
    save_tok(hf)
    if head is not None:
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in head.state_dict().items()},
                  os.path.join(hf, "value_head.safetensors"))
    with open(os.path.join(a.out, "train.json"), "w") as f:
        json.dump({"kind": a.kind, "base": a.base, "data": a.data, "records": len(records), "steps": len(order),
                   "seconds": round(time.time() - t0, 1), "lora": None if a.full else
                   {"r": a.lora_r, "alpha": a.lora_alpha}, "seed": a.seed,
                   "rank_weight": a.rank_weight if head is not None else None}, f, indent=1)
    if a.export:
        cmd = [sys.executable, os.path.join(EXPORT, "export_llava.py"), "--checkpoint", hf, "--kind", a.kind,
               "--dtype", "fp32", "--out", os.path.join(a.out, "onnx")] + a.export_arg
        subprocess.run(cmd, check=True)
    return 0


def save_state(state_dir, model, head, opt, step):
    """Trainable weights, head, optimizer and step, written atomically."""
    os.makedirs(state_dir, exist_ok=True)
    tmp = os.path.join(state_dir, "state.pt.tmp")
    torch.save({"model": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
                "head": head.state_dict() if head is not None else None,
                "opt": opt.state_dict(), "step": step}, tmp)
    os.replace(tmp, os.path.join(state_dir, "state.pt"))


if __name__ == "__main__":
    sys.exit(main())
