"""Reference numbers computed in PyTorch with the Hugging Face LLaVA (not with ONNX)."""
import torch
from PIL import Image, ImageDraw

import prompt as P

GOLDEN_QUESTION = {
    "question": "Which shape is red?",
    "choices": ["circle", "square", "triangle"],
    "context": None,
}
GOLDEN_PARTIALS = ["", "Step 1: I see shapes.", "Step 1: I see shapes. Final Answer: (B)"]
NEW_TOKENS = 12
LOGIT_STEPS = 3


def golden_image() -> Image.Image:
    """40x30 RGB: coloured shapes on a pale background (non-square, so padding matters)."""
    img = Image.new("RGB", (40, 30), (235, 230, 220))
    d = ImageDraw.Draw(img)
    d.ellipse((2, 3, 16, 17), fill=(220, 30, 30))
    d.rectangle((20, 4, 36, 14), fill=(30, 160, 60))
    d.polygon([(6, 28), (18, 19), (30, 28)], fill=(40, 60, 210))
    d.line((0, 0, 39, 29), fill=(250, 200, 0), width=1)
    return img


def golden_prompt(partial: str) -> str:
    q = GOLDEN_QUESTION
    return P.conversation(q["question"], q["choices"], q["context"], True, partial)


def summary(t: torch.Tensor, first: int = 8) -> dict:
    f = t.detach().to(torch.float64).flatten()
    return {"shape": list(t.shape), "sum": float(f.sum()), "abs_sum": float(f.abs().sum()),
            "first8": [float(x) for x in f[:first]]}


def expand_image_tokens(ids, image_id, n):
    out = []
    for i in ids:
        out.extend([image_id] * n if i == image_id else [i])
    return out


def _cache_kwargs(model, out):
    """transformers renamed `past_key_values` to `cache` in 5.2x; accept both."""
    import inspect
    if "cache" in inspect.signature(model.forward).parameters:
        return {"cache": out.cache}
    return {"past_key_values": out.past_key_values}


@torch.no_grad()
def greedy(model, input_ids, pixel_values, steps):
    """Greedy decoding with the HF model and its KV cache; never stops early (an EOS
    is recorded like any other token). Returns (new ids, per-step last logits)."""
    ids = torch.tensor([input_ids], dtype=torch.long, device=pixel_values.device)
    mask = torch.ones_like(ids)
    out = model(input_ids=ids, pixel_values=pixel_values, attention_mask=mask, use_cache=True)
    new, logits = [], []
    for step in range(steps):
        last = out.logits[0, -1].float()
        logits.append(last.cpu())
        nxt = int(last.argmax())
        new.append(nxt)
        if step == steps - 1:
            break
        mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype, device=mask.device)], dim=1)
        out = model(input_ids=torch.tensor([[nxt]], device=ids.device), attention_mask=mask,
                    use_cache=True, **_cache_kwargs(model, out))
    return new, logits


@torch.no_grad()
def last_hidden(model, input_ids, pixel_values):
    ids = torch.tensor([input_ids], dtype=torch.long, device=pixel_values.device)
    out = model.model(input_ids=ids, pixel_values=pixel_values, attention_mask=torch.ones_like(ids))
    return out.last_hidden_state[0, -1]
