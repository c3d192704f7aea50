#!/usr/bin/env python3
"""Warm-up (round 0) training of the small LLaVA (`small_llava.py`) from random init.

  warmup.py prepare --data-root data/synth-small --warmup runs/small/warmup \
      --warmup-val runs/small/warmup-val --warmup-test runs/small/warmup-test --out runs/small/pack
  warmup.py train --pack runs/small/pack --out runs/small/train [--steps 6000 --max-minutes 3.5 ...]

`prepare` (CPU, here) trains the tokenizer on the benchmark's text, packs every image
the records name as the uint8 array the runtime's preprocessing gives (pad, PIL bicubic
to 64 px, crop) into one .npz, and gzips the records: what a GPU machine needs, without
the JPEGs or Rust. The records are the ones `tsst warmup` writes
(`warmup_policy.json`, `warmup_value.json`: the benchmark's grounded chains), so the
training text is the inference text.

`train` (GPU or CPU):
1. the policy, full fine-tuning from scratch, on the training split's chains in the
   llava_v1 template exactly as `train.py` builds them (prompt `SYSTEM USER: <image>\\n
   <question> ASSISTANT:`, target ` <chain></s>`, loss on the target only); every
   `--eval-every` steps the greedy accuracy (`Final Answer: (X)` parsed from a greedy
   decode) on `--eval-n` held-out val questions; the checkpoint kept is the most
   accurate one inside `--band` (0.6-0.85: headroom for search), and training stops
   once two evaluations in a row are above the band;
2. the value model: the kept policy plus the LayerNorm -> Linear head of `train.py
   --kind value`, trained on the linearly scored prefixes (`warmup_value.json`; text
   `SYSTEM USER: ... ASSISTANT: <partial>` without `</s>`, the head on the last token),
   MSE, with the held-out fit logged;
3. the kept policy's greedy accuracy on the test split (not used for selection).
Each is saved with `save_pretrained` (+ tokenizer, + `value_head.safetensors`) under
OUT/policy and OUT/value, loadable by `export_llava.py --checkpoint` and `train.py
--base`; `--tar DIR` also writes DIR/policy.tar and DIR/value.tar (few files to carry
back). Seeded. One JSON line per log/eval on stdout and in OUT/log.jsonl.
"""
import argparse
import gzip
import io
import json
import math
import os
import random
import re
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "export"))

import torch  # noqa: E402

import goldens as G  # noqa: E402
import prompt as P  # noqa: E402
import small_llava as S  # noqa: E402
import train as T  # noqa: E402
from parts import ValueHead  # noqa: E402

ANSWER = re.compile(r"Final Answer:\s*\(?([A-Z])\)?")


