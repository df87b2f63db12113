"""Figures of the study (PNG through txrepro.report.figures.save_png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from txrepro.report.figures import plt, save_png

MODEL_LABELS = {"predixcan": "PrediXcan", "p_sage_net": "p-SAGE-net", "r_sage_net": "r-SAGE-net"}
MODEL_COLOURS = {"predixcan": "#1b9e77", "p_sage_net": "#d95f02", "r_sage_net": "#7570b3"}
SET_LABELS = {"train": "train-chromosome genes", "test": "test-chromosome genes", "val": "validation-chromosome genes"}


def gene_pearson_figure(per_gene: pd.DataFrame, published: dict[str, dict[str, float]], path: Path) -> Path:
    """Per-gene r distributions: model x gene set, one panel per cohort, published PrediXcan lines."""
    cohorts = list(dict.fromkeys(per_gene["cohort"]))
    fig, axes = plt.subplots(1, len(cohorts), figsize=(6 * len(cohorts), 4.8), squeeze=False)
    rng = np.random.default_rng(0)
    short = {"train": "train chromosomes", "val": "validation chromosomes", "test": "test chromosomes"}
    handles: dict[str, object] = {}
    for ax, cohort in zip(axes[0], cohorts):
        d = per_gene[per_gene["cohort"] == cohort]
        sets = [s for s in ("train", "val", "test") if (d["gene_split"] == s).any()]
        xticks, xlabels = [], []
        for si, s in enumerate(sets):
            for mi, model in enumerate(MODEL_LABELS):
                x = si * 4 + mi
                r = d.loc[d["gene_split"] == s, f"{model}_pearson"].to_numpy(dtype=float)
                r = r[np.isfinite(r)]
                if r.size >= 5:
                    ax.boxplot(r, positions=[x], widths=0.6, showfliers=False, patch_artist=True,
                               boxprops={"facecolor": MODEL_COLOURS[model], "alpha": 0.35}, medianprops={"color": "black"})
                h = ax.scatter(x + rng.uniform(-0.15, 0.15, r.size), r, s=16, color=MODEL_COLOURS[model], zorder=3)
                handles.setdefault(MODEL_LABELS[model], h)
                if r.size:
                    m = ax.scatter([x], [r.mean()], marker="_", s=400, color="black", zorder=4, linewidths=1.5)
                    handles.setdefault("mean over genes", m)
            xticks.append(si * 4 + 1)
            xlabels.append(f"{short[s]}\n({int((d['gene_split'] == s).sum())} genes)")
        pub = published.get(cohort, {})
        for key, style in (("mean", "--"), ("median", ":")):
            if key in pub:
                h = ax.axhline(pub[key], color=MODEL_COLOURS["predixcan"], ls=style, lw=1.2)
                handles.setdefault(f"published PrediXcan {key} r, top 1,000 genes", h)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xticks(xticks, xlabels, fontsize=8)
        ax.set_xlabel("top genes by PrediXcan validation r, by chromosome split")
        ax.set_ylabel("per-gene Pearson r across held-out individuals")
        ax.set_title(f"{cohort}: {d['individuals'].iloc[0].replace('_', ' ')} (n={int(d['n_individuals'].iloc[0])})", fontsize=10)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("SAGE-net: per-gene prediction accuracy of each model")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save_png(fig, path)


def gene_scatter_figure(per_gene: pd.DataFrame, path: Path, annotate_max: int = 25) -> Path:
    """p-SAGE-net vs PrediXcan per-gene r (main cohort), coloured by gene set."""
    d = per_gene[per_gene["cohort"] == per_gene["cohort"].iloc[0]]
    fig, ax = plt.subplots(figsize=(5.4, 5))
    colours = {"train": "#e7298a", "val": "#66a61e", "test": "#1f78b4"}
    for s, c in colours.items():
        m = d["gene_split"] == s
        if m.any():
            ax.scatter(d.loc[m, "predixcan_pearson"], d.loc[m, "p_sage_net_pearson"], s=22, color=c, label=SET_LABELS[s], zorder=3)
    if len(d) <= annotate_max:
        for r in d.itertuples(index=False):
            if np.isfinite(r.predixcan_pearson) and np.isfinite(r.p_sage_net_pearson):
                ax.annotate(r.gene_id, (r.predixcan_pearson, r.p_sage_net_pearson), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.plot([-1, 1], [-1, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlim(-1.02, 1.02)
    ax.set_ylim(-1.02, 1.02)
    ax.set_xlabel("PrediXcan per-gene r")
    ax.set_ylabel("p-SAGE-net per-gene r")
    ax.set_title(f"{d['cohort'].iloc[0]} {d['individuals'].iloc[0].replace('_', ' ')}: per-gene r, p-SAGE-net vs PrediXcan", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return save_png(fig, path)


def training_figure(histories: dict[str, pd.DataFrame], path: Path, best_epoch: int | None = None) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    r = histories.get("r_sage_net")
    if r is not None and len(r):
        axes[0].plot(r["epoch"], r["train_loss"], marker="o", ms=3, label="r-SAGE-net train MSE")
        if "val_loss" in r:
            axes[0].plot(r["epoch"], r["val_loss"], marker="o", ms=3, label="r-SAGE-net validation-gene MSE")
    p = histories.get("p_sage_net")
    if p is not None and len(p):
        axes[0].plot(p["epoch"], p["train_loss"], marker="s", ms=3, label="p-SAGE-net train loss")
        if "train_gene_val_ind_diff_loss" in p:
            axes[0].plot(p["epoch"], p["train_gene_val_ind_diff_loss"], marker="s", ms=3, label="p-SAGE-net deviation MSE (train genes, val individuals)")
        for col, lab in (("train_gene_val_ind_median_gene_pearson", "train genes x val individuals"), ("val_gene_val_ind_median_gene_pearson", "val genes x val individuals")):
            if col in p:
                axes[1].plot(p["epoch"], p[col], marker="o", ms=3, label=lab)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss (MSE, log scale)")
    axes[0].set_title("training losses")
    axes[0].legend(fontsize=7)
    axes[1].axhline(0, color="grey", lw=0.6)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("median per-gene r (deviation head)")
    axes[1].set_title("p-SAGE-net validation (checkpoint metric)")
    if best_epoch is not None:
        for ax in axes:
            ax.axvline(best_epoch, color="grey", ls=":", lw=1, label="kept p-SAGE-net epoch")
    axes[1].legend(fontsize=7)
    fig.suptitle("SAGE-net training")
    fig.tight_layout()
    return save_png(fig, path)


def attribution_figure(table: pd.DataFrame, summary: dict, path: Path) -> Path:
    fig, axes = plt.subplots(3, 1, figsize=(10, 7.6))
    x = table["offset_from_tss_bp"].to_numpy()
    v = summary["variant_index"] - summary["tss_index"]
    m = table["ism"].notna().to_numpy()
    panels = (
        ("ism", "#1b9e77", f"ISM, same base in reference and personal input (peak {summary['ism_peak_distance_bp']} bp from the variant)"),
        ("ism_personal", "#7570b3", f"ISM, personal input only, as the original (peak {summary['ism_personal_peak_distance_bp']} bp from the variant)"),
    )
    for ax, (col, colour, title) in zip(axes[:2], panels):
        ax.bar(x[m], table.loc[m, col], width=1.0, color=colour)
        ax.set_ylabel("f(x) - mean over bases")
        ax.set_title(title, fontsize=9)
    axes[2].plot(x, table["gradient_x_input"], lw=0.7, color="#444444")
    axes[2].set_ylabel("gradient x input (a.u.)")
    axes[2].set_title(f"gradient x input over the whole window (peak {summary['gradient_x_input_peak_distance_bp']} bp from the variant)", fontsize=9)
    for ax in axes:
        ax.axvline(v, color="#d95f02", lw=1, ls="--", alpha=0.6, label=f"variant {summary['variant']}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("position relative to the TSS (bp, transcript orientation)")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"p-SAGE-net deviation-head attribution, gene {summary['gene']} ({summary['strand']} strand), variant on both haplotypes")
    fig.tight_layout()
    return save_png(fig, path)
