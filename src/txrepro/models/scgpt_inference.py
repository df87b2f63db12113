"""Inference forward of scgpt's TransformerModel encoder through fused attention.

PyTorch's fast path for `nn.TransformerEncoderLayer` in eval mode (`_native_multi_head_attention`)
builds the whole (heads x L x L) score matrix with bmm and softmax on CPU. At scGPT's 3,001 tokens
that is most of a forward pass (73% bmm, 15% softmax, measured at 4 layers x 128). The same
attention through `F.scaled_dot_product_attention` is computed block by block (flash kernel on CPU
and CUDA): equal to float rounding and 2.6x faster per sequence there (benchmarks/README.md,
age_clock). Training, autograd through the encoder and layouts this does not know (batch norm,
batch labels, flash-attn layers) go through scgpt's own `_encode` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _fusable(model: nn.Module) -> bool:
    """True when the encoder is plain PyTorch layers that this module reproduces exactly."""
    enc = getattr(model, "transformer_encoder", None)
    if not isinstance(enc, nn.TransformerEncoder) or model.training:
        return False
    if getattr(model, "dsbn", None) is not None or getattr(model, "bn", None) is not None:
        return False
    if torch.is_grad_enabled() and any(p.requires_grad for p in enc.parameters()):
        return False
    for layer in enc.layers:
        attn = getattr(layer, "self_attn", None)
        if not isinstance(layer, nn.TransformerEncoderLayer) or not isinstance(attn, nn.MultiheadAttention):
            return False
        if not (attn.batch_first and attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn):
            return False
    return True


def _self_attention(attn: nn.MultiheadAttention, x: Tensor, attend: Tensor | None) -> Tensor:
    batch, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(batch, length, 3, heads, width // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, length, head_dim)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, length, width))


def _layer(layer: nn.TransformerEncoderLayer, x: Tensor, attend: Tensor | None) -> Tensor:
    """nn.TransformerEncoderLayer.forward in eval mode (dropout is the identity)."""
    feed_forward = lambda h: layer.linear2(layer.activation(layer.linear1(h)))  # noqa: E731
    if layer.norm_first:
        x = x + _self_attention(layer.self_attn, layer.norm1(x), attend)
        return x + feed_forward(layer.norm2(x))
    x = layer.norm1(x + _self_attention(layer.self_attn, x, attend))
    return layer.norm2(x + feed_forward(x))


def encode(model: nn.Module, src: Tensor, values: Tensor, src_key_padding_mask: Tensor | None = None) -> Tensor:
    """Token outputs (batch, seq, d_model) of `model._encode(src, values, src_key_padding_mask)`.

    Padded positions come out as zeros, as PyTorch's nested-tensor path returns them, so a mean
    over all positions (scgpt's avg-pool) sees the same numbers either way.
    """
    if not _fusable(model):
        return model._encode(src, values, src_key_padding_mask, None)
    tokens = model.encoder(src)
    model.cur_gene_token_embs = tokens  # as _encode leaves it
    expression = model.value_encoder(values)
    x = tokens * expression.unsqueeze(2) if model.input_emb_style == "scaling" else tokens + expression
    attend = None if src_key_padding_mask is None else ~src_key_padding_mask[:, None, None, :]
    for layer in model.transformer_encoder.layers:
        x = _layer(layer, x, attend)
    if model.transformer_encoder.norm is not None:
        x = model.transformer_encoder.norm(x)
    if src_key_padding_mask is not None:
        x = x.masked_fill(src_key_padding_mask.unsqueeze(-1), 0.0)
    return x