def read_records(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def write_gz(records, path):
    with gzip.open(path, "wt") as f:
        json.dump(records, f)


# ----------------------------------------------------------------------------- prepare

def prepare(a):
    os.makedirs(a.out, exist_ok=True)
    policy = read_records(os.path.join(a.warmup, "warmup_policy.json"))
    value = read_records(os.path.join(a.warmup, "warmup_value.json"))
    train_aok = read_records(os.path.join(a.data_root, "aokvqa_v1p0_train.json"))
    tok = S.train_tokenizer(S.corpus(policy, train_aok), a.vocab)
    S.save_tokenizer(tok, os.path.join(a.out, "tokenizer"))
    sets = {"policy_train": policy, "value_train": value}
    for name, d in (("val", a.warmup_val), ("test", a.warmup_test)):
        if d:
            sets[f"policy_{name}"] = read_records(os.path.join(d, "warmup_policy.json"))
            sets[f"value_{name}"] = read_records(os.path.join(d, "warmup_value.json"))
    if a.contrasts:
        # Beside each question's grounded prefixes, its chains with one fact or the final
        # letter made false (valued 0): what a value model must learn to tell apart.
        from contrasts import contrasts
        for name in ("value_train", "value_val"):
            if name in sets:
                # Each question's records together, so the first N val records are whole questions.
                sets[name] = sorted(sets[name] + contrasts(sets[name], random.Random(a.contrasts_seed)),
                                    key=lambda r: r["id"].split("/")[1])
    images = set()
    for name, recs in sets.items():
        write_gz(recs, os.path.join(a.out, f"{name}.json.gz"))
        images.update(r["image"] for r in recs if r.get("image"))
    n = S.pack_images(a.data_root, images, a.image_size, os.path.join(a.out, "images.npz"))
    unk = sum(tok.encode(t).ids.count(0) for t in S.records_text(sets.get("policy_val", [])))
    info = {"vocab": tok.get_vocab_size(), "images": n, "image_size": a.image_size,
            "records": {k: len(v) for k, v in sets.items()}, "unk_in_val": unk}
    with open(os.path.join(a.out, "pack.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


# ----------------------------------------------------------------------------- data

class Data:
    """Records as token ids (image token expanded), the image index, and the answer."""

    def __init__(self, records, tok, special, images, n_img, kind):
        self.items = []
        for r in records:
            turns = {t["from"]: t["value"] for t in r["conversations"]}
            human = turns["human"].removeprefix(P.IMAGE_TOKEN + "\n")
            gpt = turns["gpt"]
            has_image = r.get("image") is not None
            # As tools/train/train.py's Examples: the prefix encoded with <s>, the target
            # ` <gpt></s>` encoded on its own, loss on the target only.
            if kind == "policy":
                prefix = encode(tok, special, P.conversation_from_prompt(human, has_image, ""))
                target = tok.encode(" " + gpt, add_special_tokens=False).ids + [special["eos"]]
                # `answer_only`: the loss from the final answer on (the chain before it is false).
                cut = gpt.find("Final Answer") if r.get("answer_only") else -1
                loss_from = len(tok.encode(" " + gpt[:cut].rstrip(), add_special_tokens=False).ids) if cut > 0 else 0
            else:
                prefix = encode(tok, special, P.conversation_from_prompt(human, has_image, gpt))
                target, loss_from = [], 0
            prefix = G.expand_image_tokens(prefix, special["image"], n_img)
            m = ANSWER.search(gpt)
            self.items.append({"prefix": prefix, "target": target, "loss_from": loss_from, "image": images.index[r["image"]],
                               "value": r.get("value"), "answer": m.group(1) if m else None, "id": r["id"],
                               # `<dataset>/<question>/...`: what the ranking term groups by
                               "question": r["id"].split("/")[1]})


OPTION = re.compile(r"^([A-E])\. (.+)$", re.M)


def chain_parts(record):
    """A chain record's prompt, chain, its prompt's options [(letter, text)] and the
    final-answer match (None without one)."""
    turns = {t["from"]: t["value"] for t in record["conversations"]}
    human, gpt = turns["human"], turns["gpt"]
    return human, gpt, OPTION.findall(human), ANSWER.search(gpt)


def with_chain(record, human, gpt, **extra):
    return dict(record, conversations=[{"from": "human", "value": human}, {"from": "gpt", "value": gpt}], **extra)


def shuffled(record, rng):
    """`record` with its prompt's options in another order and its chain's final letter
    moved with its option: the same scene and chain, another letter. The demo policy
    got most of its answers wrong by naming the right option with the wrong letter
    (bench/RESULTS.md, "What the demo policy gets wrong"); these copies make the letter
    something to look up. None when the record has no options or no final letter."""
    human, gpt, options, m = chain_parts(record)
    texts = [t for _, t in options]
    if len(set(texts)) < 2 or not m or m.group(1) not in dict(options):
        return None
    order = texts[:]
    while order == texts:
        rng.shuffle(order)
    letters = "ABCDE"
    lines = iter(f"{letters[i]}. {t}" for i, t in enumerate(order))
    new_human = OPTION.sub(lambda _: next(lines), human)
    letter = letters[order.index(dict(options)[m.group(1)])]
    return with_chain(record, new_human, gpt[:m.start(1)] + letter + gpt[m.end(1):])


def with_copies(records, copies, make, rng, tag):
    """Each record, then up to `copies` copies of it made by `make(record, rng)` (None
    makes none); a copy's id is the record's (the question's) with `/<tag><k>` added."""
    out = []
    for r in records:
        out.append(r)
        for k in range(copies):
            c = make(r, rng)
            if c is not None:
                out.append(dict(c, id=f"{r['id']}/{tag}{k}"))
    return out


def followed(record, rng):
    """`record` with step 2 concluding on another option (each mention of the right
    option's text in step 2 replaced by it) and the final letter that option's, marked
    `answer_only`: trained with the loss on the final answer alone, it teaches the letter
    to follow the chain without teaching false chains. The demo policy's letter often
    does not follow its own step 2: 31 of its 174 direct chains whose step 2 concludes on
    the right option end on another letter (bench/RESULTS.md, "Letters that do not follow
    the chain"), a mistake that a value model checking the chain's facts does not see.
    None when the record has no options, no final letter or no step 2 naming it."""
    human, gpt, options, m = chain_parts(record)
    options = dict(options)
    start = gpt.find("Step 2:") + len("Step 2:")
    if not m or start < len("Step 2:") or m.group(1) not in options:
        return None
    right = options[m.group(1)]
    word = re.compile(r"\b" + re.escape(right) + r"\b", re.IGNORECASE)
    step2 = gpt[start:m.start()]
    others = [k for k, t in options.items() if t != right and not word.search(t)]
    if not word.search(step2) or not others:
        return None
    letter = rng.choice(others)
    other = options[letter]
    new_step2 = word.sub(lambda w: other[:1].upper() + other[1:] if w.group(0)[:1].isupper() else other, step2)
    return with_chain(record, human, gpt[:start] + new_step2 + gpt[m.start():m.start(1)] + letter + gpt[m.end(1):],
                      answer_only=True)


def encode(tok, special, text):
    ids = tok.encode(text).ids
    return ids if ids and ids[0] == special["bos"] else [special["bos"]] + ids


def policy_batch(items, images, device):
    """Right-padded ids, mask and labels (-100 off the target)."""
    seqs = [it["prefix"] + it["target"] for it in items]
    n = max(map(len, seqs))
    ids = torch.zeros(len(items), n, dtype=torch.long)
    mask = torch.zeros(len(items), n, dtype=torch.long)
    labels = torch.full((len(items), n), -100, dtype=torch.long)
    for i, (it, s) in enumerate(zip(items, seqs)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
        start = len(it["prefix"]) + it["loss_from"]
        labels[i, start:len(s)] = torch.tensor(it["target"][it["loss_from"]:])
    px = images.pixels(torch.tensor([it["image"] for it in items], device=images.u8.device))
    return ids.to(device), mask.to(device), labels.to(device), px


def value_batch(items, images, device):
    n = max(len(it["prefix"]) for it in items)
    ids = torch.zeros(len(items), n, dtype=torch.long)
    mask = torch.zeros(len(items), n, dtype=torch.long)
    for i, it in enumerate(items):
        ids[i, :len(it["prefix"])] = torch.tensor(it["prefix"])
        mask[i, :len(it["prefix"])] = 1
    last = mask.sum(1) - 1
    px = images.pixels(torch.tensor([it["image"] for it in items], device=images.u8.device))
    target = torch.tensor([float(it["value"]) for it in items])
    return ids.to(device), mask.to(device), last.to(device), px, target.to(device)


# ----------------------------------------------------------------------------- greedy

@torch.no_grad()
def greedy(model, items, images, special, device, max_new, batch, amp):
    """Greedy decodes (KV cache, left padding with explicit positions), stopping at </s>.
    Returns the new ids per item (without the </s>)."""
    model.eval()
    outs = []
    for k in range(0, len(items), batch):
        chunk = items[k:k + batch]
        n = max(len(it["prefix"]) for it in chunk)
        ids = torch.zeros(len(chunk), n, dtype=torch.long)
        mask = torch.zeros(len(chunk), n, dtype=torch.long)
        for i, it in enumerate(chunk):
            ids[i, n - len(it["prefix"]):] = torch.tensor(it["prefix"])
            mask[i, n - len(it["prefix"]):] = 1
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        px = images.pixels(torch.tensor([it["image"] for it in chunk], device=images.u8.device)).to(device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, pixel_values=px, use_cache=True)
        new = torch.zeros(len(chunk), 0, dtype=torch.long, device=device)
        done = torch.zeros(len(chunk), dtype=torch.bool, device=device)
        pos = pos[:, -1:]
        for _ in range(max_new):
            nxt = out.logits[:, -1].float().argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, special["eos"]), nxt)
            new = torch.cat([new, nxt[:, None]], 1)
            done |= nxt == special["eos"]
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            pos = pos + 1
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                            **G._cache_kwargs(model, out))
        for row in new.tolist():
            outs.append(row[:row.index(special["eos"])] if special["eos"] in row else row)
    return outs


@torch.no_grad()
def image_use(model, items, images, device, amp):
    """Held-out target loss with each item's own image and with another item's: equal
    losses mean the model does not look at the image (yet)."""
    model.eval()
    ids, mask, labels, px = policy_batch(items, images, device)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
        own = model(input_ids=ids, attention_mask=mask, pixel_values=px, labels=labels).loss
        other = model(input_ids=ids, attention_mask=mask, pixel_values=px.roll(1, 0), labels=labels).loss
    return {"val_loss": round(own.item(), 4), "val_loss_other_images": round(other.item(), 4)}


def accuracy(model, tok, items, images, special, device, max_new, batch, amp, show=0):
    t0 = time.time()
    outs = greedy(model, items, images, special, device, max_new, batch, amp)
    right = formatted = exact = 0
    samples = []
    for it, ids in zip(items, outs):
        text = tok.decode(ids, skip_special_tokens=True)
        m = ANSWER.search(text)
        formatted += m is not None
        right += m is not None and m.group(1) == it["answer"]
        exact += ids == it["target"][:-1]
        if len(samples) < show:
            samples.append({"id": it["id"], "text": text, "answer": it["answer"]})
    n = max(len(items), 1)
    return {"acc": right / n, "formatted": formatted / n, "exact_chain": exact / n, "n": len(items),
            "eval_s": round(time.time() - t0, 1), "samples": samples}


# ----------------------------------------------------------------------------- train

class Logger:
    def __init__(self, path):
        self.f = open(path, "a")

    def __call__(self, **rec):
        line = json.dumps(rec)
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()


def lr_at(step, frac, peak, warm):
    """Linear warm-up over `warm` steps, then cosine to a tenth of `peak` over `frac`
    (0..1: the fraction of the run done, by steps or by wall-clock time)."""
    if step < warm:
        return peak * (step + 1) / warm
    t = min(1.0, max(0.0, frac))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train_policy(a, model, tok, special, images, data, val, log, device, amp, deadline):
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), weight_decay=0.01)
    rng = random.Random(a.seed)
    order = []
    best = None  # (acc, step, state dict on the CPU, eval)
    above = 0
    t0 = time.time()
    step = 0
    running = []
    budget = max(1e-9, deadline - t0)
    while step < a.steps:
        if not order:
            order = list(range(len(data.items)))
            rng.shuffle(order)
        idx, order = order[:a.batch], order[a.batch:]
        model.train()
        ids, mask, labels, px = policy_batch([data.items[i] for i in idx], images, device)
        for g in opt.param_groups:
            # The cosine runs over steps or over the time budget, whichever ends first
            # (a step count measured early is off: the first steps pay for warm-up).
            g["lr"] = lr_at(step, max(step / a.steps, (time.time() - t0) / budget), a.lr, a.warmup_steps)
        with torch.autocast(device_type="cpu" if device == "cpu" else "cuda", dtype=torch.bfloat16,
                            enabled=amp or (device == "cpu" and a.cpu_bf16)):
            loss = model(input_ids=ids, attention_mask=mask, pixel_values=px, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        running.append(loss.item() if step % 10 == 0 or step <= 10 else None)
        out_of_time = time.time() > deadline
        if step % a.log_every == 0:
            vals = [x for x in running if x is not None]
            log(stage="policy", step=step, loss=round(sum(vals) / max(1, len(vals)), 4),
                lr=round(opt.param_groups[0]["lr"], 6), elapsed=round(time.time() - t0, 1))
            running = []
        if step % a.eval_every == 0 or step == a.steps or out_of_time:
            ev = accuracy(model, tok, val, images, special, device, a.max_new, a.eval_batch, amp, show=2)
            ev.update(image_use(model, val[:64], images, device, amp))
            inside = a.band[0] <= ev["acc"] <= a.band[1]
            log(stage="policy_eval", step=step, loss=round(loss.item(), 4), elapsed=round(time.time() - t0, 1),
                in_band=inside, **ev)
            # Kept: the most accurate evaluation at or under --prefer-max (a margin under the
            # band's top, since the val estimate is noisy), else the most accurate in the band.
            key = (ev["acc"] <= a.prefer_max, ev["acc"])
            if inside and (best is None or key >= best[0]):
                best = (key, step, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}, ev)
            above = above + 1 if ev["acc"] > a.band[1] else 0
            if above >= 2:
                log(stage="policy", note=f"stopped: two evaluations above the band at step {step}")
                break
        if out_of_time:
            log(stage="policy", note=f"stopped: time budget at step {step}")
            break
    if best is None:
        log(stage="policy", note="no evaluation inside the band; keeping the last weights")
        return step, None
    model.load_state_dict(best[2])
    log(stage="policy", note=f"kept step {best[1]} (val acc {best[3]['acc']:.3f})")
    return step, best[1]


