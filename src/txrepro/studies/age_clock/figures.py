"""age_clock figures: ROC curves, per-tissue ROC-AUC, perturbation volcano and stability plots."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from sklearn.metrics import roc_auc_score, roc_curve

from txrepro.report.figures import save_png

MODEL_COLOURS = {"scgpt": "#1b9e77", "logreg_l1": "#7570b3"}
CALL_COLOURS = {"pro-ageing": "#d95f02", "anti-ageing": "#1b9e77", "no change": "#bbbbbb"}


def _colour(model: str) -> str:
    return MODEL_COLOURS["scgpt"] if model.startswith("scgpt") else MODEL_COLOURS["logreg_l1"]


def plot_roc(preds: pd.DataFrame, protocol: str, path: str | os.PathLike[str]) -> Path:
    """ROC curve of each model on all test cells (positive class old-age)."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for model, sub in preds.groupby("model", sort=False):
        if sub["label"].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(sub["label"], sub["p_old"], pos_label=1)
        auc = roc_auc_score(sub["label"], sub["p_old"])
        ax.plot(fpr, tpr, color=_colour(str(model)), lw=2, label=f"{model} (AUC {auc:.3f}, n={len(sub)})")
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--", label="chance")
    ax.set_xlabel("false positive rate (mid-age cells called old) [fraction]")
    ax.set_ylabel("true positive rate (old-age cells called old) [fraction]")
    ax.set_title(f"age_clock {protocol} protocol: ROC on test cells")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    return save_png(fig, path)


def plot_tissue_auc(preds: pd.DataFrame, protocol: str, path: str | os.PathLike[str]) -> Path:
    """ROC-AUC per tissue, one bar per model; the dashed lines are each model's mean over tissues."""
    rows = []
    for (model, tissue), sub in preds.groupby(["model", "tissue"], sort=True):
        auc = roc_auc_score(sub["label"], sub["p_old"]) if sub["label"].nunique() == 2 else np.nan
        rows.append({"model": model, "tissue": tissue, "auc": auc, "n": len(sub)})
    df = pd.DataFrame(rows)
    tissues = sorted(df["tissue"].unique())
    models = list(dict.fromkeys(preds["model"]))
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(tissues))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(tissues) + 2), 4.2))
    for i, model in enumerate(models):
        sub = df[df["model"] == model].set_index("tissue").reindex(tissues)
        ax.bar(x + (i - (len(models) - 1) / 2) * width, sub["auc"], width, color=_colour(model), label=model)
        ax.axhline(np.nanmean(sub["auc"]), color=_colour(model), ls="--", lw=1)
    ax.axhline(0.5, color="#999999", lw=1, ls=":")
    ax.set_xticks(x, [f"{t}\n(n={int(df[df.tissue == t]['n'].iloc[0])})" for t in tissues], fontsize=8, rotation=30 if len(tissues) > 6 else 0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("tissue (test cells)")
    ax.set_ylabel("ROC-AUC, old-age positive [0-1]")
    ax.set_title(f"age_clock {protocol} protocol: ROC-AUC per tissue (dashed: mean over tissues)")
    ax.legend(fontsize=8, loc="lower right")
    return save_png(fig, path)


def plot_volcano(genes: pd.DataFrame, protocol: str, alpha: float, threshold: float, path: str | os.PathLike[str], label_top: int = 12) -> Path:
    """Effect of overexpression vs knockdown on P(old) against significance, one dot per gene."""
    fig, ax = plt.subplots(figsize=(6.4, 5))
    y = -np.log10(genes["p_holm_median"].clip(lower=1e-300))
    for call, colour in CALL_COLOURS.items():
        m = (genes["call"] == call).to_numpy()
        if m.any():
            ax.scatter(genes["log2_oe_over_kd"][m], y[m], s=12 + 40 * genes["stability"][m], color=colour, alpha=0.8, label=f"{call} ({int(m.sum())})", edgecolors="none")
    ax.axhline(-np.log10(alpha), color="#666666", ls="--", lw=1)
    if threshold > 0:
        for t in (-threshold, threshold):
            ax.axvline(t, color="#666666", ls=":", lw=1)
    called = genes[genes["call"] != "no change"].assign(neglog_p=y).sort_values("neglog_p", ascending=False).head(label_top)
    for r in called.itertuples():
        ax.annotate(str(r.gene) + ("" if r.in_reference else "*"), (r.log2_oe_over_kd, r.neglog_p), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("log2( mean P(old | overexpressed) / mean P(old | knocked down) )  [log2 ratio]")
    ax.set_ylabel("-log10 Holm-adjusted p (median over runs)")
    ax.set_title(f"age_clock {protocol}: in-silico perturbation (dot size = stability; * = not in reference)")
    ax.legend(fontsize=8, loc="upper left")
    return save_png(fig, path)


def plot_stability(genes: pd.DataFrame, protocol: str, stability_rule: str, n_runs: int, path: str | os.PathLike[str], top: int = 30) -> Path:
    """Stability of the genes with a call, ranked, coloured by direction; hatched = in reference tables."""
    called = genes[genes["call"] != "no change"].sort_values(["stability", "p_holm_median"], ascending=[False, True]).head(top)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, max(3.5, 0.22 * len(called) + 1.5)), gridspec_kw={"width_ratios": [2, 1]})
    if called.empty:
        ax1.text(0.5, 0.5, "no gene with a call", ha="center", va="center", transform=ax1.transAxes)
        ax1.plot([], [])
        ax1.set_xlabel("stability [fraction of runs]")
        ax1.set_ylabel("gene")
    else:
        yy = np.arange(len(called))[::-1]
        bars = ax1.barh(yy, called["stability"], color=[CALL_COLOURS[c] for c in called["call"]])
        for bar, known in zip(bars, called["in_reference"]):
            if known:
                bar.set_hatch("//")
        present = [c for c in ("pro-ageing", "anti-ageing") if (called["call"] == c).any()]
        handles = [Patch(color=CALL_COLOURS[c], label=c) for c in present]
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="in reference tables"))
        fig.legend(handles=handles, fontsize=8, loc="lower left", ncol=len(handles), frameon=False)
        ax1.set_yticks(yy, called["gene"], fontsize=7)
        ax1.set_xlim(0, 1.02)
        ax1.set_xlabel(f"stability [fraction of {n_runs} runs, rule: {stability_rule}]")
        ax1.set_ylabel("gene (top by stability)")
    ax1.set_title("genes with a pro- or anti-ageing call (hatched: in reference tables)")
    # Stability takes the values k / n_runs: one bar per k, labelled as the fraction it is.
    runs = max(n_runs, 1)
    k = np.rint(genes["stability"].to_numpy(dtype=float) * runs).astype(int)
    counts = np.bincount(k[(k >= 0) & (k <= runs)], minlength=runs + 1)
    ax2.bar(np.arange(runs + 1), counts, color="#666666", width=0.8)
    ax2.set_xticks(np.arange(runs + 1), [f"{i}/{runs}" for i in range(runs + 1)], fontsize=8 if runs <= 10 else 6)
    ax2.set_xlabel(f"stability [runs meeting rule '{stability_rule}' / runs]")
    ax2.set_ylabel("genes [count]")
    ax2.set_title(f"all {len(genes)} tested genes")
    fig.suptitle(f"age_clock {protocol}: stability of perturbation calls")
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend under the bars
    return save_png(fig, path)
