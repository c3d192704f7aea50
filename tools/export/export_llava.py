#!/usr/bin/env python3
"""Export a LLaVA-1.5 policy or value model to the tsst-llava-onnx/1 layout.

  export_llava.py --checkpoint DIR --kind policy --dtype fp16 --execution-provider cuda --out OUT
  export_llava.py --tiny-random --kind value --dtype fp32 --out tests/fixtures/models/tiny-value

See tools/export/README.md for the layout, the manifest and what each route supports.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

import genai_route  # noqa: E402
import goldens as G  # noqa: E402
import preprocess  # noqa: E402
import prompt as P  # noqa: E402
from parts import Embed, TorchDecoder, ValueHead, VisionEncoder, llava_parts  # noqa: E402

OPSET = 17
FORMAT = "tsst-llava-onnx/1"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="Hugging Face checkpoint in the llava-hf/llava-1.5-7b-hf layout")
    src.add_argument("--tiny-random", action="store_true", help="build a tiny random LLaVA instead")
    src.add_argument("--random-shape", choices=["llava-1.5-7b"],
                     help="random weights in a full-size shape (timing runs; uses the tiny tokenizer)")
    ap.add_argument("--num-layers", type=int,
                    help="with --random-shape: text layers (default: the shape's, 32 for llava-1.5-7b)")
    ap.add_argument("--init-device", default="cpu",
                    help="with --random-shape: where the random weights are made (cuda is much faster)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--kind", choices=["policy", "value"], default="policy")
    ap.add_argument("--decoder-route", choices=["genai", "torch"], default="genai")
    ap.add_argument("--execution-provider", choices=["cpu", "cuda"], default="cpu",
                    help="target of the genai builder, and the ORT provider of the check")
    ap.add_argument("--value-head", help="value head weights (default: value_head.safetensors or "
                    "value_head.bin in --checkpoint); keys ln.weight ln.bias linear.weight linear.bias")
    ap.add_argument("--builder", help="path of onnxruntime-genai's models/builder.py (default: the installed wheel's)")
    ap.add_argument("--builder-option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra --extra_options for the builder (repeatable)")
    ap.add_argument("--logit-bias", action="append", default=[], metavar="TOKEN=VALUE",
                    help="add VALUE to TOKEN's logit (a token of the tokenizer, or #ID), repeatable: "
                    "random weights then end steps after drawn lengths (e.g. '.=6'), identically "
                    "in the ONNX decoder and in PyTorch (lm_head gets the bias)")
    ap.add_argument("--text-only", action="store_true",
                    help="bias the ids the tokenizer does not have (a random-shape model's vocabulary "
                    "is larger than the tiny tokenizer's) by -10000, so that random weights write text")
    ap.add_argument("--token-rate", action="append", default=[], metavar="TOKEN=P",
                    help="like --logit-bias, but the bias is calibrated so that TOKEN is drawn with "
                    "probability about P per position at --rate-temperature (measured over a prompt)")
    ap.add_argument("--rate-temperature", type=float, default=0.7)
    ap.add_argument("--max-length", type=int, help="manifest decoder.max_length (default: max_position_embeddings)")
    ap.add_argument("--torch-device", default="cpu", help="device for the PyTorch goldens (cpu, cuda)")
    ap.add_argument("--no-goldens", action="store_true", help="skip goldens.json (and the ORT check)")
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    ap.add_argument("--work-dir", help="keep intermediate files here (default: a temp dir, removed)")
    ap.add_argument("--out", required=True)
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------- loading

def special_ids_from_checkpoint(ckpt, tok, config):
    def tok_id(name, fallback=None):
        i = tok.token_to_id(name) if name else None
        return fallback if i is None else i

    cfg = {}
    tc_path = os.path.join(ckpt, "tokenizer_config.json")
    if os.path.exists(tc_path):
        with open(tc_path) as f:
            cfg = json.load(f)

    def tok_str(key, default):
        v = cfg.get(key, default)
        return v.get("content") if isinstance(v, dict) else v

    bos = tok_id(tok_str("bos_token", "<s>"), 1)
    eos = tok_id(tok_str("eos_token", "</s>"), 2)
    pad = getattr(config, "pad_token_id", None)
    if pad is None:
        pad = getattr(config.text_config, "pad_token_id", None)
    if pad is None:
        pad = tok_id(tok_str("pad_token", None), tok_id(tok_str("unk_token", "<unk>"), 0))
    image = getattr(config, "image_token_id", None)
    if image is None:
        image = getattr(config, "image_token_index", None)
    if image is None:
        image = tok_id(P.IMAGE_TOKEN)
    return {"bos": bos, "eos": eos, "pad": pad, "image": image}


def parse_logit_bias(specs, tok):
    """`TOKEN=VALUE` specs -> {token id: value}; a TOKEN of `#N` is the id N."""
    bias = {}
    for spec in specs:
        token, sep, value = spec.rpartition("=")
        if not sep or not token:
            raise SystemExit(f"--logit-bias {spec!r}: expected TOKEN=VALUE")
        tid = int(token[1:]) if token.startswith("#") and token[1:].isdigit() else tok.token_to_id(token)
        if tid is None:
            raise SystemExit(f"--logit-bias {spec!r}: {token!r} is not a token of the tokenizer")
        bias[tid] = bias.get(tid, 0.0) + float(value)
    return bias


@torch.no_grad()
def calibrate_rates(model, tok, rates, temperature):
    """Biases ({token id: b}) that make each token of `rates` ({id: P}) drawn with about
    probability P per position at `temperature`: b = T (log P - log(1 - sum P) +
    logsumexp of the other logits / T) - the token's logit, averaged over the positions
    of a text prompt (on a GPU when there is one)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    home = next(model.parameters()).device
    model.to(device)
    ids = torch.tensor([tok.encode(G.golden_prompt("Step 1: The shape on the left is red.")).ids], device=device)
    hidden = model.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    logits = model.lm_head(hidden)[0].float() / temperature
    model.to(home)
    targets = torch.tensor(list(rates), device=device)
    others = logits.clone()
    others[:, targets] = float("-inf")
    lse = torch.logsumexp(others, dim=-1)
    rest = 1.0 - sum(rates.values())
    if rest <= 0:
        raise SystemExit("--token-rate: the rates must sum to less than 1")
    return {tid: float((temperature * (torch.log(torch.tensor(p)) - torch.log(torch.tensor(rest)) + lse)
                        - logits[:, tid] * temperature).mean())
            for tid, p in rates.items()}


