"""Correlation metrics of the paper: per-gene r across individuals, per-individual r across genes.

Undefined correlations (a constant prediction or observation) are NaN and left out of means and
medians, as the original's `calculate_correlations` and pandas' median did.
"""

from __future__ import annotations

import numpy as np


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two vectors; NaN when either is constant or fewer than 2 finite pairs remain."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    if denom == 0 or not np.isfinite(denom):
        return float("nan")
    return float(np.clip((x * y).sum() / denom, -1.0, 1.0))


def per_gene_pearson(pred: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """[genes x individuals] -> r per gene (across individuals)."""
    return np.array([pearson(p, o) for p, o in zip(pred, obs)])


def per_individual_pearson(pred: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """[genes x individuals] -> r per individual (across genes)."""
    return per_gene_pearson(pred.T, obs.T)


def summary(values: np.ndarray) -> tuple[float, float, int]:
    """(mean, median, n) over the defined values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(np.median(v)), int(v.size)