def train_value(a, policy_state, model_builder, tok, special, images, data, val, log, device, amp, deadline):
    model = model_builder()
    model.load_state_dict(policy_state)
    model.to(device)
    head = ValueHead(model.config.text_config.hidden_size).to(device)
    torch.nn.init.normal_(head.linear.weight, std=0.02)
    torch.nn.init.zeros_(head.linear.bias)
    inner = model.model
    opt = torch.optim.AdamW([{"params": inner.parameters(), "lr": a.value_lr},
                             {"params": head.parameters(), "lr": a.value_head_lr}], weight_decay=0.0)
    peaks = [g["lr"] for g in opt.param_groups]
    vbudget = max(1e-9, deadline - time.time())
    rng = random.Random(a.seed + 1)
    order = []
    t0 = time.time()
    qindex = {}

    def questions_of(items):
        return torch.tensor([qindex.setdefault(it["question"], len(qindex)) for it in items], device=device)

    val_questions = questions_of(val).cpu()

    def evaluate():
        model.eval()
        preds, targets = [], []
        with torch.no_grad():
            for k in range(0, len(val), a.eval_batch):
                ids, mask, last, px, target = value_batch(val[k:k + a.eval_batch], images, device)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                    h = inner(input_ids=ids, attention_mask=mask, pixel_values=px).last_hidden_state
                h = h[torch.arange(len(last), device=device), last].float()
                preds.append(head(h).float().cpu())
                targets.append(target.cpu())
        p, t = torch.cat(preds), torch.cat(targets)
        mse = float(((p - t) ** 2).mean())
        base = float(((t - t.mean()) ** 2).mean())
        corr = float(torch.corrcoef(torch.stack([p, t]))[0, 1]) if len(p) > 1 else float("nan")
        # Within a question: how often the record with the higher target is valued higher
        # (0.5 is chance). With --contrasts these pairs include each false chain.
        d = T.pair_terms(p, t, val_questions, 0.05)
        pair_acc = round(float((d > 0).float().mean()), 4) if len(d) else None
        return {"val_mse": round(mse, 5), "val_mse_of_mean": round(base, 5), "val_r2": round(1 - mse / base, 4),
                "val_corr": round(corr, 4), "val_pair_acc": pair_acc, "pairs": len(d), "n": len(p)}

    step = 0
    for step in range(1, a.value_steps + 1):
        if not order:
            # Whole questions in a batch when the ranking term compares their records.
            order = T.batches(data.items, a.batch, rng.randrange(1 << 30), a.value_rank_weight > 0)
        idx, order = order[0], order[1:]
        model.train()
        ids, mask, last, px, target = value_batch([data.items[i] for i in idx], images, device)
        for g, peak in zip(opt.param_groups, peaks):
            g["lr"] = lr_at(step - 1, max(step / a.value_steps, (time.time() - t0) / vbudget), peak, 50)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            h = inner(input_ids=ids, attention_mask=mask, pixel_values=px).last_hidden_state
        h = h[torch.arange(len(last), device=device), last].float()
        values = head(h).float()
        loss = torch.nn.functional.mse_loss(values, target.float())
        if a.value_rank_weight > 0:
            d = T.pair_terms(values, target.float(), questions_of([data.items[i] for i in idx]), 0.05)
            if len(d):
                loss = loss + a.value_rank_weight * torch.nn.functional.softplus(-d).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(head.parameters()), 1.0)
        opt.step()
        if step % a.log_every == 0:
            log(stage="value", step=step, loss=round(loss.item(), 5), elapsed=round(time.time() - t0, 1))
        if step % a.value_eval_every == 0 and step != a.value_steps:
            log(stage="value_eval", step=step, **evaluate())
        if time.time() > deadline:
            log(stage="value", note=f"stopped: time budget at step {step}")
            break
    log(stage="value_eval", step=step, final=True, **evaluate())
    return model, head, step


