"""Predictors of held-out perturbations, behind one registry so new models plug in.

A predictor turns the prepared training data into predicted *cells* for every test
perturbation (the real test cell counts), because cell-eval scores cells. The writer then
appends the real control cells, as cell-eval's own baseline does, so every model is scored
against the same controls.

Registered here: the cell-mean baseline (cell-eval's definition) and the labelled alternatives
`ridge_features` / `random_forest_features` (per-perturbation features instead of the original
design); `ridge` / `random_forest` in the original one-hot design live in onehot.py; STATE (state.py) and scGPT (scgpt_perturb.py) register the same way: a
class with `name` and `predict(ctx) -> CellPrediction` and a line in PREDICTORS; heavy imports
stay inside. Models that start from control cells (STATE, scGPT) share `cells_from_control_rows`.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path, remove_stale_temporaries, write_json
from txrepro.runtime import get_logger, progress, seed_everything
from txrepro.studies.vcc.data import Prepared
from txrepro.studies.vcc.features import perturbation_features
from txrepro.studies.vcc.h5ad_stream import CsrH5adWriter
from txrepro.studies.vcc.params import ModelParams, ScGPTParams

log = get_logger(__name__)

# name -> "module:Class"; imported only when the model is run.
PREDICTORS: dict[str, str] = {
    "cell_mean": "txrepro.studies.vcc.models:CellMeanBaseline",
    "ridge": "txrepro.studies.vcc.onehot:RidgeOneHot",
    "random_forest": "txrepro.studies.vcc.onehot:RandomForestOneHot",
    "state": "txrepro.studies.vcc.state:StatePredictor",
    "state_more_steps": "txrepro.studies.vcc.state:StateMoreStepsPredictor",
    "scgpt_zero_shot": "txrepro.studies.vcc.scgpt_perturb:ScGPTZeroShot",
    "scgpt_finetuned": "txrepro.studies.vcc.scgpt_perturb:ScGPTFinetuned",
    "ridge_features": "txrepro.studies.vcc.models:RidgeEffects",
    "random_forest_features": "txrepro.studies.vcc.models:RandomForestEffects",
}

# Published models without a predictor in this version, and why (shown as `not computed`).
PLANNED: dict[str, str] = {}


@dataclass
class PredictionContext:
    prepared: Prepared
    params: ModelParams = field(default_factory=ModelParams)
    features_path: Path | None = None
    threads: int = 1
    trained: Path | None = None  # a `state-train` / `scgpt-finetune` output folder
    device: str = "auto"
    scgpt: ScGPTParams = field(default_factory=ScGPTParams)
    scgpt_checkpoint: Path | None = None  # pretrained scGPT folder (zero-shot)
    scgpt_allow_random_init: bool = False
    scgpt_verify_checksums: bool = False

    @property
    def train(self) -> list[str]:
        return list(self.prepared.split["train"])

    @property
    def val(self) -> list[str]:
        return list(self.prepared.split["val"])

    @property
    def test(self) -> list[str]:
        return sorted(self.prepared.split["test"])


@dataclass
class CellPrediction:
    """Predicted cells, produced one perturbation at a time (never all in memory)."""

    perturbations: list[str]
    n_cells: np.ndarray
    make_block: Callable[[int], sp.csr_matrix]  # index into perturbations -> (n_cells[i] x genes)
    info: dict[str, Any]
    effects: np.ndarray | None = None  # predicted pseudobulk effects, for models that predict them
    # The model's own control cells (blocks, in the prepared control order), for models whose original
    # was scored with its predicted controls; None: the real control cells, as cell-eval's baseline.
    make_controls: Callable[[], Iterable[sp.csr_matrix]] | None = None


class Predictor(ABC):
    name: ClassVar[str]

    @abstractmethod
    def predict(self, ctx: PredictionContext) -> CellPrediction: ...


def get_predictor(name: str) -> Predictor:
    if name not in PREDICTORS:
        known = ", ".join(PREDICTORS)
        raise InputError("command line", "model (--model; parameter vcc_models)", f"one of {known}", repr(name) + (f" ({PLANNED[name]})" if name in PLANNED else ""))
    module, cls = PREDICTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def sampled_controls(ctx: PredictionContext, i: int, n: int, n_controls: int) -> np.ndarray:
    """The control cells (row numbers) a model starts from for test perturbation i: one seeded draw
    shared by every model, so their predictions differ only by what the model does."""
    rng = np.random.default_rng([ctx.params.seed, i])
    return rng.choice(n_controls, size=n, replace=n > n_controls)


def cells_from_effects(ctx: PredictionContext, deltas: np.ndarray, info: dict[str, Any]) -> CellPrediction:
    """Cells = a seeded sample of real control cells + the predicted effect, clipped at 0.

    Keeps the control cells' cell-to-cell variation, so DE on the prediction behaves like DE on
    real cells; the seed is per perturbation, so outputs do not depend on model order.
    """
    prepared = ctx.prepared
    ctrl = prepared.control_rows().X.tocsr()
    perts = ctx.test
    n_cells = prepared.n_cells(perts)

    def block(i: int) -> sp.csr_matrix:
        idx = sampled_controls(ctx, i, int(n_cells[i]), ctrl.shape[0])
        x = ctrl[idx].toarray().astype(np.float32)
        x += deltas[i].astype(np.float32)
        np.maximum(x, 0.0, out=x)
        return sp.csr_matrix(x)

    return CellPrediction(perts, n_cells, block, info, np.asarray(deltas))


def cells_from_control_rows(
    ctx: PredictionContext,
    columns: np.ndarray,
    predict_block: Callable[[int, np.ndarray], np.ndarray],
    info: dict[str, Any],
) -> CellPrediction:
    """Cells from a model that maps control cells to perturbed cells on a subset of genes.

    For test perturbation i, `predict_block(i, basal)` gets the sampled control cells' values on
    `columns` (n x len(columns), float32) and returns their predicted values there; every other
    gene keeps the control cell's value (a predicted effect of 0), clipped at 0 like any cell.
    """
    ctrl = ctx.prepared.control_rows().X.tocsr()
    perts = ctx.test
    n_cells = ctx.prepared.n_cells(perts)
    columns = np.asarray(columns, dtype=np.int64)

    def block(i: int) -> sp.csr_matrix:
        idx = sampled_controls(ctx, i, int(n_cells[i]), ctrl.shape[0])
        x = ctrl[idx].toarray().astype(np.float32)
        pred = np.asarray(predict_block(i, np.ascontiguousarray(x[:, columns])), dtype=np.float32)
        if pred.shape != (idx.size, columns.size):
            raise ValueError(f"model returned {pred.shape} for {perts[i]}, expected {(idx.size, columns.size)}")
        x[:, columns] = pred
        np.maximum(x, 0.0, out=x)
        return sp.csr_matrix(x)

    return CellPrediction(perts, n_cells, block, info)


class CellMeanBaseline(Predictor):
    """cell-eval's baseline: every perturbed cell = mean of the training per-perturbation means.

    As in cell_eval.build_base_mean_adata, the mean runs over every group of the training data,
    the control group included (its `group_by(pert).mean()` keeps the control row). Computed
    from the prepared group means, so the 221k-cell matrix is never densified.
    """

    name = "cell_mean"

    def predict(self, ctx: PredictionContext) -> CellPrediction:
        groups = [*ctx.train, *ctx.val, ctx.prepared.control]
        baseline = ctx.prepared.mean_of(groups).mean(axis=0).astype(np.float32)
        perts = ctx.test
        n_cells = ctx.prepared.n_cells(perts)

        def block(i: int) -> sp.csr_matrix:
            return sp.csr_matrix(np.tile(baseline, (int(n_cells[i]), 1)))

        info = {"features": "features: none (cell-eval baseline, mean of the training group means)", "training_groups": len(groups)}
        return CellPrediction(perts, n_cells, block, info)


class _EffectRegressor(Predictor):
    """Regress each perturbation's pseudobulk effect (all genes) on its features."""

    def training_data(self, ctx: PredictionContext) -> tuple[Any, list[str]]:
        needed = sorted({*ctx.train, *ctx.val, *ctx.test})
        feats = perturbation_features(ctx.prepared, needed, path=ctx.features_path, n_pcs=ctx.params.n_pcs,
                                      pca_cells=ctx.params.pca_cells, seed=ctx.params.seed)
        return feats, needed