def add_logit_bias_(model, bias):
    """Give `model.lm_head` a bias vector: `bias` ({token id: value}) on those logits."""
    old = model.lm_head
    new = torch.nn.Linear(old.in_features, old.out_features, bias=True, dtype=old.weight.dtype,
                          device=old.weight.device)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        new.bias.zero_()
        if old.bias is not None:
            new.bias.copy_(old.bias)
        for tid, value in bias.items():
            new.bias[tid] += value
    model.lm_head = new


def load(args, torch_dtype):
    """Returns (model, tokenizer, special ids, save_builder_tokenizer(dir), value head or None)."""
    from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerFast

    if args.tiny_random or args.random_shape:
        import tiny
        tok = tiny.train_tokenizer()
        if args.random_shape:
            model = tiny.build_random_shaped(args.random_shape, args.num_layers, tok, torch_dtype,
                                             args.init_device)
        else:
            model = tiny.build_tiny(tok, args.seed).to(torch_dtype)
        special = {"bos": 1, "eos": 2, "pad": 0, "image": tok.token_to_id(P.IMAGE_TOKEN)}

        def save_tok(d):
            PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                    unk_token="<unk>", pad_token="<unk>").save_pretrained(d)

        head = None
        if args.kind == "value":
            head = ValueHead(model.config.text_config.hidden_size)
            tiny.init_value_head_(head, args.seed)
            head = head.to(torch_dtype).eval()
        return model, tok, special, save_tok, head

    ckpt = args.checkpoint
    model = LlavaForConditionalGeneration.from_pretrained(ckpt, dtype=torch_dtype, attn_implementation="eager")
    model.eval()
    tok = Tokenizer.from_file(os.path.join(ckpt, "tokenizer.json"))
    special = special_ids_from_checkpoint(ckpt, tok, model.config)

    def save_tok(d):
        for name in genai_route.TOKENIZER_FILES:
            if os.path.exists(os.path.join(ckpt, name)):
                shutil.copy(os.path.join(ckpt, name), os.path.join(d, name))

    head = None
    if args.kind == "value":
        head = ValueHead(model.config.text_config.hidden_size)
        head.load_state_dict(load_value_head(args.value_head, ckpt))
        head = head.to(torch_dtype).eval()
    return model, tok, special, save_tok, head


