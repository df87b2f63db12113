"""prepare: validate, normalise_total + log1p, top-k HVGs into obsm['X_hvg'], split, group means.

This is what `state tx preprocess_train` does (scanpy normalize_total with the median target,
log1p, highly_variable_genes flavor 'seurat', dense HVG block in obsm['X_hvg']), rewritten as
three streaming passes so the 221k x 18k file never has to fit in memory:

1. per-cell totals (and a full check that X holds counts) -> the median target sum;
2. normalise + log1p each block, write it, and accumulate per-gene moments of expm1(x) (for the
   HVG dispersions) and per-perturbation sums (for the pseudobulk means every model uses);
3. copy the HVG columns of the written blocks into the dense obsm['X_hvg'].

Numerically each block follows scanpy's CSR code path (float32 totals and scaling, float32
log1p); tests compare the result with scanpy on the fixture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_dir, remove_stale_temporaries, write_json
from txrepro.io.checksum import verify_checksum
from txrepro.runtime import get_logger, progress
from txrepro.studies.vcc.data import (
    GROUP_MEANS_H5AD,
    PREPARED_H5AD,
    SPLIT_COL,
    SPLIT_JSON,
    SPLIT_TSV,
    check_input,
    make_split,
    read_gene_list,
    resolve_dataset,
)
from txrepro.studies.vcc.h5ad_stream import CsrH5adWriter, iter_row_blocks
from txrepro.studies.vcc.params import DataParams, default_test_genes_path

log = get_logger(__name__)


def hvg_seurat(mean: np.ndarray, var: np.ndarray, n_top: int, n_bins: int = 20) -> pd.DataFrame:
    """scanpy's flavor='seurat' selection from per-gene mean and variance of expm1(log data).

    Same steps as scanpy.pp.highly_variable_genes (log dispersion, 20 equal-width bins of log1p
    mean, z-score within bin, single-gene bins set to 1, top n by normalised dispersion with ties
    kept); only the moments come from our streaming pass instead of a matrix in memory.
    """
    mean = np.asarray(mean, dtype=np.float64).copy()
    var = np.asarray(var, dtype=np.float64)
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = np.log(dispersion)
    mean = np.log1p(mean)
    df = pd.DataFrame({"means": mean, "dispersions": dispersion})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    single = stats["dev"].isnull()
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0
    per_gene = stats.loc[df["mean_bin"]].set_index(df.index)
    df["dispersions_norm"] = (df["dispersions"] - per_gene["avg"]) / per_gene["dev"]
    dn = df["dispersions_norm"].to_numpy()
    finite = np.sort(dn[~np.isnan(dn)])[::-1]
    n = min(n_top, len(df), finite.size)
    cutoff = finite[n - 1] if n > 0 else np.inf
    df["highly_variable"] = np.nan_to_num(dn, nan=-np.inf) >= cutoff
    return df.drop(columns="mean_bin")


def _check_count_block(block: sp.csr_matrix, start: int, path: Path) -> None:
    v = block.data
    if v.size == 0:
        return
    if not np.all(np.isfinite(v)):
        raise InputError(path, "X", "raw counts (finite non-negative integers)", f"NaN or infinite values in rows {start}-{start + block.shape[0] - 1}")
    if v.min() < 0:
        raise InputError(path, "X", "raw counts (non-negative integers)", f"negative values in rows {start}-{start + block.shape[0] - 1}")
    frac = np.abs(v - np.round(v)) > 1e-6
    if frac.any():
        raise InputError(path, "X", "raw counts (integers)", f"non-integer values such as {v[frac][0]:.4g} in rows {start}-{start + block.shape[0] - 1} (log-normalised data?)")


def normalise_log1p_block(block: sp.csr_matrix, totals: np.ndarray, target_sum: np.float32) -> sp.csr_matrix:
    """scanpy normalize_total (CSR path) then log1p, for one block of rows, in float32."""
    out = block.astype(np.float32, copy=True)
    scale = (totals / target_sum).astype(np.float32)
    scale = scale + (scale == 0)  # scanpy: never divide by zero (empty cells stay empty)
    out.data /= np.repeat(scale, np.diff(out.indptr))
    np.log1p(out.data, out=out.data)
    return out


@dataclass(frozen=True)
class PrepareResult:
    outdir: Path
    n_obs: int
    n_vars: int
    n_hvg: int
    target_sum: float
    split: dict[str, list[str]]


def prepare(
    input_path: str | Path,
    outdir: str | Path,
    *,
    dp: DataParams = DataParams(),
    test_genes_file: str | Path | None = None,
    input_checksum: str | None = None,
    dataset: str | None = None,
    fixture: bool = False,
    features: str | Path | None = None,
) -> PrepareResult:
    """Check the input, normalise it in blocks, select HVGs, split by perturbation gene.

    `dataset` names the metrics rows (`resolve_dataset`: the published name only for the published
    file); `features`, when given, is checked here, before the long passes, for a vector per
    perturbation gene (the models read it much later).
    """
    t0 = time.perf_counter()
    input_path = Path(input_path)
    outdir = Path(outdir)
    tg_file = Path(test_genes_file) if test_genes_file else default_test_genes_path()
    test_genes = read_gene_list(tg_file)
    if dp.n_hvg < 1:
        raise InputError("params", "vcc_n_hvg", "a positive number of genes", str(dp.n_hvg))
    if dp.chunk_size < 1:
        raise InputError("params", "vcc_chunk_size", "a positive number of cells", str(dp.chunk_size))
    if input_checksum:
        verify_checksum(input_path, input_checksum)
    summary = check_input(input_path, dp, test_genes, tg_file)
    dataset_name, published = resolve_dataset(dataset, summary, dp, test_genes, fixture=fixture)
    if features:
        from txrepro.studies.vcc.features import load_embedding_file

        load_embedding_file(features, summary.perturbations)
    split = make_split(summary.perturbations, test_genes, dp.val_fraction, dp.seed)
    log.info("input %s: %d cells x %d genes, %d perturbations (train %d, val %d, test %d)", input_path,
             summary.n_obs, summary.n_vars, len(summary.perturbations), len(split["train"]), len(split["val"]), len(split["test"]))

    remove_stale_temporaries(outdir)  # what a killed earlier run into this folder left
    src = ad.read_h5ad(input_path, backed="r")
    try:
        n, g = summary.n_obs, summary.n_vars
        groups = [*summary.perturbations, dp.control]
        code_of = {name: i for i, name in enumerate(groups)}
        codes = np.array([code_of[x] for x in summary.labels], dtype=np.int64)
        n_blocks = -(-n // dp.chunk_size)

        # pass 1: totals, and every value checked to be a count
        totals = np.empty(n, dtype=np.float32)
        for start, stop, block in progress(iter_row_blocks(src.X, n, dp.chunk_size), "vcc prepare 1/3 totals", n_blocks):
            _check_count_block(block, start, input_path)
            totals[start:stop] = np.asarray(block.astype(np.float64).sum(axis=1)).ravel()
        target_sum = np.median(totals)  # scanpy's CSR path: median over all cells
        log.info("normalize_total target (median counts per cell): %.1f", target_sum)

        with atomic_dir(outdir) as tmp:
            group_sum = np.zeros((len(groups), g), dtype=np.float64)
            s1 = np.zeros(g, dtype=np.float64)
            s2 = np.zeros(g, dtype=np.float64)
            with CsrH5adWriter(tmp / PREPARED_H5AD, n, g) as w:
                # pass 2: normalise + log1p, write, accumulate moments and group sums
                for start, stop, block in progress(iter_row_blocks(src.X, n, dp.chunk_size), "vcc prepare 2/3 normalise", n_blocks):
                    norm = normalise_log1p_block(block, totals[start:stop], target_sum)
                    w.append(norm)
                    expm = np.expm1(norm.data).astype(np.float64)  # scanpy's seurat flavour works on expm1(x)
                    s1 += np.bincount(norm.indices, weights=expm, minlength=g)
                    expm **= 2
                    s2 += np.bincount(norm.indices, weights=expm, minlength=g)
                    del expm
                    ind = sp.csr_matrix((np.ones(stop - start), (codes[start:stop], np.arange(stop - start))), shape=(len(groups), stop - start))
                    group_sum += np.asarray((ind @ norm.astype(np.float64)).todense())
                mean = s1 / n
                var = (s2 / n - mean**2) * (n / (n - 1)) if n > 1 else np.zeros(g)
                hvg = hvg_seurat(mean, np.maximum(var, 0.0), dp.n_hvg)
                hvg.index = src.var_names
                hvg_idx = np.flatnonzero(hvg["highly_variable"].to_numpy())
                # pass 3: the dense HVG block STATE reads
                ds = w.create_obsm("X_hvg", hvg_idx.size)
                for start in progress(range(0, n, dp.chunk_size), "vcc prepare 3/3 X_hvg", n_blocks):
                    stop = min(n, start + dp.chunk_size)
                    ds[start:stop] = w.read_rows(start, stop)[:, hvg_idx].toarray()
                split_of = {x: k for k, genes in split.items() for x in genes}
                obs = src.obs.copy()
                obs[SPLIT_COL] = pd.Categorical([split_of.get(x, "control" if x == dp.control else "unused") for x in summary.labels])
                var_df = src.var.copy()
                for col in ("highly_variable", "means", "dispersions", "dispersions_norm"):
                    var_df[col] = hvg[col].to_numpy()
                uns = {
                    "hvg": {"flavor": "seurat"},
                    "log1p": {},
                    "txrepro_vcc": {"target_sum": float(target_sum), "pert_col": dp.pert_col, "control": dp.control},
                }
                w.finish(obs, var_df, uns)
            nnz = w.nnz

            n_cells = np.bincount(codes, minlength=len(groups))
            gm_obs = pd.DataFrame(
                {"n_cells": n_cells, "split": [split_of.get(x, "control" if x == dp.control else "unused") for x in groups]},
                index=pd.Index(groups, name=dp.pert_col),
            )
            with np.errstate(invalid="ignore", divide="ignore"):
                means = group_sum / np.maximum(n_cells, 1)[:, None]
            ad.AnnData(X=means, obs=gm_obs, var=pd.DataFrame(index=src.var_names.copy())).write_h5ad(tmp / GROUP_MEANS_H5AD)
            info = {
                "pert_col": dp.pert_col,
                "control": dp.control,
                "guide_col": dp.guide_col,
                "batch_col": dp.batch_col,
                "split": split,
                "seed": dp.seed,
                "val_fraction": dp.val_fraction,
                "test_genes_file": str(tg_file),
                "input": str(input_path),
                "input_checksum_verified": bool(input_checksum),
                "dataset": dataset_name,
                "published_dataset": published,
                "n_obs": n,
                "n_vars": g,
                "nnz": int(nnz),
                "target_sum": float(target_sum),
                "n_hvg": int(hvg_idx.size),
                "seconds": round(time.perf_counter() - t0, 2),
            }
            write_json(tmp / SPLIT_JSON, info)
            gm_obs.reset_index().rename(columns={dp.pert_col: "perturbation"}).to_csv(tmp / SPLIT_TSV, sep="\t", index=False)
    finally:
        src.file.close()
    log.info("dataset %s (%s)", dataset_name, "published numbers compared" if published else "not the published dataset: no published comparison")
    log.info("prepared %s in %.1f s (%d HVGs)", outdir, time.perf_counter() - t0, hvg_idx.size)
    return PrepareResult(outdir, n, g, int(hvg_idx.size), float(target_sum), split)
