"""GeneTransformerMultiTask: the DPF model, with attention that never materialises its maps.

Faithful to the original `src/model.py`: a token per gene (value projection + gene embedding), a
post-norm Transformer encoder (ReLU FFN, dropout on the residual branches), mean pooling over
genes, FC + ReLU + dropout, and four parallel linear heads (3 scores, label logit, scalar
activation, latent). Parameter names and initialisation follow `nn.TransformerEncoderLayer` (and,
like `nn.TransformerEncoder`, every layer starts as a deep copy of the first), so a state dict of
the original architecture loads unchanged and a test compares the two outputs.

Why our own encoder layer: `nn.TransformerEncoderLayer` calls scaled_dot_product_attention with
dropout_p=0.1 in training, and on CPU PyTorch's only fused kernel (flash attention for CPU) refuses
dropout, so SDPA silently falls back to the math kernel and materialises B x heads x G x G maps
(3.3 GB per layer at 2,541 genes, batch 32). Our layer calls F.scaled_dot_product_attention with
an attention-dropout that is separate from the residual dropout, so the fused kernel runs whenever
attention dropout is 0 (the CPU default; CUDA's fused kernels support dropout, so 0.1 there).
`attention="explicit"` computes softmax(QK^T/sqrt(d))V with full maps: the benchmark reference.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

AttentionImpl = Literal["fused", "explicit"]


@dataclass(frozen=True)
class ModelConfig:
    n_genes: int
    d_model: int = 128
    nhead: int = 4
    num_layers: int = 2
    dim_feedforward: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.0
    latent_dim: int = 32
    n_scores: int = 3
    attention: AttentionImpl = "fused"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class GeneSelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter layout."""

    def __init__(self, d_model: int, nhead: int, attention_dropout: float, attention: AttentionImpl) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model {d_model} is not divisible by nhead {nhead}")
        self.nhead = nhead
        self.attention_dropout = attention_dropout
        self.attention = attention
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention._reset_parameters
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, g, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, g, 3, self.nhead, d // self.nhead).permute(2, 0, 3, 1, 4)
        p = self.attention_dropout if self.training else 0.0
        if self.attention == "fused":
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            out = explicit_attention(q, k, v, dropout_p=p)
        return self.out_proj(out.transpose(1, 2).reshape(b, g, d))


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V with the full B x heads x G x G map in memory (the reference)."""
    attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


class EncoderLayer(nn.Module):
    """Post-norm layer: x = LN(x + Drop(SA(x))); x = LN(x + Drop(W2 Drop(ReLU(W1 x))))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = GeneSelfAttention(cfg.d_model, cfg.nhead, cfg.attention_dropout, cfg.attention)
        self.linear1 = nn.Linear(cfg.d_model, cfg.dim_feedforward)
        self.dropout = nn.Dropout(cfg.dropout)
        self.linear2 = nn.Linear(cfg.dim_feedforward, cfg.d_model)
        self.norm1 = nn.LayerNorm(cfg.d_model)  # eps 1e-5 as nn.TransformerEncoderLayer
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.self_attn(x)))
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class Encoder(nn.Module):
    """A stack of layers with nn.TransformerEncoder's state-dict keys (`layers.<i>....`)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        first = EncoderLayer(cfg)
        # nn.TransformerEncoder deep-copies one layer, so the original's layers start identical.
        self.layers = nn.ModuleList([first] + [copy.deepcopy(first) for _ in range(cfg.num_layers - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class GeneTransformerMultiTask(nn.Module):
    """Genes as tokens -> encoder -> mean pool -> FC -> parallel heads (scores3, logit, act, latent)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.value_proj = nn.Linear(1, cfg.d_model)
        self.gene_emb = nn.Embedding(cfg.n_genes, cfg.d_model)
        self.encoder = Encoder(cfg)
        self.fc = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.head_scores = nn.Linear(cfg.d_model, cfg.n_scores)
        self.head_cls = nn.Linear(cfg.d_model, 1)
        self.head_act = nn.Linear(cfg.d_model, 1)
        self.head_latent = nn.Linear(cfg.d_model, cfg.latent_dim)
        self.register_buffer("gene_ids", torch.arange(cfg.n_genes), persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: wells x genes (B, G) -> dict of head outputs."""
        h = self.value_proj(x.unsqueeze(-1)) + self.gene_emb(self.gene_ids)
        h = self.fc(self.encoder(h).mean(dim=1))
        return {
            "scores3": self.head_scores(h),
            "logit": self.head_cls(h).squeeze(-1),
            "act": self.head_act(h).squeeze(-1),
            "latent": self.head_latent(h),
        }


def resolve_attention_dropout(value: float | str, dropout: float, device: str) -> float:
    """`auto`: the residual dropout on CUDA (fused kernels take dropout), 0 on CPU (they do not)."""
    if value == "auto":
        return dropout if str(device).startswith("cuda") else 0.0
    return float(value)
