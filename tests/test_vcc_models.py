"""Predictors: cell-eval's baseline, planted effects recovered, fallback features, determinism."""

import json

import anndata as ad
import numpy as np
import polars as pl
import pytest

from txrepro.errors import InputError
from txrepro.fixtures.vcc import write_fixture
from txrepro.studies.vcc.data import Prepared
from txrepro.studies.vcc.features import pca_loading_features
from txrepro.studies.vcc.models import PredictionContext, get_predictor, predict
from txrepro.studies.vcc.params import DataParams, ModelParams
from txrepro.studies.vcc.preprocess import prepare

CONTROL = "non-targeting"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("vcc_models")
    paths = write_fixture(d / "fx", seed=0)
    prepare(paths["input"], d / "prep", dp=DataParams(n_hvg=20), test_genes_file=paths["test_genes"])
    return d, paths, Prepared(d / "prep"), json.loads(paths["truth"].read_text())


def test_cell_mean_equals_cell_eval_build_base_mean_adata(world):
    from cell_eval import build_base_mean_adata

    d, _, prepared, _ = world
    h5, _ = predict(d / "prep", "cell_mean", d / "pred")
    ours = ad.read_h5ad(h5)
    split = prepared.split
    training = prepared.rows_of([*split["train"], *split["val"], CONTROL])
    test = sorted(split["test"])
    counts = pl.DataFrame({"target_gene": test, "n_cells": prepared.n_cells(test).tolist()})
    theirs = build_base_mean_adata(training.copy(), counts_df=counts, pert_col="target_gene", control_pert=CONTROL)
    for g in [*test, CONTROL]:
        a = ours[ours.obs["target_gene"] == g].X.toarray()
        b = np.asarray(theirs[theirs.obs["target_gene"] == g].X.todense() if hasattr(theirs.X, "todense") else theirs[theirs.obs["target_gene"] == g].X)
        assert a.shape == b.shape, g
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=g)


@pytest.mark.parametrize("use_esm2", [True, False], ids=["esm2", "fallback"])
def test_ridge_features_recovers_the_planted_effects_of_unseen_perturbations(world, use_esm2):
    d, paths, prepared, truth = world
    ctx = PredictionContext(prepared, ModelParams(), paths["features"] if use_esm2 else None)
    pred = get_predictor("ridge_features").predict(ctx)
    assert pred.info["features"].startswith("features: " + ("ESM2" if use_esm2 else "fallback"))
    genes = list(prepared.var_names)
    real = prepared.deltas(pred.perturbations)
    for i, t in enumerate(pred.perturbations):
        effect = pred.effects[i]
        for g in truth["up_genes"][t]:
            assert effect[genes.index(g)] > 0.3, (t, g)
        for g in truth["down_genes"][t]:
            assert effect[genes.index(g)] < -0.3, (t, g)
        # of the 16 block genes, the 4 most affected are the perturbation's own program block
        block_genes = [b for bl in truth["blocks"].values() for b in bl]
        top4 = sorted(block_genes, key=lambda g: -abs(effect[genes.index(g)]))[:4]
        assert set(top4) == set(truth["de_genes"][t][1:]), (t, top4)
        # closer to its own real effect than to any other test perturbation's
        dist = np.abs(real - effect).sum(axis=1)
        assert dist.argmin() == i, t
        # the emitted cells carry that effect: sampled controls + effect, clipped at 0
        cells = pred.make_block(i).toarray()
        assert cells.shape == (40, len(genes)) and cells.min() >= 0
        shift = cells.mean(axis=0) - prepared.mean_of([CONTROL])[0]
        assert np.corrcoef(shift, effect)[0, 1] > 0.8, t


def test_fallback_features_group_targets_by_program(world):
    _, _, prepared, truth = world
    targets = truth["targets"]
    f = pca_loading_features(prepared, targets, n_pcs=32, pca_cells=5000, seed=42)
    m = f.matrix / np.linalg.norm(f.matrix, axis=1, keepdims=True)
    sim = m @ m.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    same = sum(truth["program_of"][targets[j]] == truth["program_of"][t] for t, j in zip(targets, nearest, strict=True))
    assert same == len(targets)


def test_predictions_are_deterministic_and_seeded(world):
    d, paths, _, _ = world
    a, _ = predict(d / "prep", "random_forest_features", d / "p1", features=paths["features"])
    b, _ = predict(d / "prep", "random_forest_features", d / "p2", features=paths["features"])
    c, _ = predict(d / "prep", "random_forest_features", d / "p3", features=paths["features"], params=ModelParams(seed=1))
    xa, xb, xc = (ad.read_h5ad(p).X for p in (a, b, c))
    assert (xa != xb).nnz == 0
    assert (xa != xc).nnz > 0


def test_registry_refuses_unknown_models_and_knows_every_published_one():
    with pytest.raises(InputError, match="cell_mean, ridge, random_forest"):
        get_predictor("lasso")
    assert get_predictor("state").name == "state" and get_predictor("scgpt_finetuned").name == "scgpt_finetuned"


