"""Figures of the gpo_vae study (PNG, 150 dpi, through txrepro.report.figures.save_png)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from txrepro.report.figures import save_png


def training_curve(history: pd.DataFrame, best_epoch: int, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    ax.plot(history["epoch"], history["train_loss"], label="train", color="#1b9e77")
    ax.plot(history["epoch"], history["val_loss"], label="validation", color="#d95f02")
    ax.axvline(best_epoch, color="black", ls="--", lw=0.8, label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per cell (negative ELBO + GRN terms, nats)")
    ax.set_title("Training and validation loss")
    ax.legend(fontsize=8)
    ax = axes[1]
    for col, colour in (("grn_loss", "#7570b3"), ("cf_divergence", "#e7298a"), ("penalty", "#66a61e")):
        ax.plot(history["epoch"], history[col].clip(lower=1e-8), label=col.replace("_", " "), color=colour)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss term (log scale)")
    ax.set_title("GRN alignment, counterfactual and sparsity terms")
    ax.legend(fontsize=8)
    fig.suptitle("GPO-VAE training")
    fig.tight_layout()
    return save_png(fig, path)


def ate_scatter(panels: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: Path) -> Path:
    """One panel per (title -> (reference ATE, predicted ATE, Pearson r))."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    for ax, (title, (ref, pred, r)) in zip(axes[0], panels.items()):
        ax.scatter(ref.ravel(), pred.ravel(), s=4, alpha=0.4, color="#386cb0", rasterized=True)
        lo = float(min(ref.min(), pred.min()))
        hi = float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("data ATE (log2 of counts per 1e4)")
        ax.set_ylabel("predicted ATE (log2 of counts per 1e4)")
        ax.set_title(f"{title}\nPearson r = {r:.3f}", fontsize=9)
    fig.suptitle("Average treatment effects: every perturbation x gene")
    fig.tight_layout()
    return save_png(fig, path)


def pr_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray, tuple[float, float]]], path: Path) -> Path | None:
    """Precision-recall across edge-probability thresholds, one line per reference network."""
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    styles = ["-", "--", ":", "-.", (0, (5, 1))]
    for i, (name, (precision, recall, point)) in enumerate(curves.items()):
        line, = ax.step(recall, precision, where="post", label=name, ls=styles[i % len(styles)], lw=1.6)
        ax.scatter([point[1]], [point[0]], color=line.get_color(), marker="o", zorder=3)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("recall (fraction of reference edges among perturbed genes)")
    ax.set_ylabel("precision (fraction of predicted edges in the reference)")
    ax.set_title("Learned GRN vs reference networks\n(perturbed-gene block; dot = probability > 0.5)", fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def grn_heatmap(prob: np.ndarray, n_perturbed: int, path: Path, names: list[str] | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(7, max(2.5, 7 * n_perturbed / max(prob.shape[1], 1))))
    im = ax.imshow(prob[:n_perturbed], aspect="auto", vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
    ax.axvline(n_perturbed - 0.5, color="white", lw=0.8)
    if names is not None and len(names) <= 60:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n_perturbed), names[:n_perturbed], fontsize=7)
        ax.set_xlabel("target treatment gene (perturbed genes | extra genes)")
        ax.set_ylabel("perturbed gene (source)")
    else:
        ax.set_xlabel("target treatment gene (perturbed genes | extra genes), index")
        ax.set_ylabel("perturbed gene (source), index")
    fig.suptitle("Learned GRN: edge probability q(M), rows of perturbed genes")
    fig.colorbar(im, ax=ax, label="edge probability")
    return save_png(fig, path)


def wasserstein_histogram(edges: list[float], random_pairs: list[float], path: Path) -> Path | None:
    if not edges and not random_pairs:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8))
    data = [x for x in (edges, random_pairs) if x]
    bins = np.histogram_bin_edges(np.concatenate(data), bins=30)
    if edges:
        ax.hist(edges, bins=bins, alpha=0.6, label=f"predicted edges (n={len(edges)})", color="#1b9e77", density=True)
    if random_pairs:
        ax.hist(random_pairs, bins=bins, alpha=0.6, label=f"random pairs (n={len(random_pairs)})", color="#999999", density=True)
    ax.set_xlabel("Wasserstein distance, child in control vs parent-perturbed test cells (log1p units)")
    ax.set_ylabel("density")
    ax.set_title("CausalBench statistical evaluation")
    ax.legend(fontsize=8)
    return save_png(fig, path)
