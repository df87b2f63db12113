"""AnnData reading with the checks every study needs: readable file, required columns, counts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from txrepro.errors import InputError


def read_h5ad_checked(
    path: str | os.PathLike[str],
    *,
    obs: Sequence[str] = (),
    var: Sequence[str] = (),
    backed: bool = False,
) -> ad.AnnData:
    """Read an h5ad and check that the named obs/var columns exist.

    A var column may also be satisfied by the var index name, since files from different
    tools keep gene ids in either place.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "h5ad", "an existing .h5ad file", "nothing at this path")
    try:
        adata = ad.read_h5ad(p, backed="r" if backed else None)
    except Exception as exc:  # h5py/anndata raise many types for a corrupt file
        raise InputError(p, "h5ad", "a readable AnnData .h5ad file", f"{type(exc).__name__}") from None
    require_columns(adata, p, obs=obs, var=var)
    return adata


def require_columns(adata: ad.AnnData, path: str | os.PathLike[str], *, obs: Sequence[str] = (), var: Sequence[str] = ()) -> None:
    for col in obs:
        if col not in adata.obs.columns:
            raise InputError(path, f"obs['{col}']", f"an obs column '{col}'", f"obs columns {list(adata.obs.columns)}")
    for col in var:
        if col not in adata.var.columns and adata.var.index.name != col:
            raise InputError(path, f"var['{col}']", f"a var column '{col}'", f"var columns {list(adata.var.columns)}")


def var_values(adata: ad.AnnData, column: str | None) -> np.ndarray:
    """Gene identifiers from a var column, or from var_names when column is None/the index."""
    if column is None or (column not in adata.var.columns and adata.var.index.name == column):
        return adata.var_names.to_numpy().astype(str)
    return adata.var[column].to_numpy().astype(str)


def require_counts(
    adata: ad.AnnData,
    path: str | os.PathLike[str],
    *,
    layer: str | None = None,
    max_rows: int = 2000,
) -> None:
    """Check that X (or a layer) holds raw counts: non-negative integers.

    Only the first `max_rows` rows are read, which is enough to tell log-normalised data from
    counts without loading a 200k-cell matrix.
    """
    matrix = adata.layers[layer] if layer else adata.X
    where = f"layers['{layer}']" if layer else "X"
    block = matrix[: min(max_rows, adata.n_obs)]
    values = block.data if sp.issparse(block) else np.asarray(block).ravel()
    if values.size == 0:
        return
    if not np.all(np.isfinite(values)):
        raise InputError(path, where, "raw counts (finite non-negative integers)", "NaN or infinite values")
    if values.min() < 0:
        raise InputError(path, where, "raw counts (non-negative integers)", f"negative values (min {values.min():.3g})")
    fractional = np.abs(values - np.round(values)) > 1e-6
    if fractional.any():
        example = values[fractional][0]
        raise InputError(path, where, "raw counts (integers)", f"non-integer values such as {example:.4g} (log-normalised data?)")