def load_value_head(path, ckpt):
    candidates = [path] if path else [os.path.join(ckpt, "value_head.safetensors"),
                                      os.path.join(ckpt, "value_head.bin")]
    for c in candidates:
        if c and os.path.exists(c):
            if c.endswith(".safetensors"):
                from safetensors.torch import load_file
                sd = load_file(c)
            else:
                sd = torch.load(c, map_location="cpu", weights_only=True)
            sd = {k.removeprefix("value_head."): v.float() for k, v in sd.items()}
            return {k: sd[k] for k in ("ln.weight", "ln.bias", "linear.weight", "linear.bias")}
    raise SystemExit(f"--kind value: no value head weights (looked for {candidates})")


# ----------------------------------------------------------------------------- export

def onnx_export(module, args, path, input_names, output_names, dynamic_axes, work):
    tmp = os.path.join(work, "torch_" + os.path.basename(path))
    torch.onnx.export(module, args, tmp, input_names=input_names, output_names=output_names,
                      dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True,
                      dynamo=False)
    genai_route.save_onnx(tmp, path)


def export_vision(enc, cfg, dtype, path, work):
    s = cfg.vision_config.image_size
    pv = torch.randn(2, 3, s, s, dtype=dtype)
    onnx_export(enc, (pv,), path, ["pixel_values"], ["image_features"],
                {"pixel_values": {0: "batch"}, "image_features": {0: "batch"}}, work)


def export_embed(embed, path, work):
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.long)
    onnx_export(Embed(embed), (ids,), path, ["input_ids"], ["inputs_embeds"],
                {"input_ids": {0: "batch", 1: "sequence_length"},
                 "inputs_embeds": {0: "batch", 1: "sequence_length"}}, work)


def export_value_head(head, hidden, dtype, path, work):
    h = torch.randn(2, hidden, dtype=dtype)
    onnx_export(head, (h,), path, ["hidden_states"], ["value"],
                {"hidden_states": {0: "batch"}, "value": {0: "batch"}}, work)


def export_torch_decoder(dec, cfg, dtype, path, work, tree=False):
    """The torch route's decoder; with `tree`, its mask is per query, [B, T, P+T]
    (TorchDecoder)."""
    tc = cfg.text_config
    b, t, past = 2, 3, 4
    mask_shape, mask_axes = (b, past + t), {0: "batch", 1: "total_sequence_length"}
    if tree:
        mask_shape, mask_axes = (b, t, past + t), {0: "batch", 1: "sequence_length", 2: "total_sequence_length"}
    args = [torch.randn(b, t, tc.hidden_size, dtype=dtype),
            torch.ones(*mask_shape, dtype=torch.long),
            torch.arange(past, past + t, dtype=torch.long)[None].repeat(b, 1)]
    for _ in range(2 * dec.num_layers):
        args.append(torch.randn(b, dec.num_kv, past, dec.head_dim, dtype=dtype))
    axes = {"inputs_embeds": {0: "batch", 1: "sequence_length"},
            "attention_mask": mask_axes,
            "position_ids": {0: "batch", 1: "sequence_length"},
            "logits": {0: "batch", 1: "sequence_length"},
            "hidden_states": {0: "batch", 1: "sequence_length"}}
    for i in range(dec.num_layers):
        for kv in ("key", "value"):
            axes[f"past_key_values.{i}.{kv}"] = {0: "batch", 2: "past_sequence_length"}
            axes[f"present.{i}.{kv}"] = {0: "batch", 2: "total_sequence_length"}
    onnx_export(dec, tuple(args), path, dec.input_names(), dec.output_names(), axes, work)


