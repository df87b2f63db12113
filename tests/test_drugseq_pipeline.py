"""drugseq end to end on the fixture: planted truth recovered, checkpoints, determinism, CLI steps."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from filelock import FileLock
from scipy.stats import mannwhitneyu

from conftest import run_cli
from txrepro.cli import study_main
from txrepro.errors import InputError
from txrepro.metrics.table import read_metrics
from txrepro.report.run_info import read_run_info
from txrepro.studies.base import StudyRun
from txrepro.fixtures.drugseq import write_fixture
from txrepro.studies.drugseq.data import SCORE_COLUMNS, load_inputs, read_prepared
from txrepro.studies.drugseq.analyse import analyse
from txrepro.studies.drugseq.evaluate import load_trained
from txrepro.studies.drugseq.params import AnalyseParams
from txrepro.studies.drugseq.pipeline import reproduce
from txrepro.studies.drugseq.train import _epoch_losses, _tensors

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """One fixture run shared by the xdist workers (pytest-xdist's file-lock pattern): the tests
    only read it, and training it twice would cost CI time for nothing."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return reproduce(tmp_path_factory.mktemp("drugseq_run"), profile="test", params={})
    out = tmp_path_factory.getbasetemp().parent / "drugseq_run"
    with FileLock(f"{out}.lock"):
        if (out / "run_info.json").is_file():
            return StudyRun("drugseq", out, out / "metrics.tsv", out / "run_info.json", sorted((out / "figures").glob("*.png")))
        return reproduce(out, profile="test", params={})


@pytest.fixture(scope="module")
def truth(run):
    return json.loads((run.outdir / "fixture" / "truth.json").read_text())


def _metrics(run) -> pd.Series:
    return read_metrics(run.metrics).set_index("metric")["value"]


def test_outputs_and_run_info(run):
    for name in ("well_predictions_results.csv", "well_activation_scores.csv", "metabolite_activation_scores.csv", "latent_scores.csv",
                 "metabolite_dmso_distance.csv", "gene_importance_gradinput.csv", "drugseq_metrics_mqc.tsv"):
        assert (run.outdir / name).is_file(), name
    assert sorted(p.name for p in run.figures) == ["drugseq_latent_pca.png", "drugseq_loss_curves.png", "drugseq_top_genes.png", "drugseq_top_metabolites.png"]
    info = read_run_info(run.run_info)
    assert info["data_source"] == "fixture" and info["status"] == "ok"
    assert info["inputs"]["legacy_score"] == "activation_score_old.csv"
    m = read_metrics(run.metrics)
    assert set(m["dataset"]) == {"drugseq_tcell"} and set(m["model"]) == {"dpf_transformer"}
    val = m[m["split"] == "val"].set_index("metric")
    assert val.loc["r2_Tscore_z", "notes"].startswith("addition")


def test_validation_accuracy_and_metrics_match_independent_oracles(run):
    met = _metrics(run)
    assert met["accuracy_label"] > 0.9
    pred = pd.read_csv(run.outdir / "well_predictions_results.csv")
    val = pred[pred["split"] == "val"]
    assert len(val) == 13
    for c in SCORE_COLUMNS:
        y, p = val[f"{c}_true"].to_numpy(), val[f"{c}_pred"].to_numpy()
        r2 = 1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        assert met[f"r2_{c}"] == pytest.approx(r2, rel=1e-6)  # the CSV keeps float32 predictions to 7 digits
        assert r2 > 0.5
    pos, neg = val.loc[val.label_true == 1, "label_prob"], val.loc[val.label_true == 0, "label_prob"]
    auc = mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))
    assert met["roc_auc_label"] == pytest.approx(auc, rel=1e-9)
    assert met["accuracy_label"] == pytest.approx((val.label_pred == val.label_true).mean())


def test_score_columns_are_named_from_the_header(run):
    """The exported truth columns hold the file's columns under their own names (the original swapped them)."""
    pred = pd.read_csv(run.outdir / "well_predictions_results.csv").set_index("well_id")
    scores = pd.read_csv(run.outdir / "fixture" / "scores_3_z.csv")
    wells = pd.read_csv(run.outdir / "fixture" / "well_id.csv")["x"]
    for c in SCORE_COLUMNS:
        np.testing.assert_allclose(pred.loc[wells, f"{c}_true"].to_numpy(), scores[c].to_numpy(), rtol=1e-6)


def test_grad_x_input_finds_the_planted_drivers(run, truth):
    imp = pd.read_csv(run.outdir / "gene_importance_gradinput.csv")
    assert len(set(imp["Gene"].head(4)) & set(truth["drivers"])) >= 3, imp.head(6)
    assert imp["GradInputImportance"].is_monotonic_decreasing


def test_distance_ranks_planted_metabolites_and_separates_their_direction(run, truth):
    rank = pd.read_csv(run.outdir / "metabolite_dmso_distance.csv").set_index("meta_id")
    planted = truth["activators"] + truth["inhibitors"]
    assert rank.loc[planted, "euclidean_mean"].min() > rank.loc[truth["nulls"], "euclidean_mean"].max()
    assert set(rank.drop("DMSO").index[:5]) == set(planted)
    # opposite sides of the DMSO centre: the sign of the projection, and the displacement vectors themselves
    assert (rank.loc[truth["activators"], "direction_mean"] > 0).all()
    assert (rank.loc[truth["inhibitors"], "direction_mean"] < 0).all()
    pred = pd.read_csv(run.outdir / "well_predictions_results.csv")
    z = pred.filter(like="latent_").to_numpy()
    mu = z[pred.meta_id == "DMSO"].mean(axis=0)
    up = z[pred.meta_id.isin(truth["activators"])].mean(axis=0) - mu
    down = z[pred.meta_id.isin(truth["inhibitors"])].mean(axis=0) - mu
    assert up @ down < 0