def _original_design(prepared: Prepared, cells: ad.AnnData):
    return cells.obs[["target_gene", "guide_id", "batch"]].astype(str).to_numpy()


def _cells_with_design(prepared: Prepared, groups: list[str]) -> ad.AnnData:
    cells = prepared.rows_of(groups)
    full = ad.read_h5ad(prepared.h5ad, backed="r")
    try:
        cells.obs = full.obs.loc[cells.obs_names, ["target_gene", "guide_id", "batch"]].copy()
    finally:
        full.file.close()
    return cells


def test_onehot_ridge_is_the_originals_cell_level_fit(world):
    """linear_reg.py's recipe on the training cells themselves (OneHotEncoder + Ridge(alpha=1) on every
    cell, predict each test and control cell, clip at 0) against our design-row computation."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import OneHotEncoder

    d, _, prepared, _ = world
    split = prepared.split
    train = _cells_with_design(prepared, [*split["train"], *split["val"], CONTROL])
    enc = OneHotEncoder(sparse_output=True, handle_unknown="ignore")
    x = enc.fit_transform(_original_design(prepared, train))
    model = Ridge(alpha=1.0, fit_intercept=True, solver="sparse_cg", tol=1e-12).fit(x, train.X.toarray())
    h5, js = predict(d / "prep", "ridge", d / "onehot")
    ours = ad.read_h5ad(h5)
    for g in [*sorted(split["test"]), CONTROL]:
        cells = _cells_with_design(prepared, [g])
        want = np.maximum(model.predict(enc.transform(_original_design(prepared, cells))), 0)
        got = ours[ours.obs["target_gene"] == g].X.toarray()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=g)
    info = json.loads(js.read_text())
    assert info["controls"] == "the model's predicted control cells" and "one-hot target_gene / guide_id / batch" in info["features"]
    # unseen genes: all their cells share the intercept + batch prediction, so cells of two test genes
    # in one batch are identical rows
    t = sorted(split["test"])
    a, b = (ours[ours.obs["target_gene"] == g].X.toarray() for g in t[:2])
    assert np.unique(np.vstack([a, b]), axis=0).shape[0] <= 2  # the fixture has 2 batches


def test_forest_on_all_principal_axes_is_the_all_gene_forest():
    """Rotating the targets onto all their principal axes leaves every tree's partition of its
    training rows and its predictions for them unchanged, against the same RandomForestRegressor on
    every output (the cell-level forest's split scores need only these weighted sums)."""
    from sklearn.ensemble import RandomForestRegressor

    from txrepro.studies.vcc.onehot import fit_rotated_forest

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = np.column_stack([np.sin(x[:, 0]) + x[:, 1] * g for g in rng.normal(size=200)]) + rng.normal(scale=0.1, size=(60, 200))
    w = rng.integers(1, 20, size=60).astype(float)
    direct = RandomForestRegressor(n_estimators=15, random_state=3).fit(x, y, sample_weight=w)
    rf = fit_rotated_forest(x, y, w, components=0, trees=15, seed=3)
    assert rf.k == rf.rank == 59
    for t_direct, t_rot, rows in zip(direct.estimators_, rf.forest.estimators_, direct.estimators_samples_, strict=True):
        rows = np.unique(rows)
        leaves_d, leaves_r = t_direct.apply(x[rows]), t_rot.apply(x[rows])
        groups_d = {frozenset(rows[leaves_d == leaf]) for leaf in np.unique(leaves_d)}
        groups_r = {frozenset(rows[leaves_r == leaf]) for leaf in np.unique(leaves_r)}
        assert groups_d == groups_r  # the same partition of the tree's training rows
        pred_r = rf.mean + t_rot.predict(x[rows]) @ rf.basis
        np.testing.assert_allclose(pred_r, t_direct.predict(x[rows]), rtol=1e-9, atol=1e-9)
    top = fit_rotated_forest(x, y, w, components=5, trees=15, seed=3)
    assert top.k == 5 and np.abs(top.predict(x) - direct.predict(x)).max() > 1e-6  # fewer axes: an approximation


def test_onehot_forest_predicts_unseen_genes_from_their_batch(world):
    d, _, prepared, _ = world
    h5, js = predict(d / "prep", "random_forest", d / "rf", params=ModelParams(rf_trees=10))
    ours = ad.read_h5ad(h5)
    assert json.loads(js.read_text())["controls"] == "the model's predicted control cells"
    t = sorted(prepared.split["test"])
    cells = np.vstack([ours[ours.obs["target_gene"] == g].X.toarray() for g in t])
    assert np.unique(cells, axis=0).shape[0] <= 2 and cells.min() >= 0  # one prediction per batch
    again, _ = predict(d / "prep", "random_forest", d / "rf2", params=ModelParams(rf_trees=10))
    assert (ad.read_h5ad(again).X != ours.X).nnz == 0
