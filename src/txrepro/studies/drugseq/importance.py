"""Gradient x Input gene importance: I_g = mean_i |x_ig * dy_i/dx_ig| over all wells.

The target y is one head output. papers/drugseq.md defines it on the activation head (`act`, our
default); the code since 2025-12-04 uses the classification logit (`logit`). `scores3[i]` (score
i in file order: pseudotime_z, cytoscore_z, Tscore_z) and `latent[i]` are the other targets the
original offered. The model runs in eval mode (no dropout), so attention takes the fused kernel
and its backward. The input is what the model saw (z-scored when training used the z-score).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch

from txrepro.errors import InputError
from txrepro.runtime import progress

TARGET_HELP = "act (activation head, as papers/drugseq.md), logit (classification logit, the code's default), scores3[i] or latent[i]"
_INDEXED = re.compile(r"^(scores3|latent)\[(\d+)\]$")


def target_selector(target: str, n_scores: int = 3, latent_dim: int = 32) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
    """A function picking one scalar per well from the model's head outputs."""
    t = target.strip()
    if t in ("act", "logit"):
        return lambda out: out[t]
    m = _INDEXED.match(t)
    if m:
        head, i = m.group(1), int(m.group(2))
        size = n_scores if head == "scores3" else latent_dim
        if i < size:
            return lambda out: out[head][:, i]
        raise InputError("--gradinput-target", "gradinput target", f"{head}[0]..{head}[{size - 1}]", repr(target))
    raise InputError("--gradinput-target", "gradinput target", TARGET_HELP, repr(target))


def grad_x_input(
    model: torch.nn.Module,
    x: np.ndarray,
    select: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
    batch_size: int = 32,
    device: str = "cpu",
) -> np.ndarray:
    """Per-well saliency |x * dy/dx| (wells x genes, float64).

    Wells are independent in eval mode, so summing y over a batch gives each well its own gradient.
    """
    model.eval()
    out = np.empty(x.shape, dtype=np.float64)
    starts = range(0, len(x), batch_size)
    for start in progress(starts, desc="drugseq grad x input", total=len(starts)):
        xb = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size])).to(device).requires_grad_(True)
        y = select(model(xb))
        (grad,) = torch.autograd.grad(y.sum(), xb)
        out[start:start + len(xb)] = (grad * xb).abs().detach().double().cpu().numpy()
    return out


def importance_table(saliency: np.ndarray, genes: list[str]) -> pd.DataFrame:
    """Gene, GradInputImportance (mean over wells), rank; sorted descending as the original wrote it."""
    df = pd.DataFrame({"Gene": genes, "GradInputImportance": saliency.mean(axis=0)})
    df = df.sort_values("GradInputImportance", ascending=False, kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df