def graph_io(path):
    import onnx
    m = onnx.load(path, load_external_data=False)
    return [i.name for i in m.graph.input], [o.name for o in m.graph.output]


def make_manifest(args, cfg, special, route, out, dtype_name, max_length, tokenizer_adds_bos, logit_bias):
    vc, tc = cfg.vision_config, cfg.text_config
    strategy = getattr(cfg, "vision_feature_select_strategy", "default")
    n_img = (vc.image_size // vc.patch_size) ** 2 + (0 if strategy == "default" else 1)
    ins, outs = graph_io(os.path.join(out, "decoder.onnx"))
    head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    for i in range(tc.num_hidden_layers):
        for name in (f"past_key_values.{i}.key", f"past_key_values.{i}.value"):
            assert name in ins, f"decoder lacks input {name}"
        for name in (f"present.{i}.key", f"present.{i}.value"):
            assert name in outs, f"decoder lacks output {name}"
    assert "inputs_embeds" in ins and "attention_mask" in ins, ins
    return {
        "format": FORMAT,
        "kind": args.kind,
        "dtype": dtype_name,
        "template": "llava_v1",
        "tokenizer": "tokenizer.json",
        "special_tokens": special,
        "add_bos": True,
        "tokenizer_adds_bos": tokenizer_adds_bos,
        "vision": {"file": "vision.onnx", "input": "pixel_values", "output": "image_features",
                   "image_size": vc.image_size, "num_image_tokens": n_img,
                   "mean": preprocess.MEAN, "std": preprocess.STD, "pad_color": list(preprocess.PAD_COLOR)},
        "embed": {"file": "embed.onnx", "input": "input_ids", "output": "inputs_embeds"},
        "decoder": {"file": "decoder.onnx", "route": route,
                    "inputs_embeds": "inputs_embeds", "attention_mask": "attention_mask",
                    "position_ids": "position_ids" if "position_ids" in ins else None,
                    "past_key": "past_key_values.{i}.key", "past_value": "past_key_values.{i}.value",
                    "present_key": "present.{i}.key", "present_value": "present.{i}.value",
                    "logits": "logits" if "logits" in outs else None,
                    "hidden_states": "hidden_states" if "hidden_states" in outs else None,
                    "num_layers": tc.num_hidden_layers, "num_kv_heads": tc.num_key_value_heads,
                    "head_dim": head_dim, "hidden_size": tc.hidden_size, "vocab_size": tc.vocab_size,
                    "max_length": max_length},
        # Informational (the bias is in the decoder graph, initializer `logits_bias`).
        "logit_bias": ({"tokens": {str(k): v for k, v in sorted(logit_bias.items())},
                        "text_only": args.text_only} if logit_bias or args.text_only else None),
        "value_head": ({"file": "value_head.onnx", "input": "hidden_states", "output": "value"}
                       if args.kind == "value" else None),
    }


# ----------------------------------------------------------------------------- goldens

def compute_goldens(model, tok, special, head, manifest, device, kind):
    img = G.golden_image()
    size = manifest["vision"]["image_size"]
    n_img = manifest["vision"]["num_image_tokens"]
    u8 = preprocess.preprocess_u8(img, size)
    pv = preprocess.preprocess(img, size)
    dtype = next(model.parameters()).dtype
    model = model.to(device)
    pvd = pv.to(device=device, dtype=dtype)
    text = G.golden_prompt("")
    ids = tok.encode(text).ids
    assert ids[0] == special["bos"] and ids.count(special["image"]) == 1, ids[:4]
    full = G.expand_image_tokens(ids, special["image"], n_img)
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=pvd)
        feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
        feats = torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats
    new, logits = G.greedy(model, full, pvd, G.NEW_TOKENS)
    g = {
        "format": "tsst-goldens/1",
        "computed_with": f"PyTorch {torch.__version__} (Hugging Face LlavaForConditionalGeneration, "
                         f"{str(dtype).removeprefix('torch.')}, eager attention)",
        "question": G.GOLDEN_QUESTION,
        "image": "golden.png",
        "image_size": size,
        "preprocessed_u8": {"shape": list(u8.shape), "sum": int(u8.astype(np.int64).sum()),
                            "first8": [int(x) for x in u8.reshape(-1)[:8]]},
        "pixel_values": G.summary(pv),
        "prompt": text,
        "prompt_ids": ids,
        "image_token_position": ids.index(special["image"]),
        "spliced_length": len(full),
        "image_features": G.summary(feats.reshape(-1, feats.shape[-1])[None]),
        "greedy": {
            "new_tokens": G.NEW_TOKENS,
            "stops_at_eos": False,
            "ids": new,
            "text": tok.decode(new, skip_special_tokens=True),
            "eos_generated": special["eos"] in new,
            "steps": [{"step": k, "logits_sum": float(l.double().sum()), "logits_max": float(l.max()),
                       "argmax": int(l.argmax())} for k, l in enumerate(logits[:G.LOGIT_STEPS])],
        },
    }
    raw = {"pixel_values": pv, "image_features": feats.float().cpu(), "logits": logits, "new": new}
    if kind == "value":
        vals, raw["value_ids"], raw["values"] = [], [], []
        for partial in G.GOLDEN_PARTIALS:
            t = G.golden_prompt(partial)
            pids = tok.encode(t).ids
            h = G.last_hidden(model, G.expand_image_tokens(pids, special["image"], n_img), pvd)
            with torch.no_grad():
                v = float(head.to(device)(h[None])[0])
            vals.append({"partial": partial, "prompt": t, "prompt_ids": pids, "value": v})
            raw["value_ids"].append(pids)
            raw["values"].append(v)
        g["value"] = vals
    model.to("cpu")
    return img, g, raw


