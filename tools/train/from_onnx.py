"""Rebuilds the Hugging Face checkpoint of a small LLaVA (`small_llava.py`) from the model
directory `tools/export` made of it (`tsst-llava-onnx/1`, genai route), so that a
shipped model, such as `models/demo`, can be trained further without its checkpoint.

    python3 tools/train/from_onnx.py models/demo/value --out runs/demo/value/hf

The weights are the ONNX files' initializers, mapped back to their modules: the vision
tower and projector by the names of the nodes that read them (torch.onnx keeps the module
path), the decoder by the genai builder's names (its fused q/k/v projection split in
three, MatMul weights transposed back), the embedding table and the value head as named.
The shape comes from the manifest and the weights' own shapes; only the vision tower's
head count is not in them (`--vision-heads`, small_llava's by default).

The checkpoint is checked before it is written: the PyTorch model must give back the
directory's goldens (image features, greedy ids and, for a value model, the values), as
the export checked them against ONNX Runtime. A mismatch is an error: nothing is written.
`train.py --base DIR` runs this by itself when DIR has no checkpoint beside it.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "export"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

import small_llava as S  # noqa: E402

FP16_SUFFIX = "__fp16"


def initializers(path):
    """name -> float32 array (fp16-stored weights, `fp16_store.py`, under their graph
    name), and the graph."""
    m = onnx.load(path)
    out = {}
    for t in m.graph.initializer:
        out[t.name.removesuffix(FP16_SUFFIX)] = numpy_helper.to_array(t).astype(np.float32)
    return out, m.graph


def weight_readers(graph):
    """Initializer name -> the name of the MatMul/Gemm/Conv node that reads it, through
    the Cast an fp16-stored weight passes."""
    produced_by_cast = {n.output[0]: n.input[0].removesuffix(FP16_SUFFIX)
                        for n in graph.node if n.op_type == "Cast"}
    readers = {}
    for n in graph.node:
        if n.op_type in ("MatMul", "Gemm"):
            w = n.input[1]
            readers[produced_by_cast.get(w, w)] = n.name
    return readers


def module_path(node_name):
    """`/vision_tower/encoder/layers.0/self_attn/q_proj/MatMul` ->
    `vision_tower.encoder.layers.0.self_attn.q_proj`."""
    return ".".join(node_name.strip("/").split("/")[:-1])


def vision_state(path):
    """The vision tower's and projector's weights, keyed as in the export's wrapper
    (`vision_tower.*`, `projector.*`)."""
    weights, graph = initializers(path)
    readers = weight_readers(graph)
    state = {}
    for name, w in weights.items():
        if name.startswith(("vision_tower.", "projector.")):
            state[name] = w
        elif name in readers:
            # A Linear's weight, read by MatMul as [in, out].
            state[module_path(readers[name]) + ".weight"] = w.T
    return state


def decoder_state(path, heads, kv_heads, head_dim):
    """The LLaMA decoder's weights, keyed as in `LlamaModel` (plus `lm_head.weight`)."""
    w, _ = initializers(path)
    layers = sorted({int(k.split(".")[2]) for k in w if k.startswith("model.layers.") and "attn" in k})
    q, kv = heads * head_dim, kv_heads * head_dim
    state = {}
    for i in layers:
        p = f"model.layers.{i}"
        qkv = w[f"{p}.attn.qkv_proj.MatMul.weight"].T
        if qkv.shape[0] != q + 2 * kv:
            raise SystemExit(f"{path}: layer {i}'s q/k/v projection has {qkv.shape[0]} outputs, "
                             f"not {q} + 2 x {kv} ({heads} heads, {kv_heads} KV heads of {head_dim})")
        state[f"layers.{i}.self_attn.q_proj.weight"] = qkv[:q]
        state[f"layers.{i}.self_attn.k_proj.weight"] = qkv[q:q + kv]
        state[f"layers.{i}.self_attn.v_proj.weight"] = qkv[q + kv:]
        state[f"layers.{i}.self_attn.o_proj.weight"] = w[f"{p}.attn.o_proj.MatMul.weight"].T
        for m in ("gate_proj", "up_proj", "down_proj"):
            state[f"layers.{i}.mlp.{m}.weight"] = w[f"{p}.mlp.{m}.MatMul.weight"].T
        state[f"layers.{i}.input_layernorm.weight"] = w[f"{p}.input_layernorm.weight"]
        state[f"layers.{i}.post_attention_layernorm.weight"] = w[f"{p}.post_attention_layernorm.weight"]
    state["norm.weight"] = w[f"model.layers.{len(layers)}.final_norm_layernorm.weight"]
    state["lm_head.weight"] = w["lm_head.MatMul.weight"].T
    return state, len(layers), w["cos_cache"].shape[0]