class RidgeEffects(_EffectRegressor):
    """Features -> ridge (intercept, no rescaling: PCA loadings carry their variance as weight);
    alpha chosen on the validation genes, then refit on train+val. An alternative to the
    original one-hot design (`ridge`), not in the published table."""

    name = "ridge_features"

    def predict(self, ctx: PredictionContext) -> CellPrediction:
        from sklearn.linear_model import Ridge

        feats, _ = self.training_data(ctx)
        p = ctx.prepared
        alphas = tuple(ctx.params.ridge_alphas)
        val_mae: dict[float, float] = {}
        if ctx.val:
            xt, yt = feats.rows(ctx.train), p.deltas(ctx.train)
            xv, yv = feats.rows(ctx.val), p.deltas(ctx.val)
            for a in alphas:
                m = Ridge(alpha=a).fit(xt, yt)
                val_mae[a] = float(np.mean(np.abs(m.predict(xv) - yv)))
            alpha = min(alphas, key=lambda a: (val_mae[a], a))
        else:
            alpha = 1.0
        fit_groups = [*ctx.train, *ctx.val]
        model = Ridge(alpha=alpha).fit(feats.rows(fit_groups), p.deltas(fit_groups))
        deltas = model.predict(feats.rows(ctx.test))
        info = {"features": feats.source, "alpha": alpha, "val_mae_by_alpha": {str(k): v for k, v in val_mae.items()},
                "fit_perturbations": len(fit_groups)}
        return cells_from_effects(ctx, deltas, info)


