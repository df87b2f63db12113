"""Real single-cell UMI counts that ship inside a package we already install (scanpy), for the
real-data tests of gpo_vae and drugseq.

`scanpy.datasets.pbmc68k_reduced()` reads `10x_pbmc68k_reduced.h5ad` from the scanpy wheel (pinned
in requirements/lock-cpu.txt; no download): 700 peripheral blood cells of 10x Genomics' 68k PBMC
data set (Zheng et al., Nat Commun 2017) with their cell-type labels (`bulk_labels`) and 765 real
gene symbols. Its `.raw` holds log1p(counts / n_counts x 1e4), with n_counts the cell's total over all
genes; the UMI counts are recovered as round(expm1(raw) x n_counts / 1e4), and every value must lie
within 0.1 of an integer before rounding, so these are the real counts, not an approximation.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def pbmc68k_counts() -> ad.AnnData:
    import scanpy as sc

    pbmc = sc.datasets.pbmc68k_reduced()
    raw = pbmc.raw.to_adata()
    logn = raw.X.toarray() if sp.issparse(raw.X) else np.asarray(raw.X)
    counts = np.expm1(logn.astype(np.float64)) * pbmc.obs["n_counts"].to_numpy()[:, None] / 1e4
    rounded = np.rint(counts)
    assert np.abs(counts - rounded).max() < 0.1, "scanpy's pbmc68k_reduced no longer holds recoverable counts"
    obs = pd.DataFrame({"cell_type": pbmc.obs["bulk_labels"].astype(str).to_numpy()}, index=pbmc.obs_names)
    return ad.AnnData(X=rounded.astype(np.float32), obs=obs, var=pd.DataFrame(index=raw.var_names))
