"""The torch modules exported to ONNX: vision encoder + projector, token embedding,
value head and (torch route) the decoder with a KV cache."""
import math

import torch
from torch import nn


def llava_parts(model):
    """(vision_tower, projector, language_model, lm_head, embed_tokens) of a
    transformers 5.x LlavaForConditionalGeneration."""
    inner = model.model
    return (inner.vision_tower, inner.multi_modal_projector, inner.language_model,
            model.lm_head, inner.language_model.embed_tokens)


class VisionEncoder(nn.Module):
    """pixel_values [B, 3, S, S] -> image_features [B, N, hidden]: CLIP hidden state of
    `feature_layer` (-2: the penultimate layer), CLS dropped ("default"), then the
    multi-modal projector."""

    def __init__(self, vision_tower, projector, feature_layer: int, select_strategy: str):
        super().__init__()
        if select_strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy {select_strategy!r} unsupported")
        if not isinstance(feature_layer, int):
            raise ValueError(f"vision_feature_layer {feature_layer!r}: only one layer is supported")
        self.vision_tower = vision_tower
        self.projector = projector
        self.feature_layer = feature_layer
        self.drop_cls = select_strategy == "default"

    def forward(self, pixel_values):
        out = self.vision_tower(pixel_values, output_hidden_states=True)
        feats = out.hidden_states[self.feature_layer]
        if self.drop_cls:
            feats = feats[:, 1:]
        return self.projector(feats)


class Embed(nn.Module):
    def __init__(self, embed_tokens):
        super().__init__()
        self.embed_tokens = embed_tokens

    def forward(self, input_ids):
        return self.embed_tokens(input_ids)


class ValueHead(nn.Module):
    """hidden_states [B, hidden] -> value [B]: LayerNorm then Linear(hidden, 1), raw."""

    def __init__(self, hidden: int, eps: float = 1e-5):
        super().__init__()
        self.ln = nn.LayerNorm(hidden, eps=eps)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, hidden_states):
        return self.linear(self.ln(hidden_states)).squeeze(-1)


def _rms_norm(x, weight, eps):
    dtype = x.dtype
    xf = x.to(torch.float32)
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(dtype)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class TorchDecoder(nn.Module):
    """A LLaMA decoder step written out by hand over the Hugging Face weights, for
    torch.onnx.export (the torch route). Inputs: inputs_embeds [B, T, H], attention_mask
    [B, P+T] int64 (1 = real), position_ids [B, T] int64, then past key/value per layer
    [B, KV, P, D]. Outputs: logits [B, T, V] (unless no lm_head), hidden_states
    [B, T, H] (final norm, when asked), present key/value per layer [B, KV, P+T, D].
    Causality is by index (key j is visible to query i when j <= P + i) and by the mask;
    positions come from position_ids alone, so left and right padding both work.
    Exported with a mask [B, T, P+T] instead, the mask alone says which keys each query
    sees (tree attention: several continuations of one past side by side in one run;
    bench/gpu/tree_value.py)."""

    def __init__(self, language_model, lm_head, text_config, with_logits=True, with_hidden=False):
        super().__init__()
        rope = getattr(text_config, "rope_parameters", None) or {}
        rope_type = rope.get("rope_type", "default")
        if rope_type != "default":
            raise ValueError(f"rope type {rope_type!r} unsupported by the torch route")
        theta = rope.get("rope_theta", getattr(text_config, "rope_theta", 10000.0))
        self.lm = language_model
        self.lm_head = lm_head if with_logits else None
        self.with_hidden = with_hidden
        self.num_layers = text_config.num_hidden_layers
        self.num_heads = text_config.num_attention_heads
        self.num_kv = text_config.num_key_value_heads
        self.head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // self.num_heads
        self.eps = text_config.rms_norm_eps
        inv = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        b, t, _ = inputs_embeds.shape
        dtype = inputs_embeds.dtype
        past_len = past[0].shape[2]
        freqs = position_ids.to(torch.float32)[..., None] * self.inv_freq  # [B, T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos().to(dtype)[:, None]
        sin = emb.sin().to(dtype)[:, None]
        q_pos = torch.arange(t, dtype=torch.int64) + past_len
        k_pos = torch.arange(past_len + t, dtype=torch.int64)
        if attention_mask.dim() == 3:
            visible = attention_mask[:, None] > 0
        else:
            visible = (k_pos[None, :] <= q_pos[:, None])[None, None] & (attention_mask[:, None, None, :] > 0)
        bias = torch.where(visible, torch.tensor(0.0), torch.tensor(torch.finfo(torch.float32).min))
        rep = self.num_heads // self.num_kv
        scale = 1.0 / math.sqrt(self.head_dim)

        x = inputs_embeds
        presents = []
        for i, layer in enumerate(self.lm.layers):
            attn = layer.self_attn
            h = _rms_norm(x, layer.input_layernorm.weight, self.eps)
            q = attn.q_proj(h).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(b, t, self.num_kv, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(b, t, self.num_kv, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            k = torch.cat((past[2 * i], k), dim=2)
            v = torch.cat((past[2 * i + 1], v), dim=2)
            presents += [k, v]
            kr = k.repeat_interleave(rep, dim=1) if rep > 1 else k
            vr = v.repeat_interleave(rep, dim=1) if rep > 1 else v
            scores = torch.matmul(q, kr.transpose(2, 3)).to(torch.float32) * scale + bias
            probs = torch.softmax(scores, dim=-1).to(dtype)
            o = torch.matmul(probs, vr).transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)
            x = x + attn.o_proj(o)
            h = _rms_norm(x, layer.post_attention_layernorm.weight, self.eps)
            mlp = layer.mlp
            x = x + mlp.down_proj(nn.functional.silu(mlp.gate_proj(h)) * mlp.up_proj(h))
        hidden = _rms_norm(x, self.lm.norm.weight, self.eps)
        outs = []
        if self.lm_head is not None:
            outs.append(self.lm_head(hidden))
        if self.with_hidden:
            outs.append(hidden)
        return tuple(outs + presents)

    def output_names(self):
        names = []
        if self.lm_head is not None:
            names.append("logits")
        if self.with_hidden:
            names.append("hidden_states")
        for i in range(self.num_layers):
            names += [f"present.{i}.key", f"present.{i}.value"]
        return names

    def input_names(self):
        names = ["inputs_embeds", "attention_mask", "position_ids"]
        for i in range(self.num_layers):
            names += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        return names
