"""vcc figures: metrics beside the published table, and which perturbations each model identifies."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from txrepro.report.figures import save_png

PANELS = (
    ("DES", "cell_eval_overlap_at_N", "DES (fraction of real DE genes recovered)"),
    ("PDS", "cell_eval_discrimination_score_l1", "PDS (1 − normalised rank of the true perturbation)"),
    ("MAE", "cell_eval_mae", "MAE (log1p-normalised expression units)"),
    ("overall_score", "cell_eval_overall_score", "overall score (0 = cell-mean baseline, 100 = perfect)"),
)


def metrics_vs_published(metrics: pd.DataFrame, published: pd.DataFrame, path: Path, *, data_source: str) -> Path:
    """Bars: reproduced (project evaluator) beside published; diamonds: official cell-eval."""
    rep = metrics.dropna(subset=["value"]).set_index(["model", "metric"])["value"]
    pub = published.set_index(["model", "metric"])["published"]
    models = list(dict.fromkeys([*published["model"], *metrics["model"]]))
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 4.4))
    x = np.arange(len(models))
    w = 0.38
    for ax, (metric, official, label) in zip(axes, PANELS, strict=True):
        r = [rep.get((m, metric), np.nan) for m in models]
        p = [pub.get((m, metric), np.nan) for m in models]
        o = [rep.get((m, official), np.nan) for m in models]
        ax.bar(x - w / 2, p, w, color="#bbbbbb", label="published (project evaluator)")
        ax.bar(x + w / 2, r, w, color="#1b9e77", label=f"reproduced, project evaluator ({data_source})")
        ax.scatter(x + w / 2, o, marker="D", facecolor="none", edgecolor="#d95f02", zorder=3, label="reproduced, official cell-eval")
        for xi, ri in zip(x, r, strict=True):
            if np.isnan(ri):
                ax.text(xi + w / 2, 0, "not\nrun", ha="center", va="bottom", fontsize=6, color="#666666")
        ax.set_xticks(x, models, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.set_xlabel("model")
        ax.set_title(metric)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"vcc: reproduced vs published metrics on the test perturbations (data: {data_source})")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save_png(fig, path)


def pds_rank_heatmap(ranks: pd.DataFrame, path: Path) -> Path:
    """Rows: test perturbations; columns: models; cell: rank of the true perturbation (1 = found)."""
    n = len(ranks)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * ranks.shape[1], 1.5 + 0.28 * n))
    im = ax.imshow(ranks.to_numpy(dtype=float), aspect="auto", cmap="viridis_r", vmin=1, vmax=max(n, 2))
    ax.set_xticks(range(ranks.shape[1]), ranks.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), ranks.index, fontsize=7 if n > 20 else 9)
    if ranks.size <= 400:
        for (i, j), v in np.ndenumerate(ranks.to_numpy(dtype=float)):
            if not np.isnan(v):
                ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7, color="white" if v > n / 2 else "black")
    ax.set_xlabel("model")
    ax.set_ylabel("test perturbation")
    fig.suptitle(f"vcc: PDS rank of the true perturbation among {n} (cosine, project evaluator)", fontsize=10)
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("rank (1 = best)")
    fig.tight_layout()
    return save_png(fig, path)