def save_checkpoint(model, tok, d, head=None):
    from safetensors.torch import save_file
    os.makedirs(d, exist_ok=True)
    model.to("cpu", torch.float32)
    model.config._attn_implementation = "eager"
    model.save_pretrained(d, safe_serialization=True)
    S.save_tokenizer(tok, d)
    if head is not None:
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in head.state_dict().items()},
                  os.path.join(d, "value_head.safetensors"))


def tar_dir(d, path):
    with tarfile.open(path, "w") as t:
        t.add(d, arcname=os.path.basename(d))


def train(a):
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = a.device
    amp = device.startswith("cuda") and a.bf16
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.makedirs(a.out, exist_ok=True)
    log = Logger(os.path.join(a.out, "log.jsonl"))
    t_start = time.time()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(a.pack, "tokenizer", "tokenizer.json"))
    special = S.special_ids(tok)
    shape = json.loads(a.shape) if a.shape else {}

    def builder():
        return S.build(tok, seed=a.seed, attn="sdpa", **shape)

    model = builder()
    if a.init:
        # Continue from a checkpoint this tool wrote (e.g. a run cut short elsewhere).
        from transformers import LlavaForConditionalGeneration
        model.load_state_dict(LlavaForConditionalGeneration.from_pretrained(a.init, dtype=torch.float32).state_dict())
    model = model.to(device)
    n_img = S.n_image_tokens(model.config)
    images = S.Images(os.path.join(a.pack, "images.npz"), device)
    recs = lambda name: read_records(os.path.join(a.pack, f"{name}.json.gz"))  # noqa: E731
    ptrain = recs("policy_train")
    if a.train_n:
        ptrain = ptrain[:a.train_n]
    ptrain_all = with_copies(ptrain, a.shuffle_options, shuffled, random.Random(a.seed), "shuffled")
    ptrain_all = with_copies(ptrain_all, a.follow_chain, followed, random.Random(a.seed + 7), "followed")
    data = Data(ptrain_all, tok, special, images, n_img, "policy")
    val = Data(recs("policy_val")[:a.eval_n], tok, special, images, n_img, "policy").items
    lens = [len(it["prefix"]) + len(it["target"]) for it in data.items]
    log(stage="setup", device=device, torch=torch.__version__, params=sum(p.numel() for p in model.parameters()),
        train_records=len(data.items), val_questions=len(val), max_len=max(lens), image_tokens=n_img,
        config=shape or "default", args=vars(a))

    deadline = t_start + a.max_minutes * 60
    steps_done, kept = train_policy(a, model, tok, special, images, data, val, log, device, amp, deadline)
    policy_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    summary = {"policy_steps": steps_done, "policy_kept_step": kept}
    if a.test_n:
        test = Data(recs("policy_test")[:a.test_n], tok, special, images, n_img, "policy").items
        ev = accuracy(model, tok, test, images, special, device, a.max_new, a.eval_batch, amp, show=3)
        log(stage="policy_test", step=kept or steps_done, **ev)
        summary["test"] = {k: v for k, v in ev.items() if k != "samples"}
    save_checkpoint(model, tok, os.path.join(a.out, "policy"))
    del model
    if a.value_steps:
        vtrain = recs("value_train")
        if a.train_n:
            # The value records of the policy's questions only (ids `<dataset>/<question>/...`):
            # the rest of the split stays unseen for self-training.
            kept = {r["id"].split("/")[1] for r in ptrain}
            vtrain = [r for r in vtrain if r["id"].split("/")[1] in kept]
        if a.value_n and len(vtrain) > a.value_n:
            # A seeded sample: the value stage sees about value_steps * batch records.
            vtrain = random.Random(a.seed + 2).sample(vtrain, a.value_n)
        vdata = Data(vtrain, tok, special, images, n_img, "value")
        vval = Data(recs("value_val")[:a.value_eval_n], tok, special, images, n_img, "value").items
        vdeadline = time.time() + a.value_max_minutes * 60
        vmodel, head, vsteps = train_value(a, policy_state, builder, tok, special, images, vdata, vval, log, device,
                                           amp, vdeadline)
        summary["value_steps"] = vsteps
        save_checkpoint(vmodel, tok, os.path.join(a.out, "value"), head)
    summary["seconds"] = round(time.time() - t_start, 1)
    log(stage="done", **summary)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    if a.tar:
        os.makedirs(a.tar, exist_ok=True)
        for name in ("policy", "value"):
            if os.path.isdir(os.path.join(a.out, name)):
                tar_dir(os.path.join(a.out, name), os.path.join(a.tar, f"{name}.tar"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data-root", required=True)
    p.add_argument("--warmup", required=True, help="tsst warmup --split train output folder")
    p.add_argument("--warmup-val", help="tsst warmup --split val output folder (held-out eval)")
    p.add_argument("--warmup-test", help="tsst warmup --split test output folder")
    p.add_argument("--vocab", type=int, default=768)
    p.add_argument("--image-size", type=int, default=S.DEFAULT_SHAPE["image_size"])
    p.add_argument("--contrasts", action="store_true",
                   help="add contrasts.py's false chains (value 0) to the value train and val records")
    p.add_argument("--contrasts-seed", type=int, default=1)
    p.add_argument("--out", required=True)
    t = sub.add_parser("train")
    t.add_argument("--pack", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--tar", help="also write policy.tar and value.tar here")
    t.add_argument("--shape", help="JSON overrides of small_llava.DEFAULT_SHAPE")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--no-bf16", dest="bf16", action="store_false")
    t.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on the CPU (policy training steps only)")
    t.add_argument("--init", help="start from this checkpoint folder's model.safetensors instead of random init")
    t.add_argument("--train-n", type=int, default=0,
                   help="use only the first N policy records and their questions' value records (the rest of "
                        "the split is left for self-training)")
    t.add_argument("--follow-chain", type=int, default=0, metavar="K",
                   help="train the policy on K more copies of each record whose step 2 names another option and whose "
                        "letter is that option's, with the loss on the final answer only")
    t.add_argument("--shuffle-options", type=int, default=0, metavar="K",
                   help="train the policy on K more copies of each record with its options shuffled")
    t.add_argument("--steps", type=int, default=6000)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup-steps", type=int, default=200)
    t.add_argument("--max-minutes", type=float, default=3.5, help="policy training time budget")
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--eval-n", type=int, default=250)
    t.add_argument("--eval-batch", type=int, default=256)
    t.add_argument("--test-n", type=int, default=500)
    t.add_argument("--max-new", type=int, default=128)
    t.add_argument("--band", type=float, nargs=2, default=[0.6, 0.85])
    t.add_argument("--prefer-max", type=float, default=0.82, help="keep the best val accuracy at or under this")
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--value-steps", type=int, default=600)
    t.add_argument("--value-n", type=int, default=48000, help="value records used (a seeded sample)")
    t.add_argument("--value-lr", type=float, default=3e-4)
    t.add_argument("--value-head-lr", type=float, default=1e-3)
    t.add_argument("--value-eval-every", type=int, default=200)
    t.add_argument("--value-eval-n", type=int, default=2000)
    t.add_argument("--value-max-minutes", type=float, default=1.0)
    t.add_argument("--value-rank-weight", type=float, default=0.0,
                   help="batches of whole questions, and this weight on a pairwise term that ranks each "
                        "question's records by target (0: regression only)")
    a = ap.parse_args(argv)
    if a.cmd == "prepare":
        prepare(a)
    else:
        train(a)


if __name__ == "__main__":
    main()
