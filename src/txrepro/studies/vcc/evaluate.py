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
from collections.abc import Iterable
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
from txrepro.studies.vcc.de import RankSumDE, rank_sum_de, rank_sum_de_rows
from txrepro.studies.vcc.h5ad_stream import CsrH5adWriter, CsrRows, iter_row_blocks

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
    """The DE cell-eval runs for normalised-log input (its _build_pdex_kwargs, cell-eval 0.8.x).

    `adata` may be backed: pdex reads the control rows once and then one group at a time
    (`adata.X[rows]`), and leaves out cells whose `pert_col` is missing.
    """
    from pdex import pdex

    return pdex(adata=adata, mode="ref", groupby=pert_col, reference=control, threads=threads, is_log1p=True, epsilon=0.0)


def group_means(x: sp.csr_matrix, labels: np.ndarray, groups: list[str], block: int = 1_000) -> np.ndarray:
    """Mean row of each group in float64, accumulated over small row blocks.

    Predicted cells are nearly dense (37k x 18k values at full size), so a float64 copy of a
    large block, or of a whole group, would cost gigabytes; a 1,000-row block costs ~0.2 GB.
    """
    return _group_means((x[start : start + block] for start in range(0, x.shape[0], block)), labels, groups, x.shape[1])


def _group_means(blocks: Iterable[sp.csr_matrix], labels: np.ndarray, groups: list[str], n_genes: int) -> np.ndarray:
    """group_means over consecutive row blocks (in memory or read from a file, same sums)."""
    code = {g: i for i, g in enumerate(groups)}
    codes = np.array([code.get(v, -1) for v in labels])
    sums = np.zeros(len(groups) * n_genes)
    start = 0
    for part in blocks:
        rows = np.repeat(codes[start : start + part.shape[0]], np.diff(part.indptr))
        keep = rows >= 0
        sums += np.bincount(rows[keep] * n_genes + part.indices[keep], weights=part.data[keep], minlength=sums.size)
        start += part.shape[0]
    counts = np.bincount(codes[codes >= 0], minlength=len(groups))
    return sums.reshape(len(groups), n_genes) / np.maximum(counts, 1)[:, None]


def dataset_stats(adata: ad.AnnData, pert_col: str, control: str, threads: int = 1) -> DatasetStats:
    """DatasetStats of cells in memory (small data and tests; the steps use `dataset_stats_h5ad`)."""
    x = sp.csr_matrix(adata.X)
    labels = adata.obs[pert_col].astype(str).to_numpy()
    groups = sorted(set(labels) - {control})
    rows = group_means(x, labels, [*groups, control])
    n_cells = {g: int((labels == g).sum()) for g in [*groups, control]}
    obs = pd.DataFrame({pert_col: pd.Categorical(labels)}, index=adata.obs_names.copy())
    view = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=adata.var_names.copy()))
    return DatasetStats(groups, control, n_cells, rows, rank_sum_de(x, labels, control), pdex_table(view, pert_col, control, threads))


def dataset_stats_h5ad(path: str | Path, labels: np.ndarray, pert_col: str, control: str, threads: int = 1, block: int = 1_000) -> DatasetStats:
    """`dataset_stats` of the rows of an h5ad (X stored as CSR) whose label is not '', read from disk.

    Gives the same numbers as `dataset_stats` on those rows loaded into memory (tested): the
    group means are summed over the same 1,000-row blocks, the rank-sum DE and pdex see the same
    rows in the same order. Memory: the control cells twice (CSR + sorted CSC for the rank-sum
    test, then pdex's copy + column index) plus one group, instead of the whole matrix plus those.
    """
    labels = np.asarray(labels).astype(str)
    sel = np.flatnonzero(labels != "")
    sel_labels = labels[sel]
    groups = sorted(set(sel_labels) - {control})
    n_cells = {g: int((sel_labels == g).sum()) for g in [*groups, control]}
    with CsrRows(path) as reader:
        means = _group_means((reader.rows(sel[i : i + block]) for i in range(0, sel.size, block)), sel_labels, [*groups, control], reader.shape[1])
        rank_sum = rank_sum_de_rows(lambda idx: reader.rows(sel[idx]), reader.shape[1], sel_labels, control)
    backed = ad.read_h5ad(path, backed="r")
    try:
        # pdex groups by this column; '' (rows outside the selection) becomes missing: left out
        backed.obs = pd.DataFrame({pert_col: pd.Categorical(np.where(labels == "", None, labels), categories=sorted({*groups, control}))},
                                  index=backed.obs_names.copy())
        de = pdex_table(backed, pert_col, control, threads)
    finally:
        backed.file.close()
    return DatasetStats(groups, control, n_cells, means, rank_sum, de)


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