def ort_check(out, manifest, raw, ep):
    import verify
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if ep == "cuda" else ["CPUExecutionProvider"]
    rt = verify.Runtime(out, manifest, providers)
    res = {"providers": providers}
    pv = raw["pixel_values"].numpy()
    feats = rt.image_features(pv)[0].astype(np.float32)
    res["image_features_max_abs_diff"] = float(np.abs(feats - raw["image_features"].numpy().reshape(feats.shape)).max())
    emb = rt.spliced(raw["prompt_ids"], feats.astype(rt.np_dtype))
    new, logits = rt.greedy(emb, G.NEW_TOKENS)
    res["greedy_ids_equal"] = new == raw["new"]
    res["greedy_ids_ort"] = new
    res["logits_max_abs_diff_per_step"] = [float(np.abs(a - b.numpy()).max()) for a, b in zip(logits, raw["logits"])]
    if manifest["kind"] == "value":
        embs = [rt.spliced(ids, feats.astype(rt.np_dtype)) for ids in raw["value_ids"]]
        single = [float(rt.value([e])[0][0]) for e in embs]
        res["value_ort"] = single
        res["value_max_abs_diff"] = float(np.abs(np.array(single) - np.array(raw["values"])).max())
        sides = ["right"] + (["left"] if manifest["decoder"]["position_ids"] else [])
        for side in sides:
            batched = rt.value(embs, side)[0].astype(np.float32)
            res[f"value_batched_{side}_pad_max_abs_diff"] = float(np.abs(batched - np.array(raw["values"])).max())
    # Padded batch: the golden prompt and a 5-token shorter copy, prefill + 3 decode steps,
    # against the same rows run alone.
    if manifest["decoder"]["logits"]:
        rows = [emb, emb[:-5]]
        nxt = [raw["new"][:3], [7, 8, 9]]
        alone = [rt.alone_decode(e, n) for e, n in zip(rows, nxt)]
        sides = ["right"] + (["left"] if manifest["decoder"]["position_ids"] else [])
        for side in sides:
            pre, dec = rt.padded_decode(rows, nxt, side)
            res[f"padded_batch_{side}_prefill_max_abs_diff"] = float(max(np.abs(pre[r] - alone[r][0]).max() for r in range(2)))
            res[f"padded_batch_{side}_decode_max_abs_diff"] = float(max(
                np.abs(dec[k][r] - alone[r][1][k]).max() for r in range(2) for k in range(len(dec))))
    return res


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    torch.manual_seed(args.seed)
    torch_dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    dtype_name = "float16" if args.dtype == "fp16" else "float32"
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    work = args.work_dir or tempfile.mkdtemp(prefix="tsst-export-")
    os.makedirs(work, exist_ok=True)
    for stale in ("decoder.onnx", "decoder.onnx.data", "vision.onnx", "embed.onnx", "value_head.onnx",
                  "genai_config.json", "goldens.json", "golden.png", "manifest.json"):
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))

    model, tok, special, save_tok, head = load(args, torch_dtype)
    cfg = model.config
    logit_bias = parse_logit_bias(args.logit_bias, tok)
    beyond = range(tok.get_vocab_size(), cfg.text_config.vocab_size) if args.text_only else range(0)
    if logit_bias or beyond:
        add_logit_bias_(model, {**logit_bias, **{i: -10000.0 for i in beyond}})
    rates = parse_logit_bias(args.token_rate, tok)
    if rates:
        calibrated = calibrate_rates(model, tok, rates, args.rate_temperature)
        add_logit_bias_(model, calibrated)
        for tid, b in calibrated.items():
            logit_bias[tid] = logit_bias.get(tid, 0.0) + b
    if logit_bias or beyond:
        print(f"logit bias {logit_bias}; {len(beyond)} ids beyond the tokenizer at -10000", flush=True)
    vision, projector, lm, lm_head, embed = llava_parts(model)
    print(f"loaded in {time.time() - t0:.1f}s; special tokens {special}", flush=True)

    tok.save(os.path.join(out, "tokenizer.json"))
    probe = tok.encode("Hello").ids
    tokenizer_adds_bos = bool(probe) and probe[0] == special["bos"]
    if not tokenizer_adds_bos:
        print("warning: tokenizer.json does not add <s>; the runtime must prepend bos", file=sys.stderr)

    enc = VisionEncoder(vision, projector, cfg.vision_feature_layer, cfg.vision_feature_select_strategy).eval()
    with torch.no_grad():
        export_vision(enc, cfg, torch_dtype, os.path.join(out, "vision.onnx"), work)
        export_embed(embed, os.path.join(out, "embed.onnx"), work)
    print(f"vision + embed exported ({time.time() - t0:.1f}s)", flush=True)

    if args.decoder_route == "genai":
        precision = "fp16" if args.dtype == "fp16" else "fp32"
        extra = dict(kv.split("=", 1) for kv in args.builder_option)
        _, options = genai_route.build_decoder(lm, lm_head, cfg.text_config, torch_dtype, out, work, save_tok,
                                               precision, args.execution_provider, args.kind,
                                               builder=args.builder, extra=extra)
        print(f"genai builder options {options}", flush=True)
    else:
        dec = TorchDecoder(lm, lm_head, cfg.text_config, with_logits=True, with_hidden=args.kind == "value").eval()
        with torch.no_grad():
            export_torch_decoder(dec, cfg, torch_dtype, os.path.join(out, "decoder.onnx"), work)
    print(f"decoder exported ({args.decoder_route} route, {time.time() - t0:.1f}s)", flush=True)

    if head is not None:
        with torch.no_grad():
            export_value_head(head, cfg.text_config.hidden_size, torch_dtype, os.path.join(out, "value_head.onnx"), work)

    max_length = args.max_length or cfg.text_config.max_position_embeddings
    manifest = make_manifest(args, cfg, special, args.decoder_route, out, dtype_name, max_length, tokenizer_adds_bos,
                             logit_bias)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")

    if not args.no_goldens:
        img, g, raw = compute_goldens(model, tok, special, head, manifest, args.torch_device, args.kind)
        img.save(os.path.join(out, "golden.png"))
        raw["prompt_ids"] = g["prompt_ids"]
        if not args.no_verify:
            res = ort_check(out, manifest, raw, args.execution_provider)
            g["ort_check"] = res
            print("ORT vs PyTorch:", json.dumps(res, indent=1), flush=True)
        with open(os.path.join(out, "goldens.json"), "w") as f:
            json.dump(g, f, indent=1, ensure_ascii=False)
            f.write("\n")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"done in {time.time() - t0:.1f}s -> {out}")


if __name__ == "__main__":
    main()
