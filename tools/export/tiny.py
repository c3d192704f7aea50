"""The tiny random LLaVA and its byte-level BPE tokenizer, for the committed fixtures."""
import itertools
import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

import prompt as P

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
TINY_VOCAB = 512  # 511 trained entries (3 specials, 256 bytes, merges) + <image>

SHAPES = ["circle", "square", "triangle", "star", "rectangle", "oval", "line", "dot"]
COLOURS = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple", "grey"]
PLACES = ["left", "right", "top", "bottom", "middle", "corner", "centre"]


def corpus():
    """A fixed text corpus: the template, the task instruction and shape/colour sentences."""
    rng = random.Random(1234)
    lines = [P.SYSTEM, P.INSTRUCTION, "USER: <image>", "ASSISTANT:", "Question:", "Options:",
             "Context:", "Final Answer: (A)", "Final Answer: (B)", "Final Answer: C",
             "Step 1: I see shapes.", "Step 2: The answer is B.", "A. B. C. D. E.",
             "0 1 2 3 4 5 6 7 8 9 10", "###", "---", "Human", "USER"]
    for shape, colour, place in itertools.product(SHAPES, COLOURS, PLACES):
        if rng.random() < 0.5:
            lines.append(f"There is a {colour} {shape} in the {place} of the image.")
        else:
            lines.append(f"Which shape is {colour}? The {shape} at the {place} is {colour}.")
    for k in range(1, 9):
        a, b = rng.choice(SHAPES), rng.choice(COLOURS)
        lines.append(f"Step {k}: The {a} is {b}, so the answer is {P.letter(k % 4)}.")
    return lines


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB - 1,
        min_frequency=1,
        special_tokens=[UNK, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_special_tokens([P.IMAGE_TOKEN])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    assert tok.token_to_id(UNK) == 0 and tok.token_to_id(BOS) == 1 and tok.token_to_id(EOS) == 2
    return tok


def tiny_config(vocab_size: int, image_token_id: int, pad_token_id: int) -> LlavaConfig:
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=pad_token_id,
        initializer_range=0.2,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
        num_channels=3,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=32,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token_id,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=16,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )


def init_random_(model: torch.nn.Module, seed: int, std: float = 0.2):
    """Re-initialise every parameter from `seed`: matrices N(0, std), norm weights
    1 + N(0, 0.1), other vectors N(0, 0.05). A large std keeps greedy argmax free of ties."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def build_tiny(tok: Tokenizer, seed: int) -> LlavaForConditionalGeneration:
    cfg = tiny_config(tok.get_vocab_size(), tok.token_to_id(P.IMAGE_TOKEN), tok.token_to_id(UNK))
    cfg._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(cfg)
    init_random_(model, seed)
    return model.eval()


# Full-size shapes for timing runs with random weights (no checkpoint needed).
SHAPES_FULL = {
    # llava-hf/llava-1.5-7b-hf: Vicuna-7B (LLaMA-7B) text model, CLIP ViT-L/14 at 336 px.
    "llava-1.5-7b": {
        "text": dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096),
        "vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=336, patch_size=14, projection_dim=768),
    },
}


def shaped_config(shape: str, num_layers, image_token_id: int, pad_token_id: int) -> LlavaConfig:
    """The LLaVA config of `shape` (SHAPES_FULL), optionally with fewer text layers."""
    spec = SHAPES_FULL[shape]
    text_kw = dict(spec["text"])
    if num_layers:
        text_kw["num_hidden_layers"] = num_layers
    text = LlamaConfig(**text_kw, rms_norm_eps=1e-5, hidden_act="silu", rope_theta=10000.0,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=pad_token_id,
                       initializer_range=0.02)
    vision = CLIPVisionConfig(**spec["vision"], num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    n_img = (vision.image_size // vision.patch_size) ** 2
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                       projector_hidden_act="gelu", vision_feature_layer=-2,
                       vision_feature_select_strategy="default", image_seq_length=n_img,
                       multimodal_projector_bias=True, tie_word_embeddings=False)


def build_random_shaped(shape: str, num_layers, tok: Tokenizer, dtype, device: str) -> LlavaForConditionalGeneration:
    """A full-size LLaVA with Hugging Face's random initialisation (N(0, 0.02)), made on
    `device` (fast on a GPU) and returned on the CPU in `dtype`. Seed with
    torch.manual_seed first. For timing only: the weights mean nothing."""
    cfg = shaped_config(shape, num_layers, tok.token_to_id(P.IMAGE_TOKEN), tok.token_to_id(UNK))
    cfg._attn_implementation = "eager"
    with torch.device(device):
        model = LlavaForConditionalGeneration(cfg)
    return model.to(dtype).to("cpu").eval()


def init_value_head_(head: torch.nn.Module, seed: int):
    g = torch.Generator().manual_seed(seed + 7919)
    with torch.no_grad():
        head.ln.weight.copy_(1.0 + 0.1 * torch.randn(head.ln.weight.shape, generator=g))
        head.ln.bias.copy_(0.05 * torch.randn(head.ln.bias.shape, generator=g))
        head.linear.weight.copy_(0.2 * torch.randn(head.linear.weight.shape, generator=g))
        head.linear.bias.copy_(0.05 * torch.randn(head.linear.bias.shape, generator=g))
