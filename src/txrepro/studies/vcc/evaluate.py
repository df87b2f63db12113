"""Score predicted cells with both evaluators.

* Official: the `cell-eval` package, profile "vcc" (overlap_at_N = DES, discrimination_score_l1
  = PDS, mae). cell-eval's MetricsEvaluator densifies both matrices to take pseudobulk means
  (16 GB for the real file at full size) and computes the real data's DE again for every model.
  So we run its DE (pdex, with exactly the arguments cell-eval passes) once per dataset on the
  sparse matrix, and hand MetricsEvaluator the DE tables plus one-row-per-perturbation mean
  AnnDatas: its metrics read nothing else. A test checks that this gives the same numbers as
  MetricsEvaluator on the full cell matrices.
* Project: my_cell_eval3.py's definitions (studies.md "vcc" section 3), which produced the
  published table: DES from hpdex-style DE (see `de.py`), PDS by cosine similarity of effects with
  the target gene kept and rank normalised as 1 - (rank - 1) / N, MAE on the 2,000 genes with the
  largest mean |real effect|.

Every dataset (the real test cells once, each model's prediction once) is reduced to
`DatasetStats`; the metrics are computed from those, so memory peaks at one dataset.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import polars as pl
import scipy.sparse as sp

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path, write_json
from txrepro.runtime import get_logger
from txrepro.studies.vcc.data import Prepared
from txrepro.studies.vcc.de import RankSumDE, rank_sum_de

log = get_logger(__name__)

FDR = 0.05
MIN_CELLS = 3  # my_cell_eval3 min_cells_per_group
TOP_GENES = 2000  # my_cell_eval3 MAE gene set
CELL_EVAL_METRICS = ("overlap_at_N", "discrimination_score_l1", "mae")
REFERENCE_PREFIX = "real"


@dataclass
class DatasetStats:
    """What both evaluators need from one dataset (real or predicted cells)."""

    groups: list[str]  # perturbations, sorted; the control is not one of them
    control: str
    n_cells: dict[str, int]
    means: np.ndarray  # rows: groups, then the control; mean of X as given (normalised log)
    rank_sum: RankSumDE
    pdex: pl.DataFrame

    def mean(self, group: str) -> np.ndarray:
        i = len(self.groups) if group == self.control else self.groups.index(group)
        return self.means[i]

    def save(self, folder: Path, prefix: str) -> None:
        rs = self.rank_sum
        with atomic_path(folder / f"{prefix}_stats.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, groups=np.array(self.groups, dtype=str), control=np.array(self.control),
                         n_cells_keys=np.array(list(self.n_cells), dtype=str), n_cells_values=np.array(list(self.n_cells.values())),
                         means=self.means, rs_groups=np.array(rs.groups, dtype=str), rs_n=rs.n_cells, rs_p=rs.pvalue,
                         rs_fdr=rs.fdr, rs_lfc=rs.log2_fold_change)
        with atomic_path(folder / f"{prefix}_pdex.parquet") as tmp:
            self.pdex.write_parquet(tmp)

    @classmethod
    def load(cls, folder: Path, prefix: str) -> DatasetStats:
        f = folder / f"{prefix}_stats.npz"
        if not f.is_file():
            raise InputError(folder, f"{prefix}_stats.npz", "the output folder of `vcc.py reference`", "no such file")
        z = np.load(f, allow_pickle=False)
        rs = RankSumDE([str(g) for g in z["rs_groups"]], z["rs_n"], z["rs_p"], z["rs_fdr"], z["rs_lfc"])
        n_cells = {str(k): int(v) for k, v in zip(z["n_cells_keys"], z["n_cells_values"], strict=True)}
        return cls([str(g) for g in z["groups"]], str(z["control"]), n_cells, z["means"], rs, pl.read_parquet(folder / f"{prefix}_pdex.parquet"))


def pdex_table(adata: ad.AnnData, pert_col: str, control: str, threads: int) -> pl.DataFrame:
    """The DE cell-eval runs for normalised-log input (its _build_pdex_kwargs, cell-eval 0.8.x)."""
    from pdex import pdex

    return pdex(adata=adata, mode="ref", groupby=pert_col, reference=control, threads=threads, is_log1p=True, epsilon=0.0)


def group_means(x: sp.csr_matrix, labels: np.ndarray, groups: list[str], block: int = 1_000) -> np.ndarray:
    """Mean row of each group in float64, accumulated over small row blocks.

    Predicted cells are nearly dense (37k x 18k values at full size), so a float64 copy of a
    large block, or of a whole group, would cost gigabytes; a 1,000-row block costs ~0.2 GB.
    """
    code = {g: i for i, g in enumerate(groups)}
    codes = np.array([code.get(v, -1) for v in labels])
    n_genes = x.shape[1]
    sums = np.zeros(len(groups) * n_genes)
    for start in range(0, x.shape[0], block):
        part = x[start : start + block]
        rows = np.repeat(codes[start : start + block], np.diff(part.indptr))
        keep = rows >= 0
        sums += np.bincount(rows[keep] * n_genes + part.indices[keep], weights=part.data[keep], minlength=sums.size)
    counts = np.bincount(codes[codes >= 0], minlength=len(groups))
    return sums.reshape(len(groups), n_genes) / np.maximum(counts, 1)[:, None]


def dataset_stats(adata: ad.AnnData, pert_col: str, control: str, threads: int = 1) -> DatasetStats:
    x = sp.csr_matrix(adata.X)
    labels = adata.obs[pert_col].astype(str).to_numpy()
    groups = sorted(set(labels) - {control})
    rows = group_means(x, labels, [*groups, control])
    n_cells = {g: int((labels == g).sum()) for g in [*groups, control]}
    obs = pd.DataFrame({pert_col: pd.Categorical(labels)}, index=adata.obs_names.copy())
    view = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=adata.var_names.copy()))
    return DatasetStats(groups, control, n_cells, rows, rank_sum_de(x, labels, control), pdex_table(view, pert_col, control, threads))


# --------------------------------------------------------------------------------------------
# project evaluator (my_cell_eval3.py definitions)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(np.dot(a, b) / (na * nb))


def project_metrics(real: DatasetStats, pred: DatasetStats, *, fdr: float = FDR, min_cells: int = MIN_CELLS, top_genes: int = TOP_GENES) -> pd.DataFrame:
    """Per-perturbation DES, PDS (+ rank) and MAE exactly as my_cell_eval3.compute_vcc_scores."""
    perts = sorted(real.groups)
    n = len(perts)
    r_rs, p_rs = real.rank_sum, pred.rank_sum
    r_idx = {g: i for i, g in enumerate(r_rs.groups)}
    p_idx = {g: i for i, g in enumerate(p_rs.groups)}
    ctrl_ok = real.n_cells[real.control] >= min_cells
    rows: list[dict[str, Any]] = []
    true_delta = {p: real.mean(p) - real.mean(real.control) for p in perts}
    pred_delta = {p: (pred.mean(p) if p in pred.groups else np.zeros(real.means.shape[1])) - pred.mean(pred.control) for p in perts}
    gene_score = np.mean([np.abs(true_delta[p]) for p in perts], axis=0)
    top = np.argsort(gene_score, kind="stable")[-top_genes:]
    for p in perts:
        g_true = set(np.flatnonzero(r_rs.fdr[r_idx[p]] <= fdr)) if p in r_idx else set()
        g_pred = set(np.flatnonzero(p_rs.fdr[p_idx[p]] <= fdr)) if p in p_idx else set()
        if real.n_cells[p] < min_cells or not ctrl_ok or not g_true:
            des = math.nan
        elif len(g_pred) <= len(g_true):
            des = len(g_pred & g_true) / len(g_true)
        else:
            # more predicted than real DE genes: the top |G_true| of *all* genes by |log2 FC|
            lfc = np.nan_to_num(p_rs.log2_fold_change[p_idx[p]], nan=0.0, posinf=np.inf, neginf=-np.inf)
            order = np.argsort(-np.abs(lfc), kind="stable")[: len(g_true)]
            des = len(set(order) & g_true) / len(g_true)
        sims = [_cosine(pred_delta[p], true_delta[q]) for q in perts]
        ranked = sorted(range(n), key=lambda i: -sims[i])  # stable: ties keep sorted-name order
        rank = ranked.index(perts.index(p)) + 1
        y_pred = pred.mean(p) if p in pred.groups else np.zeros(real.means.shape[1])  # original: zeros if missing
        mae = float(np.mean(np.abs(y_pred[top] - real.mean(p)[top])))
        rows.append({"perturbation": p, "n_cells": real.n_cells[p], "n_real_de": len(g_true), "n_pred_de": len(g_pred),
                     "DES": des, "PDS": 1.0 - (rank - 1) / n, "PDS_rank": rank, "MAE": mae})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# official evaluator (cell-eval, profile vcc)


def _bulk_adata(stats: DatasetStats, pert_col: str, var_names: pd.Index) -> ad.AnnData:
    labels = [*stats.groups, stats.control]
    obs = pd.DataFrame({pert_col: pd.Categorical(labels)}, index=[f"bulk{i}" for i in range(len(labels))])
    return ad.AnnData(X=stats.means.copy(), obs=obs, var=pd.DataFrame(index=var_names.copy()))


def cell_eval_metrics(real: DatasetStats, pred: DatasetStats, *, pert_col: str, var_names: pd.Index, threads: int = 1) -> tuple[pd.DataFrame, pl.DataFrame]:
    """cell-eval MetricsEvaluator(profile='vcc') on precomputed DE tables and pseudobulk pairs."""
    from cell_eval import MetricsEvaluator

    workdir = Path(tempfile.mkdtemp(prefix="txrepro-cell-eval-"))
    try:
        ev = MetricsEvaluator(
            adata_pred=_bulk_adata(pred, pert_col, var_names),
            adata_real=_bulk_adata(real, pert_col, var_names),
            de_pred=pred.pdex,
            de_real=real.pdex,
            control_pert=real.control,  # always explicit: the API default column is 'target'
            pert_col=pert_col,
            num_threads=threads,
            outdir=str(workdir),
            allow_discrete=True,  # the means are already normalised log; never re-normalise
        )
        results, agg = ev.compute(profile="vcc", write_csv=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    per = results.to_pandas().rename(columns={m: f"cell_eval_{m}" for m in CELL_EVAL_METRICS})
    return per, agg


# --------------------------------------------------------------------------------------------
# steps


def reference(prepared_dir: str | Path, outdir: str | Path, *, threads: int = 1) -> Path:
    """DE and pseudobulk of the real test cells (+ controls), shared by every model's evaluation."""
    prepared = Prepared(prepared_dir)
    real = prepared.test_rows()
    log.info("reference: %d real cells (%d test perturbations + controls)", real.n_obs, len(prepared.split["test"]))
    stats = dataset_stats(real, prepared.pert_col, prepared.control, threads)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    stats.save(outdir, REFERENCE_PREFIX)
    write_json(outdir / "reference.json", {"prepared": str(prepared.folder), "n_cells": stats.n_cells, "perturbations": stats.groups})
    return outdir


