"""gpo_vae inputs: checks before any work (checksums, summary statistics, reference networks), the
Replogle file conventions, and the paper's three datasets in one run."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from conftest import assert_one_line_error, run_cli
from txrepro.errors import ChecksumError, InputError
from txrepro.fixtures.gpo_vae import PERTURBED, write_fixture
from txrepro.io import checksum as checksum_mod
from txrepro.io.manifest import MANIFEST_COLUMNS, read_manifest
from txrepro.metrics.table import read_metrics
from txrepro.studies.gpo_vae.config import load_config
from txrepro.studies.gpo_vae.data import STATS_COLUMNS, prepare, read_summary_stats, strong_perturbations
from txrepro.studies.gpo_vae.inputs import verify_files


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("gpo_vae_inputs_fx"))


def _md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


# --- summary statistics ----------------------------------------------------------------------------


def test_text_in_a_summary_statistics_column_names_file_column_and_row(fx, tmp_path):
    """Was a TypeError traceback from the `>` comparison in strong_perturbations."""
    stats = pd.read_csv(fx["summary_stats"])
    stats[STATS_COLUMNS[2]] = stats[STATS_COLUMNS[2]].astype(object)
    stats.loc[2, STATS_COLUMNS[2]] = "strong"
    stats.loc[3, STATS_COLUMNS[2]] = ""
    bad = tmp_path / "stats_text.csv"
    stats.to_csv(bad, index=False)
    res = run_cli(["gpo_vae.py", "prepare", "--input", str(fx["raw_input"]), "--out", str(tmp_path / "p.h5ad"), "--config", "tiny",
                   "--summary-stats", str(bad)])
    assert_one_line_error(res, "stats_text.csv", "column 'percent knockdown'", "'strong'", "row 4", "2 such rows")
    assert not (tmp_path / "p.h5ad").exists()

    book = tmp_path / "summary_stats.xlsx"
    with pd.ExcelWriter(book) as writer:
        stats.to_excel(writer, sheet_name="TabB_K562_day6_summary_stat", index=False)
    with pytest.raises(InputError, match=r"TabB_K562_day6_summary_stat.*percent knockdown.*'strong' on row 4"):
        read_summary_stats(book, "TabB_K562_day6_summary_stat")
    stats.loc[2, STATS_COLUMNS[2]] = -0.5
    stats.to_csv(bad, index=False)
    with pytest.raises(InputError, match="an empty cell on row 5"):
        read_summary_stats(bad)


def test_replogle_perturbation_names_match_by_their_gene_field(fx, tmp_path):
    """The Replogle sheets name perturbations `<n>_<GENE>_<guides>_<id>`; the RPE1/K562 modules keep
    `split('_')[1]`. Matching the whole string selected no perturbation at all."""
    cfg = load_config("tiny").data
    stats = pd.read_csv(fx["summary_stats"])
    plain = strong_perturbations(stats, cfg)
    stats["genetic perturbation"] = [f"{i}_{g}_P1P2_ENSG{i:011d}" for i, g in enumerate(stats["genetic perturbation"])]
    assert plain <= strong_perturbations(stats, cfg)
    replogle = tmp_path / "replogle_style.csv"
    stats.to_csv(replogle, index=False)
    a = prepare(fx["raw_input"], tmp_path / "a.h5ad", cfg, summary_stats=fx["summary_stats"])
    b = prepare(fx["raw_input"], tmp_path / "b.h5ad", cfg, summary_stats=replogle)
    assert (a.n_cells, a.n_perturbations) == (b.n_cells, b.n_perturbations) and b.n_perturbations == len(PERTURBED)


def test_var_indexed_by_gene_id_uses_gene_name_symbols(fx, tmp_path):
    """Replogle's raw h5ads index var by Ensembl id with symbols in var['gene_name'] (the original
    switches to symbols in get_qc_annotation). Before, every perturbed gene was 'missing from var'."""
    raw = ad.read_h5ad(fx["raw_input"])
    symbols = list(raw.var_names)
    symbols[-1] = symbols[-2]  # repeated symbols exist in real annotations: made unique, as the original
    raw.var = pd.DataFrame({"gene_name": symbols}, index=[f"ENSG{i:011d}" for i in range(raw.n_vars)])
    path = tmp_path / "ids.h5ad"
    raw.write_h5ad(path)
    report = prepare(path, tmp_path / "p.h5ad", load_config("tiny").data, summary_stats=fx["summary_stats"])
    out = ad.read_h5ad(tmp_path / "p.h5ad")
    assert report.n_perturbations == len(PERTURBED) and set(PERTURBED) <= set(out.var_names)
    assert out.var_names.is_unique and out.var["gene_id"].iloc[0] == "ENSG00000000000"
    assert out.var_names[-1] == symbols[-2] + "-1"


# --- reference networks ----------------------------------------------------------------------------


def test_bad_reference_networks_stop_prepare_before_any_work(fx, tmp_path):
    """Before, only evaluate read them: after the whole training."""
    res = run_cli(["gpo_vae.py", "prepare", "--input", str(fx["input"]), "--out", str(tmp_path / "p.h5ad"), "--config", "tiny",
                   "--reference-networks", str(tmp_path / "no_such_folder")])
    assert_one_line_error(res, "no_such_folder", "reference networks")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    pd.DataFrame({"source": ["MOUSE1"], "target": ["MOUSE2"]}).to_csv(wrong / "string.tsv", sep="\t", index=False)
    res = run_cli(["gpo_vae.py", "prepare", "--input", str(fx["input"]), "--out", str(tmp_path / "p.h5ad"), "--config", "tiny",
                   "--reference-networks", str(wrong)])
    assert_one_line_error(res, "string.tsv", "edge ids", "MOUSE1")
    assert not (tmp_path / "p.h5ad").exists()


def test_reproduce_refuses_bad_reference_networks_before_training(fx, tmp_path, monkeypatch):
    from txrepro.studies.gpo_vae import pipeline

    def no_work(*a, **k):
        raise AssertionError("work started before the inputs were checked")

    monkeypatch.setattr(pipeline, "run_prepare", no_work)
    monkeypatch.setattr(pipeline, "run_train", no_work)
    with pytest.raises(InputError, match="reference networks"):
        pipeline.reproduce(tmp_path / "gpo_vae", profile="full", params={
            "gpo_vae_adamson_input": str(fx["input"]), "gpo_vae_config": "tiny",
            "gpo_vae_reference_networks": str(tmp_path / "missing_bioeval")})


# --- checksums -------------------------------------------------------------------------------------


def _fake_manifest(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "manifest.tsv"
    pd.DataFrame([{c: r.get(c, "") for c in MANIFEST_COLUMNS} for r in rows], columns=list(MANIFEST_COLUMNS)).to_csv(path, sep="\t", index=False)
    return path


def test_manifest_checksum_is_enforced_by_file_name(tmp_path):
    good = tmp_path / "K562_small.h5ad"
    good.write_bytes(b"real bytes" * 1000)
    row = {"study": "gpo_vae", "id": "k562_raw", "file": good.name, "size_bytes": str(good.stat().st_size),
           "checksum": _md5(good), "checksum_origin": "third-party"}
    manifest = _fake_manifest(tmp_path, [row])
    done = verify_files([("gpo_vae_k562_input", good, None)], manifest=manifest)
    assert done[0]["checksum"] == _md5(good) and "k562_raw" in done[0]["source"]
    bad = tmp_path / "other" / good.name
    bad.parent.mkdir()
    bad.write_bytes(b"Real bytes" * 1000)  # same size, one byte differs
    with pytest.raises(ChecksumError, match=r"other/K562_small.h5ad: md5 checksum: expected .*k562_raw, third-party"):
        verify_files([("gpo_vae_k562_input", bad, None)], manifest=manifest)
    short = tmp_path / "short" / good.name
    short.parent.mkdir()
    short.write_bytes(b"real bytes")
    with pytest.raises(InputError, match="size: expected 10,000 bytes"):
        verify_files([("gpo_vae_k562_input", short, None)], manifest=manifest)
    verify_files([("gpo_vae_k562_input", bad, None)], manifest=manifest, use_manifest=False)  # opt-out: not checked


def test_user_checksum_for_a_file_the_manifest_does_not_know(tmp_path):
    f = tmp_path / "mine.h5ad"
    f.write_bytes(b"x" * 100)
    verify_files([("gpo_vae_input", f, _md5(f))])
    with pytest.raises(ChecksumError, match="mine.h5ad: md5 checksum"):
        verify_files([("gpo_vae_input", f, "md5:" + "0" * 32)])
    with pytest.raises(InputError, match="gpo_vae_input_checksum"):
        verify_files([("gpo_vae_input", f, "crc32:abc")])


def test_every_gpo_vae_checksum_row_of_the_manifest_is_read(tmp_path):
    """No dead row: a file named like each checksummed manifest row is checked against that row."""
    rows = read_manifest()
    rows = rows[(rows["study"] == "gpo_vae") & (rows["checksum"] != "")]
    assert set(rows["id"]) >= {"replogle_k562_raw", "replogle_rpe1_raw"}
    for r in rows.itertuples(index=False):
        # by file name, and by the URL's last segment (the name Nextflow stages a remote file under)
        for name in (r.file, r.url.rsplit("/", 1)[-1]):
            f = tmp_path / name
            f.write_bytes(b"not the published file")
            with pytest.raises(InputError, match=rf"{name}: size: expected .*row {r.id}"):
                verify_files([("gpo_vae_input", f, None)])


def test_a_file_is_hashed_once_per_run_with_progress(tmp_path, monkeypatch, caplog):
    f = tmp_path / "big.h5ad"
    f.write_bytes(np.random.default_rng(0).bytes(3 << 22))
    calls = []
    real_new = hashlib.new
    monkeypatch.setattr(checksum_mod.hashlib, "new", lambda *a: calls.append(a) or real_new(*a))
    monkeypatch.setattr(checksum_mod, "PROGRESS_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="txrepro.io.checksum"):
        for _ in range(3):  # e.g. K562 and RPE1 share summary_stats.xlsx
            verify_files([("gpo_vae_input", f, _md5(f))])
    assert len(calls) == 1
    assert any("md5 of big.h5ad: 33%" in m for m in caplog.messages), caplog.messages


def test_prepare_cli_checks_the_checksum_before_reading(fx, tmp_path):
    res = run_cli(["gpo_vae.py", "prepare", "--input", str(fx["input"]), "--out", str(tmp_path / "p.h5ad"), "--config", "tiny",
                   "--input-checksum", "md5:" + "0" * 32])
    assert_one_line_error(res, Path(fx["input"]).name, "md5 checksum", "the checksum given for --input")
    assert not (tmp_path / "p.h5ad").exists()


# --- the paper's three datasets in one run ---------------------------------------------------------


def test_reproduce_checks_every_dataset_before_the_first_starts(fx, tmp_path):
    with pytest.raises(ChecksumError):
        from txrepro.studies.gpo_vae.pipeline import reproduce

        reproduce(tmp_path / "gpo_vae", profile="full", params={
            "gpo_vae_rpe1_input": str(fx["input"]), "gpo_vae_adamson_input": str(fx["input"]),
            "gpo_vae_adamson_input_checksum": "md5:" + "0" * 32, "gpo_vae_config": "tiny"})
    assert not any((tmp_path / "gpo_vae").rglob("prepared.h5ad"))


def test_single_input_and_per_dataset_input_for_one_dataset_conflict(fx, tmp_path):
    from txrepro.studies.gpo_vae.pipeline import reproduce

    with pytest.raises(InputError, match="not both"):
        reproduce(tmp_path / "g", profile="full", params={"gpo_vae_input": str(fx["input"]), "gpo_vae_dataset": "adamson",
                                                          "gpo_vae_adamson_input": str(fx["input"])})


@pytest.mark.slow
def test_two_datasets_in_one_run_and_the_third_not_provided(fx, tmp_path):
    """K562 and Adamson given (the fixture stands in for both), RPE1 not: its published numbers say
    `not computed: data not provided`, and every dataset has its own outputs and figure names."""
    from txrepro.studies.gpo_vae.pipeline import reproduce

    run = reproduce(tmp_path / "gpo_vae", profile="full", params={
        "gpo_vae_k562_input": str(fx["input"]), "gpo_vae_adamson_input": str(fx["input"]),
        "gpo_vae_input_checksum": None, "gpo_vae_adamson_input_checksum": _md5(Path(fx["input"])),
        "gpo_vae_reference_networks": str(fx["reference_networks"]), "gpo_vae_config": "tiny", "gpo_vae_max_epochs": 5,
        "gpo_vae_ate_particles": 50})
    df = read_metrics(run.metrics)
    for ds in ("replogle_k562", "adamson"):
        sub = df[df["dataset"] == ds]
        assert sub[sub["metric"] == "ATE_pearson"]["value"].notna().all() and len(sub) > 20
        assert (run.outdir / ds / "grn_edges.tsv").exists()
    rpe1 = df[df["dataset"] == "replogle_rpe1"]
    assert len(rpe1) == 8 and (rpe1["notes"] == "not computed: data not provided").all()
    names = {f.name for f in run.figures}
    assert {"gpo_vae_replogle_k562_ate_scatter.png", "gpo_vae_adamson_ate_scatter.png",
            "gpo_vae_replogle_k562_training_curve.png"} <= names
    assert len(names) == len(run.figures)  # no two figures share a name in the report folder
