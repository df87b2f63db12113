"""The real-data path: params files, parameter names in errors, dataset names, the support set, comparability.

Every case goes through what a user runs (`txrepro reproduce vcc --params-file`, `vcc.py <step>`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from txrepro.fixtures.vcc import make_counts, write_fixture
from txrepro.io.manifest import read_manifest
from txrepro.metrics.table import read_metrics
from txrepro.studies.vcc.data import InputSummary, read_gene_list
from txrepro.studies.vcc.params import DATASET, DataParams, default_test_genes_path

CONTROL = "non-targeting"


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    d = tmp_path_factory.mktemp("vcc_real_path")
    return d, write_fixture(d / "fx", seed=0)


def _params(path, **kv) -> str:
    import yaml

    path.write_text(yaml.safe_dump(kv))
    return str(path)


def _reproduce(params_file, outdir, *extra):
    return run_cli(["reproduce", "vcc", "--profile", "full", "--params-file", params_file, "--outdir", str(outdir), *extra])


@pytest.mark.slow
def test_empty_batch_col_skips_the_check_and_user_data_gets_its_own_dataset_name(fx, tmp_path):
    """A params-file `vcc_batch_col: ''` skips the batch column (docs and schema say so); the rows are
    named after the input and never set beside the published H1 numbers."""
    _, paths = fx
    a, _, _ = make_counts()
    del a.obs["batch"]
    a.write_h5ad(tmp_path / "my screen.h5ad")
    pf = _params(tmp_path / "p.yml", vcc_input=str(tmp_path / "my screen.h5ad"), vcc_test_genes=str(paths["test_genes"]),
                 vcc_batch_col="", vcc_models="cell_mean,ridge")
    res = _reproduce(pf, tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    m = read_metrics(tmp_path / "out" / "vcc" / "metrics.tsv")
    assert set(m["dataset"]) == {"vcc_user_my_screen"}
    ridge = m.set_index(["model", "metric"])
    assert ridge.loc[("ridge", "DES"), "notes"].count("one-hot target_gene / guide_id (") == 1  # no batch column in the design
    pub = ridge.loc[("ridge", "overall_score_published_baseline")]
    assert np.isnan(pub["value"]) and "published dataset (vcc_h1_crispri) only" in pub["notes"]
    summary = pd.read_csv(tmp_path / "out" / "report" / "reproduction_summary.tsv", sep="\t", keep_default_na=False)
    vcc_pub = summary[(summary["study"] == "vcc") & (summary["dataset"] == DATASET)]
    assert len(vcc_pub) == 28 and set(vcc_pub["verdict"]) == {"not computed"}
    assert vcc_pub["notes"].str.contains("dataset vcc_h1_crispri not in this run").all()
    info = json.loads((tmp_path / "out" / "vcc" / "prepared" / "split.json").read_text())
    assert info["batch_col"] == "" and info["published_dataset"] is False


def test_published_dataset_name_is_refused_for_other_data(fx, tmp_path):
    _, paths = fx
    pf = _params(tmp_path / "p.yml", vcc_input=str(paths["input"]), vcc_test_genes=str(paths["test_genes"]), vcc_dataset=DATASET,
                 vcc_models="cell_mean")
    res = _reproduce(pf, tmp_path / "out", "--no-report")
    assert_one_line_error(res, "vcc_dataset", "only for the published VCC training file", "680 cells x 60 genes")
    assert not (tmp_path / "out" / "vcc" / "prepared").exists()


def test_the_published_file_is_recognised_by_its_shape_and_split(tmp_path):
    """No checksum is published for adata_Training.h5ad: 221,273 x 18,080, 150 perturbations and the
    published 30 test genes make it the published dataset; anything else is the user's."""
    from txrepro.studies.vcc.data import resolve_dataset

    test = read_gene_list(default_test_genes_path())
    perts = sorted([*test, *[f"G{i}" for i in range(120)]])
    published = InputSummary(tmp_path / "adata_Training.h5ad", 221_273, 18_080, perts, np.array([]))
    assert resolve_dataset(None, published, DataParams(), test) == (DATASET, True)
    assert resolve_dataset("h1_rerun", published, DataParams(), test) == ("h1_rerun", False)
    sub = InputSummary(tmp_path / "adata_Training.sub.h5ad", 50_000, 18_080, perts, np.array([]))
    assert resolve_dataset(None, sub, DataParams(), test) == ("vcc_user_adata_Training.sub", False)
    assert resolve_dataset(None, published, DataParams(), test[:-1]) == ("vcc_user_adata_Training", False)  # another split


def test_a_bad_features_file_stops_before_prepare_and_names_the_parameter(fx, tmp_path):
    _, paths = fx
    feats = torch.load(paths["features"], weights_only=True)
    del feats["T1"]
    torch.save(feats, tmp_path / "esm2.pt")
    pf = _params(tmp_path / "p.yml", vcc_input=str(paths["input"]), vcc_test_genes=str(paths["test_genes"]),
                 vcc_features=str(tmp_path / "esm2.pt"), vcc_models="cell_mean,state")
    res = _reproduce(pf, tmp_path / "out", "--no-report")
    assert_one_line_error(res, "esm2.pt", "vcc_features", "missing 1: T1")
    assert not (tmp_path / "out" / "vcc" / "prepared").exists()  # checked before the long passes


def test_step_options_in_errors_name_the_params_file_parameter(fx, tmp_path):
    d, _ = fx
    res = run_cli(["vcc.py", "predict", "--prepared", str(tmp_path / "nope"), "--model", "lasso", "--outdir", str(tmp_path / "p")])
    assert_one_line_error(res, "--model", "vcc_models", "'lasso'")
    res = run_cli(["vcc.py", "state-train", "--prepared", str(tmp_path / "nope"), "--outdir", str(tmp_path / "s"), "--state-set", "max_steps"])
    assert_one_line_error(res, "--state-set", "vcc_state_<field>", "key=value")


