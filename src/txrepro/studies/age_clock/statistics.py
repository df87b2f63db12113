"""statistics: per-gene tests, Holm correction, pro-/anti-ageing calls and stability over runs.

Model-free: the input is the perturbation table (P(old) per cell with each gene raised, `{gene}_high`,
and lowered, `{gene}_low`), so a hand-made table tests it exactly.

Per run and gene (both protocols): two-sided Mann-Whitney U between the per-cell high and low
probabilities (unpaired, as calculate_gene_statistics.py; the README says "paired"), Holm over all
genes of the run (statsmodels), alpha 0.05.
- repository: effect = log2(mean_high / mean_low); significant and > +0.2 -> overexpression raises
  P(old): "pro-ageing"; significant and < -0.2 -> "anti-ageing". (The original named these
  Geroaccelerator/Geroprotector on P(class 1) without saying which class was 1; here P is P(old).)
  Stability = fraction of runs with the gene's final call.
- article: effect = mean P(old | knockout) / mean P(old | overexpression); significant and > 1 ->
  "anti-ageing", < 1 -> "pro-ageing". Stability = fraction of runs where the gene is significant.
Final call per gene = the most frequent call over runs (a tie goes to "no change").
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu
from statsmodels.stats.multitest import multipletests

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path
from txrepro.io.tables import read_table
from txrepro.metrics.table import MetricRow, write_metrics
from txrepro.runtime import get_logger
from txrepro.studies.age_clock.config import DATASET, STUDY, AgeClockConfig

log = get_logger(__name__)

PRO, ANTI, NONE = "pro-ageing", "anti-ageing", "no change"
CALLS = (PRO, ANTI, NONE)
NOT_FOUND = "Not found"  # the original's confidence_level for genes absent from the reference table


@dataclass(frozen=True)
class CallRule:
    effect: str = "log2_mean_ratio"  # or "ko_oe_ratio"
    threshold: float = 0.2  # |log2 effect| must exceed this (0: any direction counts)
    alpha: float = 0.05
    stability: str = "same_call"  # or "significant"

    @classmethod
    def from_config(cls, cfg: AgeClockConfig) -> CallRule:
        return cls(cfg.effect, cfg.effect_threshold, cfg.alpha, cfg.stability)


def perturbed_genes(table: pd.DataFrame) -> list[str]:
    """Genes with both a `_high` and a `_low` column, in column order."""
    highs = [c[: -len("_high")] for c in table.columns if c.endswith("_high")]
    return [g for g in highs if f"{g}_low" in table.columns]


def run_statistics(table: pd.DataFrame, rule: CallRule, run_column: str = "run") -> pd.DataFrame:
    """One row per (run, gene): means, effect, U, p, Holm p, call."""
    genes = perturbed_genes(table)
    if not genes:
        raise InputError("perturbation table", "columns", "pairs of '<gene>_high' and '<gene>_low' columns")
    runs = table[run_column].to_numpy() if run_column in table.columns else np.ones(len(table), dtype=int)
    frames = []
    for run in pd.unique(runs):
        sub = table[runs == run]
        high = sub[[f"{g}_high" for g in genes]].to_numpy(dtype=np.float64)
        low = sub[[f"{g}_low" for g in genes]].to_numpy(dtype=np.float64)
        mean_high, mean_low = high.mean(axis=0), low.mean(axis=0)
        u, p = mannwhitneyu(high, low, alternative="two-sided", axis=0)  # scipy's defaults, as the original
        p = np.where(np.isnan(p), 1.0, p)  # identical constant columns: no evidence of a difference
        reject, p_holm, _, _ = multipletests(p, alpha=rule.alpha, method="holm")
        log2_oe_over_kd = np.log2(mean_high / mean_low)
        if rule.effect == "log2_mean_ratio":
            effect = log2_oe_over_kd
            up, down = effect > rule.threshold, effect < -rule.threshold
            call = np.where(reject & up, PRO, np.where(reject & down, ANTI, NONE))
        elif rule.effect == "ko_oe_ratio":
            effect = mean_low / mean_high
            log_ratio = np.log2(effect)
            call = np.where(reject & (log_ratio > rule.threshold), ANTI, np.where(reject & (log_ratio < -rule.threshold), PRO, NONE))
        else:
            raise ValueError(f"unknown effect {rule.effect!r}")
        frames.append(
            pd.DataFrame(
                {
                    "run": run,
                    "gene": genes,
                    "n_cells": len(sub),
                    "mean_high": mean_high,
                    "mean_low": mean_low,
                    "effect": effect,
                    "log2_oe_over_kd": log2_oe_over_kd,
                    "u_statistic": u,
                    "p_value": p,
                    "p_holm": p_holm,
                    "significant": reject,
                    "call": call,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _final_call(calls: pd.Series) -> str:
    counts = calls.value_counts()
    top = counts[counts == counts.max()].index.tolist()
    return top[0] if len(top) == 1 else NONE


def read_reference(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Ageing-gene tables (Open Genes / GenAge exports): 'hgnc' or 'gene'/'symbol' column, optional
    'confidence_level'; or plain lists of symbols. Returns gene -> best-known confidence and source."""
    rows = []
    for path in paths:
        p = Path(path)
        text = p.read_text(errors="replace") if p.is_file() else None
        if text is None:
            raise InputError(p, "reference genes", "an existing table or list of ageing genes", "nothing at this path")
        first = text.splitlines()[:1]
        if first and ("\t" in first[0] or "," in first[0]):
            df = read_table(p, what="reference genes", encoding="latin-1")
            col = next((c for c in ("hgnc", "gene", "symbol", "gene_symbol") if c in df.columns), None)
            if col is None:
                raise InputError(p, "column 'hgnc'", "a column named hgnc, gene or symbol", f"columns {', '.join(map(str, df.columns))}")
            conf = df["confidence_level"].astype(str) if "confidence_level" in df.columns else pd.Series("listed", index=df.index)
            rows += [{"gene": str(g), "reference_confidence": c, "reference_source": p.name} for g, c in zip(df[col], conf) if pd.notna(g)]
        else:
            rows += [{"gene": ln.strip(), "reference_confidence": "listed", "reference_source": p.name} for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    ref = pd.DataFrame(rows, columns=["gene", "reference_confidence", "reference_source"])
    return ref.groupby("gene", as_index=False).agg({"reference_confidence": lambda s: ";".join(sorted(set(s))), "reference_source": lambda s: ";".join(sorted(set(s)))})


def gene_summary(per_run: pd.DataFrame, rule: CallRule, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per gene over runs: mean effect, median p and Holm p, final call, stability, novelty."""
    n_runs = per_run["run"].nunique()
    grouped = per_run.groupby("gene", sort=False)
    out = grouped.agg(
        effect_mean=("effect", "mean"),
        log2_oe_over_kd=("log2_oe_over_kd", "mean"),
        p_median=("p_value", "median"),
        p_holm_median=("p_holm", "median"),
        n_significant=("significant", "sum"),
    ).reset_index()
    out["call"] = [_final_call(per_run.loc[idx, "call"]) for idx in grouped.groups.values()]
    if rule.stability == "same_call":
        same = per_run.merge(out[["gene", "call"]], on="gene", suffixes=("", "_final"))
        out["stability"] = out["gene"].map(same.assign(k=same["call"] == same["call_final"]).groupby("gene")["k"].mean())
    else:
        out["stability"] = out["n_significant"] / n_runs
    out["n_runs"] = n_runs
    ref = reference if reference is not None else pd.DataFrame(columns=["gene", "reference_confidence", "reference_source"])
    out = out.merge(ref, on="gene", how="left")
    out["in_reference"] = out["reference_confidence"].notna()
    out["reference_confidence"] = out["reference_confidence"].fillna(NOT_FOUND)
    out["novel"] = (out["call"] != NONE) & ~out["in_reference"]
    return out.sort_values(["call", "p_holm_median", "gene"], key=lambda s: s.map({PRO: 0, ANTI: 1, NONE: 2}) if s.name == "call" else s).reset_index(drop=True)


def summary_metrics(genes: pd.DataFrame, model: str, protocol: str, reference_given: bool) -> list[MetricRow]:
    """Counts that describe the sweep (no published value: the paper gives no counts)."""
    n = len(genes)
    note = f"{protocol} protocol; in-silico perturbation, P(old) with the gene raised vs lowered; final call = most frequent call over {int(genes['n_runs'].iloc[0])} runs"
    called = genes["call"] != NONE
    rows = [
        MetricRow(STUDY, DATASET, model, "test", "perturbation_genes_tested", float(n), n, note),
        MetricRow(STUDY, DATASET, model, "test", "perturbation_pro_ageing_genes", float((genes["call"] == PRO).sum()), n, note),
        MetricRow(STUDY, DATASET, model, "test", "perturbation_anti_ageing_genes", float((genes["call"] == ANTI).sum()), n, note),
        MetricRow(STUDY, DATASET, model, "test", "perturbation_stable_called_genes", float((called & (genes["stability"] >= 1.0)).sum()), n, note + "; stability 1"),
    ]
    if reference_given:
        stable = called & (genes["stability"] >= 1.0)
        rows.append(MetricRow(STUDY, DATASET, model, "test", "perturbation_novel_called_genes", float(genes["novel"].sum()), n, note + "; called and absent from the reference tables"))
        if stable.any():
            frac = float(genes.loc[stable, "in_reference"].mean())
            rows.append(MetricRow(STUDY, DATASET, model, "test", "perturbation_stable_in_reference_fraction", frac, int(stable.sum()), note + "; article: 33-50% of always-stable genes are in Open Genes"))
    return rows


def statistics(
    table_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    reference: Sequence[str | os.PathLike[str]] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """perturbation_runs.tsv, perturbation_genes.tsv, metrics_statistics.tsv, volcano and stability plots."""
    from txrepro.studies.age_clock.figures import plot_stability, plot_volcano
    from txrepro.studies.age_clock.perturb import read_perturbation
    from txrepro.studies.age_clock.train import apply_overrides

    table, cfg = read_perturbation(table_path)
    cfg = apply_overrides(cfg, overrides)
    rule = CallRule.from_config(cfg)
    per_run = run_statistics(table, rule)
    ref = read_reference(reference) if reference else None
    genes = gene_summary(per_run, rule, ref)
    out_dir = Path(out_dir)
    paths = {"runs": out_dir / "perturbation_runs.tsv", "genes": out_dir / "perturbation_genes.tsv", "metrics": out_dir / "metrics_statistics.tsv"}
    with atomic_path(paths["runs"]) as tmp:
        per_run.to_csv(tmp, sep="\t", index=False)
    with atomic_path(paths["genes"]) as tmp:
        genes.to_csv(tmp, sep="\t", index=False)
    write_metrics(summary_metrics(genes, f"scgpt_{cfg.protocol}", cfg.protocol, ref is not None), paths["metrics"])
    paths["volcano"] = plot_volcano(genes, cfg.protocol, rule.alpha, rule.threshold, out_dir / f"age_clock_{cfg.protocol}_volcano.png")
    paths["stability"] = plot_stability(genes, cfg.protocol, rule.stability, int(per_run["run"].nunique()), out_dir / f"age_clock_{cfg.protocol}_stability.png")
    log.info("perturbation calls (%s, %s mode): %s", cfg.protocol, cfg.perturb_mode, genes["call"].value_counts().to_dict())
    return paths
