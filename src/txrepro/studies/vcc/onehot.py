"""Ridge and random forest in the original project's design: one-hot target, guide and batch -> each cell.

The project's `linear_model/linear_reg.py` (read at 50275c5; `lr_val.py` predicts with it) fits
`Ridge(alpha=1, solver='sparse_cg')` from `OneHotEncoder(handle_unknown='ignore')` columns of
`target_gene`, `guide_id` and `batch` to every training cell's normalised-log expression (all genes),
then predicts every cell of the evaluation file, control cells included, clipped at 0. A held-out
gene's cells have never-seen target and guide labels, so their columns are all zero: the model
predicts each of them as intercept + its batch's coefficient. Its `xgb1.py` used the same design;
the random forest script is not in the repository, so the forest here uses that design too.

Cells with the same (target, guide, batch) share one design row, so the cell-level fit is computed
from the mean of each design row weighted by its cell count: for least squares (ridge) that is the
same minimiser exactly; the forest's split criterion and leaf means need only the same weighted
sums. So the 221k x 18k matrix is read once, streamed, and never densified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from txrepro.errors import InputError
from txrepro.runtime import get_logger
from txrepro.studies.vcc.data import Prepared
from txrepro.studies.vcc.models import CellPrediction, PredictionContext, Predictor

log = get_logger(__name__)

ORIGINAL_ALPHA = 1.0  # linear_reg.py --ridge-alpha default, the value its usage lines show


@dataclass
class DesignData:
    """Training design rows (unique target/guide/batch) with their mean expression and cell counts."""

    columns: list[str]  # obs columns of the design, in the original's order
    rows: pd.DataFrame  # one row per unique training combination (str values)
    means: np.ndarray  # design rows x genes, float64: mean normalised-log expression
    counts: np.ndarray  # cells per design row
    obs: pd.DataFrame  # every prepared cell's design columns (str) and perturbation label


def design_columns(prepared: Prepared) -> list[str]:
    """target_gene, guide_id, batch as the input names them; a column the run skipped ('') is left out."""
    cols = [prepared.pert_col]
    for key, default in (("guide_col", "guide_id"), ("batch_col", "batch")):
        name = prepared.info.get(key, default)
        if name:
            cols.append(name)
    return cols


def read_design(prepared: Prepared, block: int = 10_000) -> DesignData:
    """Stream the prepared cells once; sum each training design row's expression."""
    import anndata as ad
    import anndata.io as adio
    import h5py

    from txrepro.studies.vcc.h5ad_stream import iter_row_blocks

    cols = design_columns(prepared)
    with h5py.File(prepared.h5ad, "r") as f:
        obs = adio.read_elem(f["obs"])
    missing = [c for c in cols if c not in obs]
    if missing:
        raise InputError(prepared.h5ad, f"obs['{missing[0]}']", "the design columns of the original ridge (target, guide, batch)", "missing")
    design = obs[cols].astype(str)
    labels = design[prepared.pert_col].to_numpy()
    training = np.isin(labels, [*prepared.split["train"], *prepared.split["val"], prepared.control])
    keys = pd.MultiIndex.from_frame(design[training])
    uniq = keys.unique().sort_values()
    codes = np.full(len(design), -1, dtype=np.int64)
    codes[training] = uniq.get_indexer(keys)
    n_rows = len(uniq)
    src = ad.read_h5ad(prepared.h5ad, backed="r")
    try:
        n_genes = src.n_vars
        sums = np.zeros((n_rows, n_genes), dtype=np.float64)
        for start, stop, part in iter_row_blocks(src.X, src.n_obs, block):
            c = codes[start:stop]
            keep = np.flatnonzero(c >= 0)
            if keep.size == 0:
                continue
            ind = sp.csr_matrix((np.ones(keep.size), (c[keep], keep)), shape=(n_rows, stop - start))
            prod = (ind @ part.astype(np.float64)).tocoo()
            sums[prod.row, prod.col] += prod.data  # (row, col) pairs are unique in a product
    finally:
        src.file.close()
    counts = np.bincount(codes[codes >= 0], minlength=n_rows).astype(np.float64)
    rows = uniq.to_frame(index=False)
    rows.columns = cols
    return DesignData(cols, rows, sums / counts[:, None], counts, design)


def _encoder(design: DesignData) -> Any:
    from sklearn.preprocessing import OneHotEncoder

    return OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(design.rows[design.columns].to_numpy())


