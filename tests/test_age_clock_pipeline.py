"""age_clock end to end on the fixture: both protocols, oracles, planted genes, determinism, bad inputs."""

from __future__ import annotations

import json
import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import roc_auc_score

from filelock import FileLock

from conftest import assert_one_line_error, run_cli
from txrepro.metrics.table import read_metrics
from txrepro.report.published import read_published
from txrepro.studies.age_clock.evaluate import classification_metrics, tissue_slug
from txrepro.studies.age_clock.pipeline import reproduce
from txrepro.studies.age_clock.statistics import ANTI, NONE, PRO
from txrepro.studies.base import StudyRun

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One reproduce() on the fixture, shared by pytest-xdist workers (computed once, under a lock)."""
    torch.set_num_threads(1)
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = root / "age_clock_reproduce"
    with FileLock(str(root / "age_clock_reproduce.lock")):
        if not (out / "metrics.tsv").is_file():
            return reproduce(out, profile="test", params={})
    figures = sorted(p for p in out.glob("*/*/age_clock_*.png"))
    return StudyRun("age_clock", out, out / "metrics.tsv", out / "run_info.json", figures)


@pytest.fixture(scope="module")
def metrics(run):
    return read_metrics(run.metrics)


@pytest.fixture(scope="module")
def truth(run):
    return json.loads((run.outdir / "fixture" / "truth.json").read_text())["genes"]


def _value(metrics, model, metric):
    hit = metrics[(metrics["model"] == model) & (metrics["metric"] == metric)]
    assert len(hit) == 1, (model, metric)
    return float(hit["value"].iloc[0])


def test_both_protocols_compute_every_published_number(run, metrics):
    pub = read_published()
    pub = pub[pub["study"] == "age_clock"]
    keys = ["study", "dataset", "model", "split", "metric"]
    merged = pub.merge(metrics, on=keys, how="left")
    assert merged["value"].notna().all(), merged[merged["value"].isna()][keys]
    for model in ("scgpt_repository", "scgpt_article"):
        assert _value(metrics, model, "roc_auc") > 0.9  # planted truth: 4 old and 4 young genes x6
        assert _value(metrics, model, "roc_auc_mean_tissues") > 0.9
    assert json.loads(run.run_info.read_text())["data_source"] == "fixture"
    names = sorted(p.name for p in run.figures)
    assert names == sorted(f"age_clock_{p}_{w}.png" for p in ("repository", "article") for w in ("roc", "tissue_auc", "volcano", "stability"))
    assert all(p.stat().st_size > 10_000 for p in run.figures)
    assert metrics["notes"].str.contains("positive class old-age").any()


def test_metrics_equal_sklearn_on_the_predictions(run, metrics):
    for protocol in ("repository", "article"):
        preds = pd.read_csv(run.outdir / protocol / "evaluate" / "predictions.tsv", sep="\t")
        assert set(preds["model"]) == {f"scgpt_{protocol}", f"logreg_l1_{protocol}"}
        for model, sub in preds.groupby("model"):
            y, p = sub["label"].to_numpy(), sub["p_old"].to_numpy()
            assert _value(metrics, model, "roc_auc") == roc_auc_score(y, p)
            assert _value(metrics, model, "accuracy") == float(((p >= 0.5) == y).mean())
            aucs = [roc_auc_score(t["label"], t["p_old"]) for _, t in sub.groupby("tissue")]
            assert _value(metrics, model, "roc_auc_mean_tissues") == pytest.approx(np.mean(aucs), abs=1e-15)
            for tissue, t in sub.groupby("tissue"):
                for name, value in classification_metrics(t["label"].to_numpy(), t["p_old"].to_numpy()).items():
                    assert _value(metrics, model, f"{name}_tissue_{tissue_slug(tissue)}") == value
        test = ad.read_h5ad(run.outdir / protocol / "prepared.h5ad").obs
        assert len(preds) == 2 * int((test["split"] == "test").sum())


def test_perturbation_recovers_planted_genes(run, truth):
    for protocol in ("repository", "article"):
        genes = pd.read_csv(run.outdir / protocol / "statistics" / "perturbation_genes.tsv", sep="\t").set_index("gene")
        old, young, null = genes.loc[truth["old"]], genes.loc[truth["young"]], genes.loc[truth["null"]]
        assert (old["call"] == PRO).sum() >= 1, protocol
        assert not (old["call"] == ANTI).any() and not (young["call"] == PRO).any(), protocol
        assert old["log2_oe_over_kd"].mean() > 0 > young["log2_oe_over_kd"].mean(), protocol
        assert (null["call"] == NONE).mean() >= 0.9, protocol
        assert set(genes.index) == set(truth["old"] + truth["young"] + truth["null"])  # QC, rare and unmapped genes gone
        known = genes["in_reference"]
        assert known.loc[truth["old"][:2]].all() and not known.loc[truth["null"][5:]].any()
    article = pd.read_csv(run.outdir / "article" / "statistics" / "perturbation_genes.tsv", sep="\t").set_index("gene")
    assert (article.loc[truth["young"], "call"] == ANTI).sum() >= 1
    table = pd.read_parquet(run.outdir / "repository" / "perturbation.parquet")
    assert table["run"].nunique() == 2 and table.groupby("run").size().eq(120).all()


def test_repository_fine_tunes_the_encoder_and_article_freezes_it(run):
    from txrepro.models.scgpt_checkpoint import load_checkpoint_dir, rename_fused_attention_keys

    pre, _ = rename_fused_attention_keys(load_checkpoint_dir(run.outdir / "fixture" / "scgpt_tiny").state_dict)
    for protocol, frozen in (("repository", False), ("article", True)):
        state = load_checkpoint_dir(run.outdir / protocol / "model").state_dict
        enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.transformer_encoder.")}
        same = [torch.equal(v, pre[k]) for k, v in enc.items()]
        assert all(same) if frozen else not any(same), protocol
        log = pd.read_csv(run.outdir / protocol / "model" / "training_log.tsv", sep="\t")
        assert log["best"].sum() == 1 and log.loc[log["best"], "select_loss"].iloc[0] == log["select_loss"].min()


def test_same_inputs_and_seed_same_metrics_bit_for_bit(run, metrics, tmp_path):
    fx = run.outdir / "fixture"
    params = {
        "age_clock_input": str(fx / "age_clock_fixture.h5ad"),
        "age_clock_checkpoint": str(fx / "scgpt_tiny"),
        "age_clock_reference_genes": str(fx / "ageing_genes.tsv"),
        "age_clock_scale": "tiny",
    }
    again = read_metrics(reproduce(tmp_path, profile="test", params=params).metrics)
    cols = ["model", "metric", "value", "n"]
    pd.testing.assert_frame_equal(metrics[cols], again[cols], check_exact=True)
    assert json.loads((tmp_path / "run_info.json").read_text())["data_source"] == "provided"


def test_unselected_protocol_is_reported_not_computed(run, tmp_path):
    from txrepro.studies.age_clock.pipeline import collect

    out = collect(tmp_path, [run.outdir / "repository" / "evaluate" / "metrics_evaluate.tsv"], data_source="fixture", protocols=["repository"])
    m = read_metrics(out.metrics)
    article = m[m["model"].str.endswith("_article")]
    assert len(article) == 2 and article["value"].isna().all() and article["notes"].str.contains("protocol not selected").all()
    assert m.loc[m["model"] == "scgpt_repository", "value"].notna().all()


def test_batched_sweep_equals_the_original_approach(run):
    from dataclasses import replace

    from txrepro.studies.age_clock.data import read_prepared
    from txrepro.studies.age_clock.model import load_classifier
    from txrepro.studies.age_clock.perturb import batched_sweep, reference_sweep

    adata, _, _ = read_prepared(run.outdir / "repository" / "prepared.h5ad")
    model, vocab, cfg, _ = load_classifier(run.outdir / "repository" / "model")
    counts = sp.csr_matrix(adata.X[np.flatnonzero(adata.obs["split"].to_numpy() == "test")[::16]])
    ids, genes = adata.var["vocab_id"].to_numpy(), list(adata.var_names)
    app = replace(cfg, perturb_mode="append")
    ours = batched_sweep(model, counts, ids, vocab["<cls>"], app)
    ref = reference_sweep(model, counts, genes, vocab, app)
    for arm in ("p_high", "p_low", "p_base"):
        assert np.abs(getattr(ours, arm) - getattr(ref, arm)).max() < 1e-6, arm  # exact up to float32 rounding
    rep = replace(cfg, perturb_mode="replace")
    ours = batched_sweep(model, counts, ids, vocab["<cls>"], rep)
    ref = reference_sweep(model, counts, genes, vocab, rep)
    zero = counts.toarray() == 0
    assert np.array_equal(ours.p_low[zero], np.broadcast_to(ours.p_base[:, None], zero.shape)[zero])  # KO of an undetected gene is a no-op
    assert ours.n_forward < ours.n_sequences
    effect = lambda r: (r.p_high - r.p_low).mean(axis=0)  # noqa: E731
    assert np.corrcoef(effect(ours), effect(ref))[0, 1] > 0.9  # re-binning every cell moves other genes' bins a little


def test_truncation_follows_scgpt_overflow_rule():
    from txrepro.studies.age_clock.perturb import _truncate

    src = torch.arange(10).repeat(4, 1)
    vals = src.float() * 10
    s, v = _truncate(src, vals, 8, np.random.default_rng(0))
    assert s.shape == (4, 8) and (s[:, 0] == 0).all() and torch.equal(v, s.float() * 10)
    assert all(len(set(row.tolist())) == 8 for row in s)


# --- bad inputs: one line naming the file and the field --------------------------------------------


@pytest.fixture(scope="module")
def bad_inputs(run, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    good = ad.read_h5ad(run.outdir / "fixture" / "age_clock_fixture.h5ad")
    out = {}
    ens = good.copy()
    ens.var_names = [f"ENSG{i:011d}" for i in range(ens.n_vars)]
    out["ensembl"] = ens
    ids = good.copy()
    ids.obs["age"] = (ids.obs["age"] >= 60).astype(int)
    out["age_ids"] = ids
    out["one_class"] = good[~((good.obs["tissue"] == "Lung") & (good.obs["age"] >= 60))].copy()
    split = good.copy()
    split.obs["split"] = np.where(np.arange(split.n_obs) % 2 == 0, "train", "test")
    out["leak"] = split
    paths = {}
    for name, a in out.items():
        paths[name] = d / f"{name}.h5ad"
        a.write_h5ad(paths[name])
    return paths


@pytest.mark.parametrize(
    ("case", "extra", "fragments"),
    [
        ("ensembl", [], ["ensembl.h5ad", "var['index'] gene symbols", "HGNC gene symbols", "Ensembl ids"]),
        ("age_ids", [], ["age_ids.h5ad", "obs['age']", "0/1 class ids"]),
        ("one_class", [], ["one_class.h5ad", "tissue 'Lung'", "no old-age cells"]),
        ("leak", ["--split_column", "split"], ["leak.h5ad", "obs['split']", "in both train and test"]),
        ("vocab", ["--min_vocab_fraction", "0.99"], ["age_clock_fixture.h5ad", "at least 99%", "44 of 45", "NOTINVOCAB1"]),
    ],
)
def test_bad_inputs_stop_with_one_line(run, bad_inputs, tmp_path, case, extra, fragments):
    h5ad = bad_inputs.get(case, run.outdir / "fixture" / "age_clock_fixture.h5ad")
    out = tmp_path / "prepared.h5ad"
    res = run_cli(["age_clock.py", "prepare", "--input", str(h5ad), "--checkpoint", str(run.outdir / "fixture" / "scgpt_tiny"), "--out", str(out), "--scale", "tiny", *extra])
    assert_one_line_error(res, *fragments)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_manifest_checksums_guard_the_pretrained_checkpoint(run, tmp_path):
    """With verification on, a checkpoint that is not the manifest's scGPT whole-human stops before training."""
    from txrepro.errors import ChecksumError
    from txrepro.studies.age_clock.train import train_scgpt

    with pytest.raises(ChecksumError, match=r"scgpt_tiny/(args\.json|best_model\.pt|vocab\.json): sha256 checksum"):
        train_scgpt(run.outdir / "repository" / "prepared.h5ad", run.outdir / "fixture" / "scgpt_tiny", tmp_path / "model", verify_manifest=True)
    assert not (tmp_path / "model").exists()