def test_threads_help_says_what_it_sets_and_state_notes_name_the_features_file(fx, tmp_path):
    for step, what in (("evaluate", "DE tests"), ("reference", "DE tests"), ("score", "DE tests"), ("predict", "random forest")):
        out = run_cli(["vcc.py", step, "--help"], check=True).stdout
        text = " ".join(out.split())
        assert "CPU threads for" in text and what in text and "vcc_threads" in text, step
    from txrepro.studies.vcc.data import Prepared
    from txrepro.studies.vcc.preprocess import prepare
    from txrepro.studies.vcc.state import _check_features

    d, paths = fx
    prepare(paths["input"], tmp_path / "prep", dp=DataParams(n_hvg=20), test_genes_file=paths["test_genes"])
    shutil.copy(paths["features"], tmp_path / "gene_vectors.pt")
    note = _check_features(Prepared(tmp_path / "prep"), tmp_path / "gene_vectors.pt")
    assert "gene_vectors.pt" in note and "ESM2" not in note
    assert "untrained one-hot slots" in _check_features(Prepared(tmp_path / "prep"), None)


def _fake_support_set(path, features_file) -> str:
    with zipfile.ZipFile(path, "w") as z:
        z.write(features_file, "competition_support_set/ESM2_pert_features.pt")
        z.writestr("competition_support_set/starter.toml", "[datasets]\n")
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_support_set_checksum_is_enforced_when_the_zip_is_read(fx, tmp_path):
    _, paths = fx
    _fake_support_set(tmp_path / "competition_support_set.zip", paths["features"])
    res = run_cli(["vcc.py", "support-set", "--zip", str(tmp_path / "competition_support_set.zip"), "--outdir", str(tmp_path / "o")])
    line = assert_one_line_error(res, "competition_support_set.zip", "sha256 checksum")
    assert "f1d5fd56a2eee240e5585fac52bb75b0b830a7be6a5f6de1bf773bff4f507f7c" in line  # the manifest's row, read
    assert not (tmp_path / "o" / "ESM2_pert_features.pt").exists()


def test_support_set_with_the_manifest_checksum_gives_its_features(fx, tmp_path):
    from txrepro.studies.vcc.support_set import support_set_features

    _, paths = fx
    digest = _fake_support_set(tmp_path / "css.zip", paths["features"])
    manifest = read_manifest()
    manifest.loc[(manifest["study"] == "vcc") & (manifest["id"] == "competition_support_set"), "checksum"] = digest
    manifest.to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    out = support_set_features(tmp_path / "css.zip", tmp_path / "o", manifest=tmp_path / "manifest.tsv")
    assert out.read_bytes() == paths["features"].read_bytes()
    pf = _params(tmp_path / "p.yml", vcc_input=str(paths["input"]), vcc_features=str(paths["features"]), vcc_support_set=str(tmp_path / "css.zip"))
    assert_one_line_error(_reproduce(pf, tmp_path / "out", "--no-report"), "vcc_features / vcc_support_set", "both")


def test_manifest_says_the_training_file_has_no_published_checksum():
    m = read_manifest()
    row = m[(m["study"] == "vcc") & (m["id"] == "training_h5ad")].iloc[0]
    assert row["checksum"] == "" and "no checksum is published" in row["notes"]
    css = m[(m["study"] == "vcc") & (m["id"] == "competition_support_set")].iloc[0]
    assert css["checksum"].startswith("sha256:") and "ESM2_pert_features.pt" in css["notes"]


@pytest.mark.slow
def test_state_rows_without_features_are_not_comparable(fx, tmp_path):
    """STATE trained without perturbation features: its rows are relabelled `<model>_not_comparable`
    and the published STATE rows say why they were not computed."""
    from txrepro.studies.vcc.evaluate import evaluate, reference
    from txrepro.studies.vcc.models import predict
    from txrepro.studies.vcc.preprocess import prepare
    from txrepro.studies.vcc.summarise import summarise

    _, paths = fx
    prepare(paths["input"], tmp_path / "prep", dp=DataParams(n_hvg=20), test_genes_file=paths["test_genes"], fixture=True)
    reference(tmp_path / "prep", tmp_path / "ref")
    h5, js = predict(tmp_path / "prep", "cell_mean", tmp_path / "pred")
    evaluate(tmp_path / "prep", tmp_path / "ref", h5, "cell_mean", tmp_path / "ev")
    # a STATE-like prediction (the cell-mean cells) whose model info says it had no features
    shutil.copy(h5, tmp_path / "pred" / "state_pred.h5ad")
    info = json.loads(js.read_text()) | {"model": "state", "not_comparable": "trained without perturbation features (test)"}
    (tmp_path / "pred" / "state_model.json").write_text(json.dumps(info))
    evaluate(tmp_path / "prep", tmp_path / "ref", tmp_path / "pred" / "state_pred.h5ad", "state", tmp_path / "ev")
    run = summarise([tmp_path / "ev"], tmp_path / "sum", data_source="fixture", selected_models=["cell_mean", "state"])
    m = read_metrics(run.metrics).set_index(["model", "metric"])
    assert m.loc[("state_not_comparable", "PDS"), "notes"].startswith("project evaluator (my_cell_eval3.py definitions); NOT COMPARABLE with the published row (state)")
    assert np.isnan(m.loc[("state", "PDS"), "value"]) and "under state_not_comparable" in m.loc[("state", "PDS"), "notes"]
    assert m.loc[("cell_mean", "overall_score"), "value"] == 0.0 and set(m.reset_index()["dataset"]) == {DATASET}
