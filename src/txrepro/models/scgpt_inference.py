"""Inference through fused attention for scgpt models built on `nn.TransformerEncoder`.

PyTorch's fast path for `nn.TransformerEncoderLayer` in eval mode (`_native_multi_head_attention`)
builds the whole (heads x L x L) score matrix with bmm and softmax on CPU. At scGPT's 3,001 tokens
that is most of a forward pass (73% bmm, 15% softmax, measured at 4 layers x 128). The same
attention through `F.scaled_dot_product_attention` is computed block by block (flash kernel on CPU
and CUDA): equal to float rounding, 2.9-3.1x faster per sequence at 3,002 tokens with 4 x 4 x 128 and
1.7-1.8x with 12 x 8 x 512 on one CPU thread (benchmarks/README.md, age_clock).

`fuse_attention(model)` swaps the model's `transformer_encoder` for `FusedAttentionEncoder`, which
holds the same layer modules (same parameters, same state-dict keys), so scgpt's own `_encode`,
`forward` and `pred_perturb` use it unchanged. Training, autograd through the encoder, attention
masks and layers it does not know go through PyTorch's encoder, exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def _known_layer(layer: nn.Module) -> bool:
    attn = getattr(layer, "self_attn", None)
    return (
        isinstance(layer, nn.TransformerEncoderLayer)
        and isinstance(attn, nn.MultiheadAttention)
        and attn.batch_first
        and attn._qkv_same_embed_dim
        and attn.bias_k is None
        and not attn.add_zero_attn
    )


class FusedAttentionEncoder(nn.Module):
    """Stands in for an `nn.TransformerEncoder`: fused attention at inference, PyTorch's otherwise."""

    def __init__(self, encoder: nn.TransformerEncoder) -> None:
        super().__init__()
        self.layers = encoder.layers  # the same modules: parameters and state-dict keys unchanged
        self.norm = encoder.norm
        self.known_layers = all(_known_layer(layer) for layer in encoder.layers)
        self.enabled = True  # torch_attention() turns it off
        object.__setattr__(self, "torch_encoder", encoder)  # not a submodule: its parameters are ours

    def fused(self) -> bool:
        """Eval mode, known layers and no gradient wanted through them."""
        if self.training or not self.known_layers or not self.enabled:
            return False
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))

    def forward(self, src: Tensor, mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None, is_causal: bool | None = None) -> Tensor:
        """Padded positions come out as zeros, as PyTorch's nested-tensor path returns them."""
        if mask is not None or is_causal or not self.fused():
            self.torch_encoder.train(self.training)
            return self.torch_encoder(src, mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        pad = src_key_padding_mask
        if pad is not None and pad.dtype != torch.bool:
            pad = pad != 0
        attend = None if pad is None or not bool(pad.any()) else ~pad[:, None, None, :]
        x = src
        for layer in self.layers:
            x = _layer(layer, x, attend)
        if self.norm is not None:
            x = self.norm(x)
        return x if attend is None else x.masked_fill(pad.unsqueeze(-1), 0.0)


def fuse_attention(model: nn.Module) -> nn.Module:
    """Give an scgpt model (TransformerModel, TransformerGenerator) fused inference attention, in place."""
    encoder = getattr(model, "transformer_encoder", None)
    if isinstance(encoder, nn.TransformerEncoder):
        model.transformer_encoder = FusedAttentionEncoder(encoder)
    return model


@contextmanager
def torch_attention(model: nn.Module) -> Iterator[nn.Module]:
    """PyTorch's own encoder for the duration: what scgpt runs, for references and benchmarks."""
    encoder = getattr(model, "transformer_encoder", None)
    fused = isinstance(encoder, FusedAttentionEncoder)
    before = encoder.enabled if fused else None
    if fused:
        encoder.enabled = False
    try:
        yield model
    finally:
        if fused:
            encoder.enabled = before
