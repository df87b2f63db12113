"""Control pairing by entropic optimal transport (POT), as GPO-VAE's `get_pair_mode: ot`.

Within each split and each perturbation (controls included), perturbed cells and the split's
control cells get uniform marginals; the cost is the Euclidean distance between their
normalise+log1p profiles over the perturbed genes, divided by 100; Sinkhorn with epsilon 1. Each
perturbed cell is paired with the control that receives the largest transport mass from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from txrepro.runtime import get_logger, progress

log = get_logger(__name__)


def sinkhorn_pairing(
    perturbed: np.ndarray,
    controls: np.ndarray,
    *,
    epsilon: float = 1.0,
    cost_scale: float = 100.0,
    device: str = "cpu",
    backend: str | None = None,
) -> np.ndarray:
    """Index (into `controls`) of the maximum-mass control for every perturbed row.

    backend 'numpy' (default on CPU) or 'torch' (default with device 'cuda'): the same POT calls on
    torch tensors through POT's backend layer, float64, on `device`.
    """
    import ot  # imports torch when installed: only when pairing is needed

    if perturbed.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    backend = backend or ("torch" if device.startswith("cuda") else "numpy")
    if backend == "torch":
        import torch

        xp = torch.as_tensor(perturbed, dtype=torch.float64, device=device)
        xc = torch.as_tensor(controls, dtype=torch.float64, device=device)
        a = torch.full((xp.shape[0],), 1.0 / xp.shape[0], dtype=torch.float64, device=device)
        b = torch.full((xc.shape[0],), 1.0 / xc.shape[0], dtype=torch.float64, device=device)
        cost = ot.dist(xp, xc, metric="euclidean") / cost_scale
        plan = ot.sinkhorn(a, b, cost, epsilon)
        return plan.argmax(dim=1).cpu().numpy().astype(np.int64)
    xp = np.asarray(perturbed, dtype=np.float64)
    xc = np.asarray(controls, dtype=np.float64)
    a = np.full(xp.shape[0], 1.0 / xp.shape[0])
    b = np.full(xc.shape[0], 1.0 / xc.shape[0])
    cost = ot.dist(xp, xc, metric="euclidean") / cost_scale
    plan = ot.sinkhorn(a, b, cost, epsilon)
    return np.asarray(plan).argmax(axis=1).astype(np.int64)


def pair_controls(
    expression: np.ndarray,
    labels: Sequence[str],
    splits: Sequence[str],
    *,
    control_label: str,
    epsilon: float = 1.0,
    cost_scale: float = 100.0,
    device: str = "cpu",
) -> np.ndarray:
    """Positional index of each cell's matched control (a control of the same split).

    `expression` is cells x perturbed genes on the normalise+log1p scale. Control cells are paired
    too (the original runs the same transport for the control group).
    """
    labels = np.asarray(labels).astype(str)
    splits = np.asarray(splits).astype(str)
    matched = np.full(len(labels), -1, dtype=np.int64)
    groups = [(s, t) for s in ("train", "val", "test") for t in sorted(set(labels[splits == s]))]
    for split, label in progress(groups, desc="OT control pairing", total=len(groups)):
        in_split = splits == split
        ctrl_idx = np.flatnonzero(in_split & (labels == control_label))
        cell_idx = np.flatnonzero(in_split & (labels == label))
        if ctrl_idx.size == 0:
            raise ValueError(f"no control cells in split {split}")
        best = sinkhorn_pairing(expression[cell_idx], expression[ctrl_idx], epsilon=epsilon, cost_scale=cost_scale, device=device)
        matched[cell_idx] = ctrl_idx[best]
    return matched
