"""The drugseq figures: loss curves, latent PCA, top metabolites by distance, top genes by importance."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.patches import Patch
from sklearn.decomposition import PCA

from txrepro.report.figures import save_png

COMPONENTS = (("total", "total"), ("mse", "MSE (3 scores)"), ("bce", "BCE (label)"), ("reg", "REG (legacy score)"))
DIRECTION_COLOURS = {"activating": "#d95f02", "inhibiting": "#1b9e77", "control": "#666666"}


def loss_curves(history: pd.DataFrame, best_epoch: int, path: Path) -> Path:
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), sharex=True)
    for ax, (key, title) in zip(axes, COMPONENTS):
        ax.plot(history["epoch"], history[f"train_{key}"], label="train", color="#1f77b4")
        ax.plot(history["epoch"], history[f"val_{key}"], label="validation", color="#d62728")
        ax.axvline(best_epoch, color="black", ls=":", lw=1, label=f"best epoch {best_epoch}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (per well)")
    axes[0].legend(fontsize=8)
    fig.suptitle("drugseq: training and validation losses (best checkpoint marked)")
    fig.tight_layout()
    return save_png(fig, path)


def latent_pca(latent: np.ndarray, label: np.ndarray, control: np.ndarray, path: Path, control_name: str) -> Path:
    pca = PCA(n_components=2, random_state=0)
    pcs = pca.fit_transform(latent.astype(np.float64))
    ev = pca.explained_variance_ratio_ * 100
    fig, ax = plt.subplots(figsize=(6.2, 5))
    for value, name, colour in ((0, "resting (label 0)", "#1b9e77"), (1, "activated (label 1)", "#d95f02")):
        m = (label == value) & ~control
        ax.scatter(pcs[m, 0], pcs[m, 1], s=14, alpha=0.6, color=colour, label=name, linewidths=0)
    ax.scatter(pcs[control, 0], pcs[control, 1], s=40, marker="*", color="black", label=f"{control_name} wells")
    centre = pcs[control].mean(axis=0)
    ax.scatter([centre[0]], [centre[1]], s=160, marker="X", color="#e7298a", edgecolor="white", label=f"{control_name} centre")
    ax.set_xlabel(f"PC1 of latent ({ev[0]:.1f}% variance)")
    ax.set_ylabel(f"PC2 of latent ({ev[1]:.1f}% variance)")
    ax.set_title("drugseq: latent space of all wells by activation label")
    ax.legend(fontsize=8, loc="best")
    return save_png(fig, path)


def top_metabolites(ranking: pd.DataFrame, control: str, path: Path, top: int = 25) -> Path:
    rows = ranking[ranking["meta_id"] != control].head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.26 * len(rows) + 1.2)))
    colours = [to_rgba(DIRECTION_COLOURS[d], 1.0 if beyond else 0.35) for d, beyond in zip(rows["direction"], rows["beyond_control_p95"])]
    ax.barh(rows["meta_id"], rows["euclidean_mean"], xerr=rows["euclidean_sd"].fillna(0), color=colours, ecolor="#444444", capsize=2)
    handles = [Patch(color=DIRECTION_COLOURS[d], label=f"{d} (sign of projection)") for d in ("activating", "inhibiting")]
    handles.append(Patch(color=to_rgba("#888888", 0.35), label=f"faded: within the {control} spread"))
    p95 = ranking.attrs.get("control_p95")
    if p95 is not None:
        handles.append(ax.axvline(p95, color="black", ls="--", lw=1, label=f"95th percentile of {control} wells"))
    ax.set_xlabel(f"mean Euclidean distance to {control} centre (latent units; bars: s.d. over wells)")
    ax.set_ylabel("metabolite")
    ax.set_title(f"drugseq: top {len(rows)} metabolites by latent distance to {control}")
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    return save_png(fig, path)


def top_genes(importance: pd.DataFrame, target: str, path: Path, top: int = 25) -> Path:
    rows = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.5, max(3.0, 0.26 * len(rows) + 1.2)))
    ax.barh(rows["Gene"], rows["GradInputImportance"], color="#7570b3")
    ax.set_xlabel(f"mean |x * d{target}/dx| over wells (target units)")
    ax.set_ylabel("gene")
    ax.set_title(f"drugseq: top {len(rows)} genes by Gradient x Input ({target})")
    return save_png(fig, path)