def test_best_checkpoint_is_the_best_epoch_not_the_last(run):
    model_dir = run.outdir / "model"
    hist = pd.read_csv(model_dir / "history_loss_detailed.csv")
    best_epoch = int(hist["val_total"].idxmin()) + 1
    assert best_epoch != len(hist), "fixture must have its best epoch before the last for this test to mean anything"
    best, last = torch.load(model_dir / "model_best.pt", weights_only=True), torch.load(model_dir / "model_last.pt", weights_only=True)
    assert any(not torch.equal(best[k], last[k]) for k in best)
    # The saved best weights give back the best epoch's validation loss (they are that epoch's copy).
    data, _ = read_prepared(run.outdir / "prepared.h5ad")
    trained = load_trained(model_dir, "best")
    val_idx = np.flatnonzero(trained.split.reindex(data.well_id).to_numpy() == "val")
    losses = _epoch_losses(trained.model, _tensors(data, trained.model_input(data), val_idx, "cpu", True), 16, 0.2, None, None)
    assert losses[0] == pytest.approx(hist["val_total"].min(), rel=1e-5)
    assert losses[0] < hist["val_total"].iloc[-1]
    assert trained.config["best_epoch"] == best_epoch


def test_legacy_score_is_loaded_into_the_loss(run):
    hist = pd.read_csv(run.outdir / "model" / "history_loss_detailed.csv")
    assert (hist["train_reg"] > 0).all()
    np.testing.assert_allclose(hist["train_total"], hist["train_mse"] + hist["train_bce"] + 0.2 * hist["train_reg"], rtol=1e-6)


def test_same_seed_gives_identical_metrics(run, tmp_path):
    again = reproduce(tmp_path / "again", profile="test", params={})
    a, b = read_metrics(run.metrics), read_metrics(again.metrics)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(run.outdir / "gene_importance_gradinput.csv"), pd.read_csv(again.outdir / "gene_importance_gradinput.csv"), check_exact=True)


def test_full_profile_without_data_is_not_computed(tmp_path):
    res = reproduce(tmp_path / "full", profile="full", params={})
    info = read_run_info(res.run_info)
    assert info["data_source"] == "missing" and info["status"] == "not computed: data not provided"


def test_cli_steps_h5ad_input_original_checkpoint_and_logit_target(tmp_path):
    """The Nextflow path: bin/drugseq.py prepare (h5ad) -> train -> analyse, with the original's options."""
    write_fixture(tmp_path / "fx", seed=0)
    data = load_inputs(data_dir=tmp_path / "fx")
    adata = data.to_anndata()
    adata.uns.clear()
    adata.write_h5ad(tmp_path / "user.h5ad")
    prep, model, out = tmp_path / "prep.h5ad", tmp_path / "model", tmp_path / "out"
    run_cli(["drugseq.py", "prepare", "--h5ad", str(tmp_path / "user.h5ad"), "--out", str(prep), "--data-source", "fixture"], check=True)
    # train and analyse through bin/drugseq.py's own parser, in-process (one interpreter start-up is enough)
    assert study_main("drugseq", ["train", "--prepared", str(prep), "--out", str(model), "--epochs", "6", "--batch-size", "16", "--d-model", "16",
                                  "--nhead", "2", "--num-layers", "1", "--dim-feedforward", "32", "--latent-dim", "8", "--lr", "0.005",
                                  "--use-zscore", "--best-checkpoint", "original", "--threads", "1"]) == 0
    # the original's aliasing: the "best" file holds the last weights
    best, last = torch.load(model / "model_best.pt", weights_only=True), torch.load(model / "model_last.pt", weights_only=True)
    assert all(torch.equal(best[k], last[k]) for k in best)
    scaler = pd.read_csv(model / "gene_scaler.csv")
    split = pd.read_csv(model / "split.csv")
    train_rows = np.isin(data.well_id, split.loc[split.split == "train", "well_id"])
    np.testing.assert_allclose(scaler["mean"], data.expr[train_rows].mean(axis=0), rtol=1e-5, atol=1e-6)

    with pytest.raises(InputError, match=r"gradinput target: expected scores3\[0\]..scores3\[2\]"):
        analyse(prep, model, out, AnalyseParams(gradinput_target="scores3[5]"))
    assert not out.exists()  # checked before any output
    assert study_main("drugseq", ["analyse", "--prepared", str(prep), "--model", str(model), "--outdir", str(out), "--gradinput-target", "logit",
                                  "--dmso-cluster", "C6", "--threads", "1"]) == 0
    info = read_run_info(out / "run_info.json")
    assert info["params"]["gradinput_target"] == "logit" and info["params"]["dmso_cluster"] == "C6"
    lat = pd.read_csv(out / "latent_scores.csv")
    assert set(lat.loc[lat.in_control_centre, "well_id"]) == set(data.well_id[(data.meta_id == "DMSO") & (data.cluster == "C6")])
