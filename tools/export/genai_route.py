"""The genai route: the language model as a standalone LlamaForCausalLM folder, built
into an ONNX decoder by onnxruntime-genai's model builder (run as a plain script from
the installed wheel, offline)."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import onnx
import torch
from transformers import LlamaForCausalLM

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "added_tokens.json", "chat_template.json", "chat_template.jinja"]


def find_builder(explicit=None) -> str:
    if explicit:
        return explicit
    spec = importlib.util.find_spec("onnxruntime_genai")  # does not load the native module
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("onnxruntime-genai is not installed; pass --builder PATH/TO/models/builder.py")
    path = os.path.join(spec.submodule_search_locations[0], "models", "builder.py")
    if not os.path.exists(path):
        raise SystemExit(f"no builder at {path}")
    return path


def save_language_model(language_model, lm_head, text_config, out_dir, save_tokenizer):
    """Write `out_dir` as a LlamaForCausalLM checkpoint sharing the LLaVA's weights."""
    cfg = text_config.__class__.from_dict(text_config.to_dict())
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.tie_word_embeddings = False
    with torch.device("meta"):
        lm = LlamaForCausalLM(cfg)
    lm.model = language_model
    # The builder reads a LlamaForCausalLM, whose lm_head has no bias: a bias is added
    # to the built graph instead (add_logits_bias).
    lm.lm_head = torch.nn.Linear(lm_head.in_features, lm_head.out_features, bias=False,
                                 dtype=lm_head.weight.dtype, device="meta")
    lm.lm_head.weight = lm_head.weight
    lm.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(out_dir)


def run_builder(builder, hf_dir, out_dir, cache_dir, precision, ep, extra_options):
    cmd = [sys.executable, builder, "-i", hf_dir, "-o", out_dir, "-p", precision, "-e", ep,
           "-c", cache_dir, "--extra_options", *[f"{k}={v}" for k, v in extra_options.items()]]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, cwd=os.path.dirname(builder), capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        print(log[-6000:], file=sys.stderr)
        raise SystemExit(f"builder failed with exit code {proc.returncode}")
    return log


def save_onnx(model_path_in, model_path_out, max_inline_bytes=1_800_000_000):
    """Load an ONNX model with its external data and save it as `model_path_out`: one
    file when small enough, else with one `<name>.data` file beside it."""
    model = onnx.load(model_path_in, load_external_data=True)
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if os.path.exists(model_path_out):
        os.remove(model_path_out)
    data = model_path_out + ".data"
    if os.path.exists(data):
        os.remove(data)
    if size <= max_inline_bytes:
        onnx.save_model(model, model_path_out)
    else:
        onnx.save_model(model, model_path_out, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(data), size_threshold=1024)


def move_onnx(model_path_in, model_path_out, max_inline_bytes=1_800_000_000):
    """`save_onnx` for a built model whose weights live in one external data file: when
    they pass `max_inline_bytes`, the data file is moved beside `model_path_out` as
    `<name>.data` and only the small graph is rewritten (a 7B is not loaded and written
    again). Otherwise, or with several data files, `save_onnx`."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data
    model = onnx.load(model_path_in, load_external_data=False)
    tensors = [t for t in _get_all_tensors(model) if uses_external_data(t)]
    locations = {e.value for t in tensors for e in t.external_data if e.key == "location"}
    if len(locations) != 1:
        return save_onnx(model_path_in, model_path_out, max_inline_bytes)
    src = os.path.join(os.path.dirname(model_path_in), locations.pop())
    if os.path.getsize(src) <= max_inline_bytes:
        return save_onnx(model_path_in, model_path_out, max_inline_bytes)
    data = model_path_out + ".data"
    for t in tensors:
        for e in t.external_data:
            if e.key == "location":
                e.value = os.path.basename(data)
    for stale in (model_path_out, data):
        if os.path.exists(stale):
            os.remove(stale)
    shutil.move(src, data)
    onnx.save_model(model, model_path_out)


def add_logits_bias(path, bias):
    """Add `bias` ([vocab]) to the graph output `logits` of the ONNX model at `path`,
    rewriting only the graph (external weights stay where they are)."""
    import numpy as np
    from onnx import helper, numpy_helper
    model = onnx.load(path, load_external_data=False)
    graph = model.graph
    out = next(o for o in graph.output if o.name == "logits")
    elem = out.type.tensor_type.elem_type
    np_dtype = np.float16 if elem == onnx.TensorProto.FLOAT16 else np.float32
    producer = next(n for n in graph.node if "logits" in n.output)
    producer.output[list(producer.output).index("logits")] = "logits_unbiased"
    graph.initializer.append(numpy_helper.from_array(bias.astype(np_dtype), "logits_bias"))
    graph.node.append(helper.make_node("Add", ["logits_unbiased", "logits_bias"], ["logits"],
                                       name="/lm_head/logits_bias/Add"))
    onnx.save_model(model, path)


def build_decoder(language_model, lm_head, text_config, dtype, out_dir, work_dir, save_tokenizer,
                  precision, ep, kind, builder=None, extra=None):
    """Build `out_dir/decoder.onnx` (+ genai_config.json); returns the builder log."""
    builder = find_builder(builder)
    hf_dir = os.path.join(work_dir, "hf_llama")
    build_dir = os.path.join(work_dir, "built")
    cache_dir = os.path.join(work_dir, "cache")
    for d in (hf_dir, build_dir, cache_dir):
        os.makedirs(d, exist_ok=True)
    save_language_model(language_model, lm_head, text_config, hf_dir, save_tokenizer)
    options = {"exclude_embeds": "1"}
    if kind == "value":
        options["include_hidden_states"] = "1"
    if ep == "cuda":
        options.update({"enable_cuda_graph": "1", "fuse_mlp_gate_up": "1"})
    options.update(extra or {})
    log = run_builder(builder, hf_dir, build_dir, cache_dir, precision, ep, options)
    move_onnx(os.path.join(build_dir, "model.onnx"), os.path.join(out_dir, "decoder.onnx"))
    if lm_head.bias is not None:
        add_logits_bias(os.path.join(out_dir, "decoder.onnx"), lm_head.bias.detach().float().cpu().numpy())
    cfg_path = os.path.join(build_dir, "genai_config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            cfg = json.load(f)
        try:
            cfg["model"]["decoder"]["filename"] = "decoder.onnx"
        except (KeyError, TypeError):
            pass
        with open(os.path.join(out_dir, "genai_config.json"), "w") as f:
            json.dump(cfg, f, indent=4)
    return log, options
