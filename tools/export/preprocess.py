"""LLaVA-1.5 image preprocessing (image_aspect_ratio=pad), as TSST.md describes.

1. pad to a square with the CLIP mean colour (122, 116, 104), the image centred
   (offset (side - w) // 2, (side - h) // 2, as LLaVA's expand2square);
2. resize so the shortest side is `image_size` with PIL's BICUBIC filter (the filter
   CLIPImageProcessor uses: Keys cubic a = -0.5, support widened by the scale factor
   when shrinking), output rounded to uint8 by PIL;
3. centre crop `image_size` x `image_size` (a no-op after a square pad);
4. x / 255, then (x - mean) / std per channel; layout [3, S, S], RGB.
"""
import numpy as np
import torch
from PIL import Image

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
PAD_COLOR = (122, 116, 104)  # tuple(int(m * 255) for m in MEAN)


def pad_to_square(img: Image.Image, color=PAD_COLOR) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), color)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def resize_shortest(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    return img.resize((nw, nh), Image.BICUBIC)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    left = (w - size) // 2
    top = (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def preprocess_u8(img: Image.Image, image_size: int) -> np.ndarray:
    """Steps 1-3: the uint8 [S, S, 3] image that gets normalised."""
    img = img.convert("RGB")
    img = pad_to_square(img)
    img = resize_shortest(img, image_size)
    img = center_crop(img, image_size)
    return np.asarray(img, dtype=np.uint8)


def preprocess(img: Image.Image, image_size: int) -> torch.Tensor:
    """The float32 pixel_values [1, 3, S, S]."""
    u8 = preprocess_u8(img, image_size)
    x = torch.from_numpy(u8.copy()).permute(2, 0, 1).to(torch.float32) / 255.0
    mean = torch.tensor(MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(STD, dtype=torch.float32)[:, None, None]
    return ((x - mean) / std)[None]