class RandomForestEffects(_EffectRegressor):
    """Random forest on the features, predicting the top PCs of the training effects.

    A multi-output forest over 18,080 genes re-scores every gene at every split (hours); the
    effects of ~120 training perturbations live in at most 119 dimensions, so we predict their
    PCA scores and map back. An alternative to the one-hot design (`random_forest`).
    """

    name = "random_forest_features"

    def predict(self, ctx: PredictionContext) -> CellPrediction:
        from sklearn.decomposition import PCA
        from sklearn.ensemble import RandomForestRegressor

        feats, _ = self.training_data(ctx)
        fit_groups = [*ctx.train, *ctx.val]
        y = ctx.prepared.deltas(fit_groups)
        k = max(1, min(ctx.params.rf_components, len(fit_groups) - 1, y.shape[1]))
        pca = PCA(n_components=k, svd_solver="full", random_state=ctx.params.seed).fit(y)
        forest = RandomForestRegressor(n_estimators=ctx.params.rf_trees, random_state=ctx.params.seed, n_jobs=ctx.threads)
        forest.fit(feats.rows(fit_groups), pca.transform(y))
        deltas = pca.inverse_transform(np.atleast_2d(forest.predict(feats.rows(ctx.test))).reshape(len(ctx.test), k))
        info = {"features": feats.source, "trees": ctx.params.rf_trees, "effect_pcs": k, "fit_perturbations": len(fit_groups)}
        return cells_from_effects(ctx, deltas, info)


def write_prediction(pred: CellPrediction, prepared: Prepared, path: Path, chunk_size: int = 10_000) -> Path:
    """Predicted perturbed cells, then the control cells (real, or the model's own), as one h5ad (atomically)."""
    ctrl = prepared.control_rows()
    n_pert = int(pred.n_cells.sum())
    labels = np.concatenate([np.repeat(pred.perturbations, pred.n_cells.astype(int)), np.repeat(prepared.control, ctrl.n_obs)])
    obs = pd.DataFrame({prepared.pert_col: pd.Categorical(labels)},
                       index=[f"pred{i}" for i in range(n_pert)] + [f"ctrl.{x}" for x in ctrl.obs_names])
    var = pd.DataFrame(index=prepared.var_names.copy())
    remove_stale_temporaries(path)  # a killed earlier run's partial prediction file
    with atomic_path(path) as tmp, CsrH5adWriter(tmp, len(obs), len(var)) as w:
        for i in progress(range(len(pred.perturbations)), "vcc predict: perturbations", len(pred.perturbations)):
            block = pred.make_block(i)
            if block.shape != (int(pred.n_cells[i]), len(var)):
                raise ValueError(f"predictor returned {block.shape} for {pred.perturbations[i]}")
            w.append(block)
        if pred.make_controls is None:
            for start in range(0, ctrl.n_obs, chunk_size):
                w.append(ctrl.X[start : start + chunk_size])
        else:
            n = 0
            for block in pred.make_controls():
                if block.shape[1] != len(var):
                    raise ValueError(f"predictor returned {block.shape[1]} genes for control cells")
                w.append(block)
                n += block.shape[0]
            if n != ctrl.n_obs:
                raise ValueError(f"predictor returned {n} control cells, expected {ctrl.n_obs}")
        w.finish(obs, var, {"txrepro_vcc": {"pert_col": prepared.pert_col, "control": prepared.control}})
    return path


def predict(prepared_dir: str | Path, model: str, outdir: str | Path, *, features: str | Path | None = None,
            params: ModelParams = ModelParams(), threads: int = 1, **context: Any) -> tuple[Path, Path]:
    """Run one registered model; writes `<model>_pred.h5ad` and `<model>_model.json`.

    `context` sets the other PredictionContext fields (trained, device, scgpt, scgpt_checkpoint, ...).
    """
    t0 = time.perf_counter()
    predictor = get_predictor(model)
    prepared = Prepared(prepared_dir)
    seed_everything(params.seed)
    ctx = PredictionContext(prepared, params, Path(features) if features else None, threads, **context)
    pred = predictor.predict(ctx)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    h5 = write_prediction(pred, prepared, outdir / f"{model}_pred.h5ad")
    info = {"model": model, "seed": params.seed, "test_perturbations": pred.perturbations,
            "controls": "real control cells" if pred.make_controls is None else "the model's predicted control cells",
            "n_cells": [int(x) for x in pred.n_cells], "seconds": round(time.perf_counter() - t0, 2), **pred.info}
    js = write_json(outdir / f"{model}_model.json", info)
    log.info("%s: predicted %d perturbations (%s) in %.1f s", model, len(pred.perturbations), pred.info.get("features"), info["seconds"])
    return h5, js