def cell_eval_metrics(real: DatasetStats, pred: DatasetStats, *, pert_col: str, var_names: pd.Index, workdir: Path,
                      threads: int = 1) -> tuple[pd.DataFrame, pl.DataFrame]:
    """cell-eval MetricsEvaluator(profile='vcc') on precomputed DE tables and pseudobulk pairs.

    `workdir` (under the step's output folder, never /tmp) is the outdir cell-eval insists on
    creating; it writes nothing there with write_csv=False, and it is removed afterwards.
    """
    from cell_eval import MetricsEvaluator

    workdir = Path(workdir) / "cell_eval"
    shutil.rmtree(workdir, ignore_errors=True)
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
    labels = prepared.cell_labels
    labels = np.where(np.isin(labels, [*prepared.split["test"], prepared.control]), labels, "")
    log.info("reference: %d real cells (%d test perturbations + controls)", int((labels != "").sum()), len(prepared.split["test"]))
    stats = dataset_stats_h5ad(prepared.h5ad, labels, prepared.pert_col, prepared.control, threads)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    stats.save(outdir, REFERENCE_PREFIX)
    write_json(outdir / "reference.json", {"prepared": str(prepared.folder), "n_cells": stats.n_cells, "perturbations": stats.groups})
    return outdir


def open_predictions(path: str | Path, prepared: Prepared, workdir: Path) -> tuple[Path, np.ndarray]:
    """Check a prediction h5ad without loading its matrix; return a CSR h5ad of it and its labels.

    Checks: it covers exactly the test perturbations, the controls and the prepared genes, and
    every value is finite (read a slice at a time). A file whose X is not stored as CSR (dense,
    CSC) is rewritten as CSR, in its own dtype, into `workdir`, so every later pass reads rows.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "predictions", "an existing .h5ad of predicted cells", "nothing at this path")
    try:
        adata = ad.read_h5ad(p, backed="r")
    except Exception as exc:  # h5py/anndata raise many types for a corrupt file
        raise InputError(p, "predictions", "a readable AnnData .h5ad", type(exc).__name__) from None
    try:
        col = prepared.pert_col
        if col not in adata.obs.columns:
            raise InputError(p, f"obs['{col}']", f"an obs column '{col}' naming each cell's perturbation", f"obs columns {list(adata.obs.columns)}")
        labels = adata.obs[col].astype(str).to_numpy()
        present = set(labels)
        if prepared.control not in present:
            raise InputError(p, f"obs['{col}']", f"control cells labelled '{prepared.control}'", "none")
        want = set(prepared.split["test"])
        missing, extra = sorted(want - present), sorted(present - want - {prepared.control})
        if missing or extra:
            raise InputError(p, f"obs['{col}']", "cells for exactly the test perturbations",
                             f"missing {missing[:5]}" if missing else f"unexpected {extra[:5]}")
        if not adata.var_names.equals(prepared.var_names):
            raise InputError(p, "var_names", f"the {prepared.var_names.size} prepared genes in the same order", f"{adata.n_vars} genes")
        not_finite = InputError(p, "X", "finite predicted expression", "NaN or inf")
        try:
            reader = CsrRows(p)
        except ValueError:
            reader = None  # X is not CSR on disk: rewritten below
        if reader is not None:
            with reader:
                if not all(np.isfinite(v).all() for v in reader.iter_data()):
                    raise not_finite
            return p, labels
        out = workdir / "predictions_csr.h5ad"
        log.info("%s: X is not stored as CSR; writing a CSR copy to %s", p, out)
        with CsrH5adWriter(out, adata.n_obs, adata.n_vars, dtype=adata.X.dtype) as w:
            for _, _, block in iter_row_blocks(adata.X, adata.n_obs, 5_000):
                if not np.isfinite(block.data).all():
                    raise not_finite
                w.append(block)
            w.finish(pd.DataFrame(index=adata.obs_names.copy()), pd.DataFrame(index=adata.var_names.copy()))
        return out, labels
    finally:
        adata.file.close()


def evaluate(prepared_dir: str | Path, reference_dir: str | Path, predictions: str | Path, model: str, outdir: str | Path, *, threads: int = 1) -> Path:
    """Both evaluators for one model; writes per-perturbation and aggregate results.

    The predicted cells are read from disk a group at a time (`dataset_stats_h5ad`).
    """
    prepared = Prepared(prepared_dir)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    workdir = outdir / f".{model}.evaluate.work"  # a fixed name: a re-run removes what a killed one left
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    try:
        pred_path, labels = open_predictions(predictions, prepared, workdir)
        real = DatasetStats.load(Path(reference_dir), REFERENCE_PREFIX)
        pred = dataset_stats_h5ad(pred_path, labels, prepared.pert_col, prepared.control, threads)
        proj = project_metrics(real, pred)
        ce_per, ce_agg = cell_eval_metrics(real, pred, pert_col=prepared.pert_col, var_names=prepared.var_names, workdir=workdir,
                                           threads=threads)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    per = proj.merge(ce_per, on="perturbation", how="left")
    ce_mean = ce_agg.filter(pl.col("statistic") == "mean").to_dicts()[0]
    info_path = Path(predictions).with_name(f"{model}_model.json")
    model_info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    summary = {
        "model": model,
        "dataset": prepared.dataset,
        "published_dataset": prepared.published_dataset,
        "n_perturbations": len(proj),
        "project": {"DES": _nanmean(proj["DES"]), "PDS": float(proj["PDS"].mean()), "MAE": float(proj["MAE"].mean()),
                    "n_DES": int(proj["DES"].notna().sum())},
        "cell_eval": {m: float(ce_mean[m]) for m in CELL_EVAL_METRICS},
        "model_info": model_info,
    }
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