def read_predictions(path: str | Path, prepared: Prepared) -> ad.AnnData:
    """Load a prediction h5ad and check it covers exactly the test perturbations, controls, genes."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "predictions", "an existing .h5ad of predicted cells", "nothing at this path")
    try:
        adata = ad.read_h5ad(p)
    except Exception as exc:  # h5py/anndata raise many types for a corrupt file
        raise InputError(p, "predictions", "a readable AnnData .h5ad", type(exc).__name__) from None
    col = prepared.pert_col
    if col not in adata.obs.columns:
        raise InputError(p, f"obs['{col}']", f"an obs column '{col}' naming each cell's perturbation", f"obs columns {list(adata.obs.columns)}")
    labels = set(adata.obs[col].astype(str))
    if prepared.control not in labels:
        raise InputError(p, f"obs['{col}']", f"control cells labelled '{prepared.control}'", "none")
    want = set(prepared.split["test"])
    missing, extra = sorted(want - labels), sorted(labels - want - {prepared.control})
    if missing or extra:
        raise InputError(p, f"obs['{col}']", "cells for exactly the test perturbations",
                         f"missing {missing[:5]}" if missing else f"unexpected {extra[:5]}")
    if not adata.var_names.equals(prepared.var_names):
        raise InputError(p, "var_names", f"the {prepared.var_names.size} prepared genes in the same order", f"{adata.n_vars} genes")
    values = (adata.X.data if sp.issparse(adata.X) else np.asarray(adata.X)).ravel()
    step = 1 << 24  # checked in pieces: a mask of the whole 37k x 18k prediction would be ~0.7 GB
    if not all(np.isfinite(values[i : i + step]).all() for i in range(0, values.size, step)):
        raise InputError(p, "X", "finite predicted expression", "NaN or inf")
    return adata


def evaluate(prepared_dir: str | Path, reference_dir: str | Path, predictions: str | Path, model: str, outdir: str | Path, *, threads: int = 1) -> Path:
    """Both evaluators for one model; writes per-perturbation and aggregate results."""
    prepared = Prepared(prepared_dir)
    pred_adata = read_predictions(predictions, prepared)
    real = DatasetStats.load(Path(reference_dir), REFERENCE_PREFIX)
    pred = dataset_stats(pred_adata, prepared.pert_col, prepared.control, threads)
    del pred_adata
    proj = project_metrics(real, pred)
    ce_per, ce_agg = cell_eval_metrics(real, pred, pert_col=prepared.pert_col, var_names=prepared.var_names, threads=threads)
    per = proj.merge(ce_per, on="perturbation", how="left")
    ce_mean = ce_agg.filter(pl.col("statistic") == "mean").to_dicts()[0]
    info_path = Path(predictions).with_name(f"{model}_model.json")
    model_info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    summary = {
        "model": model,
        "n_perturbations": len(proj),
        "project": {"DES": _nanmean(proj["DES"]), "PDS": float(proj["PDS"].mean()), "MAE": float(proj["MAE"].mean()),
                    "n_DES": int(proj["DES"].notna().sum())},
        "cell_eval": {m: float(ce_mean[m]) for m in CELL_EVAL_METRICS},
        "model_info": model_info,
    }
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(outdir / f"{model}_per_perturbation.tsv") as tmp:
        per.to_csv(tmp, sep="\t", index=False)
    with atomic_path(outdir / f"{model}_cell_eval_agg.csv") as tmp:
        ce_agg.write_csv(tmp)
    out = write_json(outdir / f"{model}_eval.json", summary)
    log.info("%s: DES %.4f PDS %.4f MAE %.4f | cell-eval overlap %.4f pds_l1 %.4f mae %.4f", model, summary["project"]["DES"],
             summary["project"]["PDS"], summary["project"]["MAE"], *(summary["cell_eval"][m] for m in CELL_EVAL_METRICS))
    return out


def _nanmean(s: pd.Series) -> float:
    v = s.to_numpy(dtype=float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
