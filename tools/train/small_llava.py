"""A small LLaVA-1.5 for the synthetic visual-reasoning benchmark, trained from scratch.

The architecture is LLaVA-1.5's (transformers `LlavaForConditionalGeneration`: a CLIP
vision tower, the 2-layer GELU projector, a LLaMA decoder), scaled down so that one
exported model directory stays under 20 MB in fp32 and a checkpoint file under 16 MiB:
- vision: 64 px, patch 8 -> 64 image tokens (the benchmark's medium 4x4 lattice puts
  one cell on 2x2 patches), hidden 128, 3 layers, 4 heads, quick_gelu; the features are
  the last layer's (`vision_feature_layer=-1`: with random init there is no pretrained
  head layer to skip, so the penultimate layer of LLaVA-1.5 would only waste a layer);
- text: LLaMA, hidden 256, 4 layers, 8 heads / 4 KV heads (head 32), SwiGLU 512,
  max positions 1024 (the genai builder stores cos/sin caches of that length);
- vocabulary: a byte-level BPE trained on the benchmark's text in the llava_v1 template.

The tokenizer is the tiny fixtures' kind (`tools/export/tiny.py`): byte-level BPE with
no prefix space, `<unk>`=0, `<s>`=1, `</s>`=2, `<image>` an added special token (last id),
post-processor `<s> $A`. Byte-level means every text encodes (no unknown words at all;
`<unk>` is kept for the id layout) and decoding gives back the exact bytes, spaces and
periods included, with the Rust `tokenizers` crate (0.23) as with Python's. The
pre-tokenizer splits words from punctuation, so "." is always a token of its own: the
runtime's period step delimiter ends a step exactly at the sentence end.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "export"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

import prompt as P  # noqa: E402

UNK, BOS, EOS = "<unk>", "<s>", "</s>"

# The model's shape (see the module docs); warmup.py can override any of these.
DEFAULT_SHAPE = dict(
    image_size=64, patch_size=8, vision_hidden=128, vision_layers=3, vision_heads=4, vision_intermediate=512,
    hidden=256, layers=4, heads=8, kv_heads=4, intermediate=512, max_positions=1024,
)


# ----------------------------------------------------------------------------- text

def records_text(records):
    """Every text a LLaVA training record (tsst's warm-up / D+ / Dv JSON) contributes,
    in the exact template inference builds: `SYSTEM USER: <image>\\n... ASSISTANT: chain`."""
    for r in records:
        turns = {t["from"]: t["value"] for t in r["conversations"]}
        human = turns["human"]
        has_image = r.get("image") is not None
        yield P.conversation_from_prompt(human.removeprefix(P.IMAGE_TOKEN + "\n"), has_image, turns["gpt"])


def corpus(records, aokvqa=()):
    """Template lines, then the records' texts, then every rationale and choice of the
    A-OKVQA-format records `aokvqa` (so paraphrased chains tokenize as well)."""
    lines = [P.SYSTEM, P.INSTRUCTION, "USER: <image>", "ASSISTANT:", "Question:", "Options:", "Context:",
             "Final Answer: (A)", "Final Answer: (B)", "Final Answer: (C)", "Final Answer: (D)",
             "A. B. C. D. E.", " ".join(str(i) for i in range(0, 41))]
    lines += [f"Step {k}: " for k in range(1, 10)]
    lines += list(records_text(records))
    for r in aokvqa:
        lines.append(r["question"])
        lines += list(r["choices"]) + list(r.get("rationales", []))
    return lines


def train_tokenizer(lines, vocab_size=1024) -> Tokenizer:
    """Byte-level BPE over `lines` with `vocab_size` ids in all (`<image>` is the last)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, special_tokens=[UNK, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    tok.add_special_tokens([P.IMAGE_TOKEN])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    assert (tok.token_to_id(UNK), tok.token_to_id(BOS), tok.token_to_id(EOS)) == (0, 1, 2)
    return tok


def special_ids(tok):
    return {"bos": 1, "eos": 2, "pad": 0, "image": tok.token_to_id(P.IMAGE_TOKEN)}


def save_tokenizer(tok, d):
    """tokenizer.json plus tokenizer_config.json, the files `export_llava.py`,
    `train.py` and the genai builder read from a checkpoint folder."""
    from transformers import PreTrainedTokenizerFast
    os.makedirs(d, exist_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                            pad_token=UNK).save_pretrained(d)
    tok.save(os.path.join(d, "tokenizer.json"))


# ----------------------------------------------------------------------------- model

def config(tok, **shape):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    s = {**DEFAULT_SHAPE, **shape}
    text = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=s["hidden"], intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
        head_dim=s["hidden"] // s["heads"], max_position_embeddings=s["max_positions"], rms_norm_eps=1e-5,
        rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, initializer_range=0.02)
    vision = CLIPVisionConfig(
        hidden_size=s["vision_hidden"], intermediate_size=s["vision_intermediate"],
        num_hidden_layers=s["vision_layers"], num_attention_heads=s["vision_heads"], image_size=s["image_size"],
        patch_size=s["patch_size"], num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        projection_dim=s["vision_hidden"], initializer_range=0.02)
    n_img = (s["image_size"] // s["patch_size"]) ** 2
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.token_to_id(P.IMAGE_TOKEN),
                       projector_hidden_act="gelu", vision_feature_layer=-1,
                       vision_feature_select_strategy="default", image_seq_length=n_img,
                       multimodal_projector_bias=True, tie_word_embeddings=False)


def build(tok, seed=0, attn="sdpa", **shape):
    """A randomly initialised small LLaVA (Hugging Face's initialisation, seeded)."""
    from transformers import LlavaForConditionalGeneration
    torch.manual_seed(seed)
    cfg = config(tok, **shape)
    cfg._attn_implementation = attn
    return LlavaForConditionalGeneration(cfg)


def n_image_tokens(cfg):
    vc = cfg.vision_config
    return (vc.image_size // vc.patch_size) ** 2


# ----------------------------------------------------------------------------- images

def pack_images(root, paths, image_size, out):
    """The uint8 [S, S, 3] images after LLaVA's pad + PIL bicubic resize + crop
    (`tools/export/preprocess.py`, what the runtime does), for every relative path in
    `paths`, into one compressed .npz (the GPU machine gets them without the JPEGs)."""
    import preprocess
    from PIL import Image
    paths = sorted(set(paths))
    arr = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        with Image.open(os.path.join(root, p)) as im:
            arr[i] = preprocess.preprocess_u8(im, image_size)
    np.savez_compressed(out, images=arr, paths=np.array(paths))
    return len(paths)


class Images:
    """The packed images as a uint8 tensor; `pixels(idx)` normalises like preprocess.py."""

    def __init__(self, path, device="cpu"):
        z = np.load(path)
        self.index = {str(p): i for i, p in enumerate(z["paths"])}
        self.u8 = torch.from_numpy(z["images"]).permute(0, 3, 1, 2).contiguous().to(device)
        import preprocess
        self.mean = torch.tensor(preprocess.MEAN, device=device)[:, None, None]
        self.std = torch.tensor(preprocess.STD, device=device)[:, None, None]

    def pixels(self, idx):
        x = self.u8[idx].to(torch.float32) / 255.0
        return (x - self.mean) / self.std


def load_json(path):
    with open(path) as f:
        return json.load(f)
