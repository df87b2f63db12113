"""scGPT's per-cell value binning, row for row as `scgpt.preprocess.binning` does it, but seeded.

Each cell's non-zero values are cut at the quantiles `linspace(0, 1, n_bins - 1)` of that cell's
non-zero values; ties between edges are spread with uniform random numbers (scgpt's `_digitize`,
`side="both"`). scgpt draws them from numpy's global generator; scgpt-age re-seeded it with 0 before
every binning call. Here a `RandomState(seed)` is consumed in the same order (one draw per non-zero
value, row by row), so the result equals scgpt's under `np.random.seed(seed)`; the tests check it.

Binning depends only on the ranks of a cell's values, so binning raw counts equals binning
normalised or log1p-normalised values (a per-cell scale and a monotone map keep ranks and ties).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def bin_rows(
    matrix: np.ndarray | sp.spmatrix,
    n_bins: int,
    seed: int = 0,
    *,
    return_edges: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Bins 0..n_bins-1 (0 = not detected) per cell, as uint8; optionally the per-cell edges.

    Edges are the `n_bins - 1` quantiles of each cell's non-zero values (all zero for an empty
    cell), which is what `edit_bin` needs to place a perturbed value later without re-binning.
    """
    if n_bins > 256:
        raise ValueError("n_bins above 256 does not fit uint8")
    rng = np.random.RandomState(seed)
    csr = sp.csr_matrix(matrix) if not sp.isspmatrix_csr(matrix) else matrix
    n_cells, n_genes = csr.shape
    binned = np.zeros((n_cells, n_genes), dtype=np.uint8)
    edges_out = np.zeros((n_cells, n_bins - 1), dtype=np.float64) if return_edges else None
    quantiles = np.linspace(0, 1, n_bins - 1)
    indptr, indices, data = csr.indptr, csr.indices, csr.data
    for i in range(n_cells):
        lo, hi = indptr[i], indptr[i + 1]
        cols = indices[lo:hi]
        vals = data[lo:hi]
        keep = vals > 0  # explicit zeros stored in a sparse matrix are still zeros
        if not keep.all():
            cols, vals = cols[keep], vals[keep]
        if vals.size == 0:
            continue
        # scgpt iterates the row's non-zero entries in column order; sort in case the CSR is not
        order = np.argsort(cols, kind="stable")
        cols, vals = cols[order], vals[order]
        edges = np.quantile(vals, quantiles)
        left = np.digitize(vals, edges)
        right = np.digitize(vals, edges, right=True)
        rands = rng.rand(vals.size)
        binned[i, cols] = np.ceil(rands * (right - left) + left).astype(np.int64)
        if edges_out is not None:
            edges_out[i] = edges
    if return_edges:
        return binned, edges_out
    return binned


def edit_bin(values: np.ndarray, edges: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of a new value placed in a cell whose other values keep their bins.

    `values` (cells, k) against each cell's `edges` (cells, n_bins-1): 0 stays 0, anything above
    the cell's maximum takes the top bin, otherwise the upper of scgpt's two tie bins. Used by the
    batched perturbation sweep instead of re-binning a whole cell for each perturbed gene.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    out = np.zeros(values.shape, dtype=np.uint8)
    for i in range(values.shape[0]):
        out[i] = np.digitize(values[i], edges[i])
    out = np.where(values > 0, np.clip(out, 1, n_bins - 1), 0).astype(np.uint8)
    return out
