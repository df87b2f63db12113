"""Per-cell quality control as GPO-VAE (from CRADLE-VAE): six metrics, then median +- k MAD flags.

The metrics are computed once (the original used rapids-singlecell on a GPU); the flags are
recomputed on every run from the metrics with the run's threshold, as the original data modules do.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from txrepro.errors import TxreproError
from txrepro.runtime import get_logger, progress

log = get_logger(__name__)

QC_METRICS = ("UMI_count", "ngenes", "pct_counts_mt", "pct_counts_ribo", "pct_counts_hb", "predicted_doublet")
# metric -> direction of the outlier: low counts / genes are bad, high mt / ribo / hb fractions are bad.
QC_RULES = {
    "UMI_count": -1,
    "ngenes": -1,
    "pct_counts_mt": +1,
    "pct_counts_ribo": +1,
    "pct_counts_hb": +1,
}
QC_FLAGS = tuple(f"qc_{m}" for m in QC_METRICS)


def rapids_available() -> bool:
    """rapids-singlecell imports only with CUDA (it needs cuml/cupy); never required."""
    try:
        import rapids_singlecell  # noqa: F401
    except Exception:  # ImportError, or CUDA errors raised at import time
        return False
    return True


def mad_outliers(values: pd.Series | np.ndarray, thr: float) -> tuple[np.ndarray, float]:
    """Flags and threshold of the original `_get_result_of_qc(metric='mad')`.

    threshold = median + thr * MAD with the unscaled MAD; thr < 0 flags values strictly below it,
    thr > 0 values strictly above it.
    """
    x = np.asarray(values, dtype=np.float64)
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    threshold = med + mad * thr
    flags = (x < threshold) if thr < 0 else (x > threshold)
    return flags.astype(np.int64), float(threshold)


def qc_flags(obs: pd.DataFrame, thr: float) -> tuple[pd.DataFrame, dict[str, float]]:
    """The six qc_* flags, num_qc and total_qc (1 = the cell fails at least one check)."""
    out = pd.DataFrame(index=obs.index)
    thresholds: dict[str, float] = {}
    for metric, direction in QC_RULES.items():
        out[f"qc_{metric}"], thresholds[f"thr_qc_{metric}"] = mad_outliers(obs[metric], direction * thr)
    out["qc_predicted_doublet"] = (obs["predicted_doublet"].astype(str).str.lower().isin(("true", "1", "1.0"))).astype(np.int64)
    out["num_qc"] = out[list(QC_FLAGS)].sum(axis=1)
    out["total_qc"] = (out["num_qc"] > 0).astype(np.int64)
    return out, thresholds


def _gene_flags(var_names: pd.Index) -> pd.DataFrame:
    names = pd.Series(var_names.astype(str), index=var_names)
    return pd.DataFrame(
        {
            "mt": names.str.startswith("MT-").to_numpy(),
            "ribo": names.str.startswith(("RPS", "RPL")).to_numpy(),
            "hb": names.str.contains("^HB[^(P)]", regex=True).to_numpy(),
        },
        index=var_names,
    )


def chunk_of_cells(labels: pd.Series, n_chunks: int) -> np.ndarray:
    """The original's QC chunks: slice i of every perturbation's cells, the last slice takes the rest.

    step = int(cells per perturbation / n_chunks); chunk i holds ranks [i*step, (i+1)*step) within each
    perturbation and chunk n_chunks everything after. Scrublet ran per chunk, so doublet calls depend on it.
    """
    n_groups = labels.nunique()
    step = max(1, int(len(labels) / n_groups / n_chunks))
    rank = labels.groupby(labels, observed=True).cumcount().to_numpy()
    return np.minimum(rank // step, n_chunks)


def qc_metrics(adata: ad.AnnData, labels: pd.Series, *, n_chunks: int = 10, n_prin_comps: int = 30, use_gpu: bool = False) -> pd.DataFrame:
    """UMI_count, ngenes, pct_counts_{mt,ribo,hb} and scrublet's predicted_doublet for every cell.

    CPU: scanpy (calculate_qc_metrics, scrublet). GPU: rapids-singlecell with the same calls, when it
    imports; its equivalence with the CPU path must be checked on a GPU machine.
    """
    X = adata.X
    view = ad.AnnData(X=X, obs=pd.DataFrame(index=adata.obs_names), var=_gene_flags(adata.var_names))
    gpu = use_gpu and rapids_available()
    if gpu:  # pragma: no cover - needs CUDA
        import rapids_singlecell as rsc

        rsc.get.anndata_to_GPU(view)
        rsc.pp.calculate_qc_metrics(view, qc_vars=["mt", "ribo", "hb"], log1p=False)
        rsc.get.anndata_to_CPU(view)
        metrics = view.obs
    else:
        import scanpy as sc

        metrics, _ = sc.pp.calculate_qc_metrics(view, qc_vars=["mt", "ribo", "hb"], percent_top=None, log1p=False, inplace=False)
    out = pd.DataFrame(
        {
            "UMI_count": np.asarray(X.sum(axis=1)).ravel(),
            "ngenes": np.asarray((X > 0).sum(axis=1)).ravel(),
            "pct_counts_mt": metrics["pct_counts_mt"].to_numpy(),
            "pct_counts_ribo": metrics["pct_counts_ribo"].to_numpy(),
            "pct_counts_hb": metrics["pct_counts_hb"].to_numpy(),
        },
        index=adata.obs_names,
    )
    chunks = chunk_of_cells(labels, n_chunks)
    doublet = np.zeros(adata.n_obs, dtype=bool)
    for c in progress(np.unique(chunks), desc="scrublet per chunk", total=len(np.unique(chunks))):
        idx = np.flatnonzero(chunks == c)
        sub = ad.AnnData(X=sp.csr_matrix(X[idx]) if not sp.issparse(X) else X[idx].tocsr(), var=pd.DataFrame(index=adata.var_names))
        if gpu:  # pragma: no cover - needs CUDA
            import rapids_singlecell as rsc

            rsc.get.anndata_to_GPU(sub)
            rsc.pp.scrublet(sub, n_prin_comps=n_prin_comps)
            rsc.get.anndata_to_CPU(sub)
        else:
            import scanpy as sc

            try:
                sc.pp.scrublet(sub, n_prin_comps=n_prin_comps, random_state=0, verbose=False)
            except ValueError as exc:  # too few variable genes or cells for its PCA
                raise TxreproError(
                    f"scrublet failed on QC chunk {c} ({idx.size} cells, {adata.n_vars} genes): {exc}; "
                    "lower data.scrublet_n_prin_comps or data.scrublet_chunks in the config"
                ) from None
        doublet[idx] = sub.obs["predicted_doublet"].to_numpy().astype(bool)
    out["predicted_doublet"] = doublet
    log.info("QC metrics on %d cells (%s); %d predicted doublets", adata.n_obs, "rapids-singlecell" if gpu else "scanpy", int(doublet.sum()))
    return out
