"""gpo_vae end to end on the fixture: the trained model recovers the planted truth, outputs and contracts."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_cli
from txrepro.fixtures.gpo_vae import PERTURBED, PLANTED_EDGES
from txrepro.metrics.table import read_metrics
from txrepro.report.build import build_report
from txrepro.report.published import read_published
from txrepro.studies.gpo_vae.config import load_config
from txrepro.studies.gpo_vae.features import load_prepared
from txrepro.studies.gpo_vae.train import EarlyStopping, train_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, request):
    """One `reproduce` of the study on the fixture (test profile, tiny config), inspected by every test.

    Under pytest-xdist the module's tests are spread over workers; a file lock in the session's
    shared temporary folder makes them train once and share the outputs.
    """
    from filelock import FileLock

    from txrepro.studies.base import StudyRun
    from txrepro.studies.gpo_vae.pipeline import reproduce

    root = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # a pytest-xdist worker: share the session's parent folder
        root = root.parent
    out = root / "gpo_vae_shared_run" / "gpo_vae"
    with FileLock(str(root / "gpo_vae_shared_run.lock")):
        if not (out / "run_info.json").exists():
            reproduce(out, profile="test", params={})
    return StudyRun("gpo_vae", out, out / "metrics.tsv", out / "run_info.json", sorted((out / "adamson" / "figures").glob("*.png")))


@pytest.fixture(scope="module")
def metrics(run):
    df = read_metrics(run.metrics)
    return {(r.model, r.split, r.metric): r.value for r in df.itertuples()}


def test_trained_model_ate_correlates_with_the_data(metrics):
    assert metrics[("gpo_vae", "all_cells", "ATE_pearson")] > 0.8
    assert metrics[("gpo_vae", "test_cells", "ATE_pearson")] > 0.7


def test_planted_edges_are_recovered(run):
    edges = pd.read_csv(run.outdir / "adamson" / "grn_edges.tsv", sep="\t")
    assert (edges["probability"] > 0.5).all() and set(edges["source"]) <= set(PERTURBED)
    predicted = {(a, b) for a, b, loop in edges[["source", "target", "self_loop"]].itertuples(index=False) if not loop}
    recovered = predicted & set(PLANTED_EDGES)
    assert len(recovered) >= 4, (predicted, PLANTED_EDGES)
    assert len(recovered) / len(predicted) >= 0.5


def test_causalbench_statistics_on_held_out_cells(metrics):
    # the testable planted edges (P1->P2, P2->P3) are significant; random non-edges rarely are
    assert metrics[("gpo_vae", "test_cells", "true_positives")] > metrics[("gpo_vae", "test_cells", "false_positives")]
    assert metrics[("gpo_vae", "test_cells", "mean_wasserstein")] > metrics[("gpo_vae", "test_cells", "negative_mean_wasserstein")]
    assert metrics[("gpo_vae", "test_cells", "false_omission_rate")] <= 0.15
    assert metrics[("gpo_vae", "test_cells", "false_omission_rate_perturbed_block")] <= 0.15


def test_reference_precision_recall_equal_a_hand_count(run, metrics):
    edges = pd.read_csv(run.outdir / "adamson" / "grn_edges.tsv", sep="\t")
    block = edges[(edges["target_block"] == "perturbed") & ~edges["self_loop"]]
    predicted = set(zip(block["source_id"], block["target_id"]))
    truth = json.loads((run.outdir / "fixture" / "truth.json").read_text())
    perturbed_ids = {truth["gene_ids"][g] for g in PERTURBED}
    pool = set()
    for name in ("biogrid", "corum", "regnetwork", "string"):
        ref = {tuple(e) for e in pickle.loads((run.outdir / "fixture" / "bioeval" / f"{name}.pkl").read_bytes())}
        ref = {(a, b) for a, b in ref if a in perturbed_ids and b in perturbed_ids}
        pool |= ref
        hit = len(predicted & ref)
        assert metrics[("gpo_vae", "learned_grn", f"precision_{name}")] == (hit / len(predicted) if predicted else 0.0)
        assert metrics[("gpo_vae", "learned_grn", f"recall_{name}")] == hit / len(ref)
    assert metrics[("gpo_vae", "learned_grn", "recall_pool")] == len(predicted & pool) / len(pool)


def test_every_published_key_is_computed_and_judged(run, tmp_path):
    pub = read_published()
    pub = pub[(pub["study"] == "gpo_vae") & (pub["dataset"] == "adamson")]
    df = read_metrics(run.metrics)
    keys = set(zip(df["model"], df["split"], df["metric"]))
    for r in pub.itertuples():
        assert (r.model, r.split, r.metric) in keys, r
    assert df["value"].notna().all(), df[df["value"].isna()]
    report = build_report(tmp_path / "report", metrics=[run.metrics], run_infos=[run.run_info], figures=run.figures,
                          selected=["gpo_vae"], html=False)
    s = report.summary[(report.summary["study"] == "gpo_vae") & (report.summary["dataset"] == "adamson")]
    judged = s[s["published"].notna()]
    assert len(judged) == len(pub) and not (judged["verdict"] == "not computed").any()
    assert (s[s["published"].isna()]["verdict"] == "no published value").all()
    assert json.loads(run.run_info.read_text())["data_source"] == "fixture"


def test_figures_are_written(run):
    names = {f.name for f in run.figures}
    # named after the dataset: the three datasets of one run land in one report folder
    assert {"gpo_vae_adamson_training_curve.png", "gpo_vae_adamson_ate_scatter.png", "gpo_vae_adamson_grn_pr_curve.png",
            "gpo_vae_adamson_grn_probabilities.png", "gpo_vae_adamson_edge_wasserstein.png"} <= names
    assert all(f.exists() and f.stat().st_size > 5000 for f in run.figures)


def test_same_seed_same_metrics(run, tmp_path):
    from txrepro.studies.gpo_vae.pipeline import run_evaluate

    again = run_evaluate(run.outdir / "adamson" / "prepared.h5ad", run.outdir / "adamson" / "model.pt", tmp_path / "again", dataset="adamson",
                         reference_networks=str(run.outdir / "fixture" / "bioeval"), seed=0, device="cpu", data_source="fixture")
    a, b = read_metrics(run.metrics), read_metrics(again.metrics)
    pd.testing.assert_frame_equal(a.drop(columns="notes"), b.drop(columns="notes"), check_exact=True)
    ds = load_prepared(run.outdir / "adamson" / "prepared.h5ad", seed=0)
    cfg = load_config("tiny")
    cfg.train.max_epochs = 2
    n1, r1, _ = train_model(ds, cfg, seed=0)
    n2, r2, _ = train_model(ds, cfg, seed=0)
    n3, _, _ = train_model(ds, cfg, seed=1)
    assert r1.best_val_loss == r2.best_val_loss
    for (k, v1), v2 in zip(n1.state_dict().items(), n2.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert not torch.equal(n1.mask_logits, n3.mask_logits)


def test_early_stopping_keeps_a_real_copy_of_the_best_state():
    net = torch.nn.Linear(2, 1)
    stop = EarlyStopping(patience=2)
    assert not stop.update(1.0, 0, net)
    best = net.weight.detach().clone()
    with torch.no_grad():
        net.weight += 5.0  # later optimiser steps change the live weights ...
    assert not stop.update(1.5, 1, net)
    assert stop.update(1.2, 2, net)  # two epochs without improvement: stop
    assert stop.best_epoch == 0 and torch.equal(stop.best_state["weight"], best)  # ... not the saved best state


def test_full_profile_without_input_reports_not_computed(tmp_path):
    from txrepro.studies.gpo_vae.pipeline import reproduce

    r = reproduce(tmp_path / "gpo_vae", profile="full", params={})
    df = read_metrics(r.metrics)
    assert len(df) == len(read_published().query("study == 'gpo_vae'"))
    assert df["notes"].str.startswith("not computed: data not provided").all()


def test_cli_steps_as_nextflow_calls_them(run, tmp_path):
    """train and evaluate through bin/gpo_vae.py (prepare's CLI is exercised by the bad-input tests)."""
    fx = run.outdir / "fixture"
    prepared, ckpt, ev = run.outdir / "adamson" / "prepared.h5ad", tmp_path / "model.pt", tmp_path / "eval"
    run_cli(["gpo_vae.py", "train", "--prepared", str(prepared), "--out", str(ckpt), "--config", "tiny", "--max-epochs", "2",
             "--figures-dir", str(tmp_path / "figures"), "--threads", "1"], check=True)
    assert (tmp_path / "model_history.tsv").exists() and (tmp_path / "figures" / "gpo_vae_adamson_training_curve.png").exists()
    run_cli(["gpo_vae.py", "evaluate", "--prepared", str(prepared), "--checkpoint", str(ckpt), "--outdir", str(ev),
             "--reference-networks", str(fx / "bioeval"), "--data-source", "fixture", "--ate-particles", "50", "--threads", "1"], check=True)
    df = read_metrics(ev / "metrics.tsv")
    assert ("gpo_vae", "all_cells", "ATE_pearson") in set(zip(df["model"], df["split"], df["metric"]))
    assert (ev / "gpo_vae_metrics_mqc.tsv").exists() and (ev / "run_info.json").exists() and (ev / "grn_edges.tsv").exists()
    assert json.loads((ev / "run_info.json").read_text())["data_source"] == "fixture"
    assert np.isfinite(df["value"]).all()