def rebuild(src, vision_heads):
    """(model, tokenizer, value head or None, manifest)."""
    from transformers import LlavaForConditionalGeneration
    man = json.load(open(os.path.join(src, "manifest.json")))
    if man.get("format") != "tsst-llava-onnx/1" or man["decoder"].get("route") != "genai":
        raise SystemExit(f"{src}: not a genai-route tsst-llava-onnx/1 model directory")
    if man.get("logit_bias"):
        raise SystemExit(f"{src}: exported with a logit bias, which no checkpoint holds")
    d = man["decoder"]
    hidden, head_dim, kv_heads = d["hidden_size"], d["head_dim"], d["num_kv_heads"]
    heads = hidden // head_dim
    dec, layers, max_positions = decoder_state(os.path.join(src, d["file"]), heads, kv_heads, head_dim)
    vis = vision_state(os.path.join(src, man["vision"]["file"]))
    emb, _ = initializers(os.path.join(src, man["embed"]["file"]))
    table = next(iter(emb.values()))
    patch = vis["vision_tower.embeddings.patch_embedding.weight"]
    vlayers = len({k.split(".")[3] for k in vis if k.startswith("vision_tower.encoder.layers.")})
    shape = dict(
        image_size=man["vision"]["image_size"], patch_size=patch.shape[-1], vision_hidden=patch.shape[0],
        vision_layers=vlayers, vision_heads=vision_heads,
        vision_intermediate=vis["vision_tower.encoder.layers.0.mlp.fc1.weight"].shape[0],
        hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
        intermediate=dec["layers.0.mlp.gate_proj.weight"].shape[0], max_positions=max_positions)
    tok = Tokenizer.from_file(os.path.join(src, man["tokenizer"]))
    if tok.get_vocab_size() != table.shape[0]:
        raise SystemExit(f"{src}: the tokenizer has {tok.get_vocab_size()} ids, the embedding {table.shape[0]}")
    cfg = S.config(tok, **shape)
    cfg._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(cfg)
    state = {"model.language_model.embed_tokens.weight": table, "lm_head.weight": dec.pop("lm_head.weight")}
    state.update({f"model.language_model.{k}": v for k, v in dec.items()})
    for k, v in vis.items():
        if k.startswith("vision_tower."):
            state["model." + k] = v
        else:
            state["model.multi_modal_projector." + k.removeprefix("projector.")] = v
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise SystemExit(f"{src}: weights with no place in the rebuilt model: {unknown[:8]}")
    for k, v in state.items():
        if tuple(own[k].shape) != v.shape:
            raise SystemExit(f"{src}: {k} is {v.shape} in ONNX, {tuple(own[k].shape)} in the model")
    missing = set(own) - set(state)
    # The tower's last norm is not on the path to the features (vision_feature_layer -1
    # takes the last layer's hidden states before it): it keeps its initial values.
    unused = {k for k in missing if "post_layernorm" in k}
    if missing - unused:
        raise SystemExit(f"{src}: weights the ONNX files do not hold: {sorted(missing - unused)[:8]}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    model.eval()
    head = None
    if man["kind"] == "value":
        from parts import ValueHead
        hw, _ = initializers(os.path.join(src, man["value_head"]["file"]))
        head = ValueHead(hidden)
        lin = hw["linear.weight"]
        head.load_state_dict({"ln.weight": torch.from_numpy(hw["ln.weight"]), "ln.bias": torch.from_numpy(hw["ln.bias"]),
                              "linear.weight": torch.from_numpy(np.ascontiguousarray(lin.reshape(1, hidden))),
                              "linear.bias": torch.from_numpy(hw["linear.bias"].reshape(1))})
        head.eval()
    return model, tok, head, man


def check(src, model, tok, head, man):
    """The rebuilt model against the directory's goldens; raises on a mismatch."""
    import export_llava
    want = json.load(open(os.path.join(src, "goldens.json")))
    special = man["special_tokens"]
    _, got, _ = export_llava.compute_goldens(model, tok, special, head, man, "cpu", man["kind"])
    errors = []
    a, b = got["image_features"], want["image_features"]
    if not np.allclose(a["first8"], b["first8"], atol=1e-3) or abs(a["abs_sum"] - b["abs_sum"]) > 1e-4 * b["abs_sum"] + 1e-2:
        errors.append(f"image features {a['first8'][:3]}... against {b['first8'][:3]}...")
    if got["greedy"]["ids"] != want["greedy"]["ids"]:
        errors.append(f"greedy ids {got['greedy']['ids']} against {want['greedy']['ids']}")
    for g, w in zip(got.get("value", []), want.get("value", [])):
        if abs(g["value"] - w["value"]) > 1e-3:
            errors.append(f"value of {w['partial']!r}: {g['value']:.5f} against {w['value']:.5f}")
    if errors:
        raise SystemExit(f"{src}: the rebuilt model does not give the goldens back: " + "; ".join(errors))
    return got


def convert(src, out, vision_heads=S.DEFAULT_SHAPE["vision_heads"]):
    """Rebuilds, checks and writes the checkpoint of `src` to `out`."""
    import warmup
    model, tok, head, man = rebuild(src, vision_heads)
    got = check(src, model, tok, head, man)
    warmup.save_checkpoint(model, tok, out, head)
    return got


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="an exported model directory (manifest.json, goldens.json)")
    ap.add_argument("--out", required=True, help="the checkpoint directory to write")
    ap.add_argument("--vision-heads", type=int, default=S.DEFAULT_SHAPE["vision_heads"])
    a = ap.parse_args(argv)
    got = convert(a.model, a.out, a.vision_heads)
    print(json.dumps({"checkpoint": a.out, "kind": got.get("value") and "value" or "policy",
                      "greedy_ids": got["greedy"]["ids"],
                      "values": [v["value"] for v in got.get("value", [])]}))


if __name__ == "__main__":
    main()