class _OneHotModel(Predictor):
    """Shared: fit on the design rows, predict each real test cell and each real control cell."""

    kind = ""

    def fit(self, ctx: PredictionContext, x: np.ndarray, design: DesignData) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def predict(self, ctx: PredictionContext) -> CellPrediction:
        prepared = ctx.prepared
        design = read_design(prepared)
        enc = _encoder(design)
        x = enc.transform(design.rows[design.columns].to_numpy())
        predict_rows, info = self.fit(ctx, x, design)
        obs = design.obs
        labels = obs[prepared.pert_col].to_numpy()
        perts = ctx.test
        n_cells = prepared.n_cells(perts)

        def predicted(rows: pd.DataFrame) -> np.ndarray:
            """Each cell's prediction (computed once per distinct design row), clipped at 0 as the original."""
            keys = pd.MultiIndex.from_frame(rows[design.columns])
            uniq = keys.unique()
            y = np.maximum(predict_rows(enc.transform(uniq.to_frame(index=False).to_numpy())), 0.0).astype(np.float32)
            return y[uniq.get_indexer(keys)]

        def block(i: int) -> sp.csr_matrix:
            cells = obs[labels == perts[i]]
            return sp.csr_matrix(predicted(cells))

        control_rows = obs[labels == prepared.control]

        def controls(chunk: int = 5_000):
            for start in range(0, len(control_rows), chunk):
                yield sp.csr_matrix(predicted(control_rows.iloc[start : start + chunk]))

        unseen = [g for g in perts if g not in set(design.rows[prepared.pert_col])]
        info.update({
            "features": (f"features: one-hot {' / '.join(design.columns)} (the original design; {len(unseen)} of {len(perts)} test genes "
                         "unseen, their cells predicted from the intercept and their batch); predicted control cells, as the original scored them"),
            "design_rows": len(design.rows),
            "design_columns": design.columns,
            "training_cells": int(design.counts.sum()),
        })
        return CellPrediction(perts, n_cells, block, info, make_controls=controls)


class RidgeOneHot(_OneHotModel):
    """linear_reg.py: Ridge(alpha=1) on one-hot target/guide/batch, all genes, every training cell."""

    name = "ridge"

    def fit(self, ctx: PredictionContext, x: np.ndarray, design: DesignData) -> tuple[Any, dict[str, Any]]:
        from sklearn.linear_model import Ridge

        # The cell-level fit, exactly: weighted least squares on the design-row means. The original's
        # iterative sparse_cg (tol 1e-4) approximates this minimiser; cholesky solves it.
        model = Ridge(alpha=ORIGINAL_ALPHA, fit_intercept=True, solver="cholesky").fit(x, design.means, sample_weight=design.counts)
        return model.predict, {"alpha": ORIGINAL_ALPHA, "solver": "cholesky (the exact minimiser sparse_cg approximates)"}


class RandomForestOneHot(_OneHotModel):
    """RandomForestRegressor on the same one-hot design (the project's forest script is not public).

    The forest's split criterion (summed squared error over genes) and its leaf means depend on the
    targets only through their inner products, so it is fitted on the design-row means rotated onto
    their principal axes: all of them (`vcc_rf_components: 0`) gives the all-gene forest exactly;
    the default keeps the top `vcc_rf_components` (a 18,080-output forest re-scores every gene at
    every split, hours at full size), said in the notes.
    """

    name = "random_forest"

    def fit(self, ctx: PredictionContext, x: np.ndarray, design: DesignData) -> tuple[Any, dict[str, Any]]:
        rf = fit_rotated_forest(x, design.means, design.counts, components=ctx.params.rf_components,
                                trees=ctx.params.rf_trees, seed=ctx.params.seed, threads=ctx.threads)
        k, rank = rf.k, rf.rank
        return rf.predict, {"trees": ctx.params.rf_trees, "effect_pcs": k, "rank": rank,
                              "targets": "all principal axes (exact all-gene forest)" if k == rank else f"top {k} of {rank} principal axes"}


@dataclass
class RotatedForest:
    forest: Any  # the fitted RandomForestRegressor (on principal-axis scores)
    mean: np.ndarray
    basis: np.ndarray  # k x genes
    k: int
    rank: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.mean + np.atleast_2d(self.forest.predict(x)).reshape(x.shape[0], self.k) @ self.basis


def fit_rotated_forest(x: np.ndarray, y: np.ndarray, weights: np.ndarray, *, components: int, trees: int, seed: int,
                       threads: int = 1) -> RotatedForest:
    """A multi-output RandomForestRegressor on `y` (rows weighted), fitted on y's principal-axis scores.

    Squared-error split scores and leaf means are invariant under centring and rotating the outputs,
    so with every axis (`components` <= 0) each tree partitions its training rows as the forest on
    y itself would and predicts them the same (a split between two features that separate the same
    rows is a float-rounding tie either way, and may route new rows differently); with fewer axes it
    is the forest on y's top axes.
    """
    from sklearn.ensemble import RandomForestRegressor

    w = weights / weights.sum()
    mean = w @ y
    centred = y - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    rank = int((s > s[0] * 1e-10).sum()) if s.size and s[0] > 0 else 0
    k = max(1, rank if components <= 0 else min(components, rank))
    basis = vt[:k]
    forest = RandomForestRegressor(n_estimators=trees, random_state=seed, n_jobs=threads)
    forest.fit(x, centred @ basis.T, sample_weight=weights)
    return RotatedForest(forest, mean, basis, k, rank)
