"""drugseq inputs: CSV set and h5ad read the same data; bad inputs stop with one clear line."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import assert_one_line_error, run_cli
from txrepro.errors import InputError
from txrepro.fixtures.drugseq import write_fixture
from txrepro.studies.drugseq.data import load_inputs, read_prepared, write_prepared


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("drugseq_fx")
    write_fixture(d, seed=0)
    return d


@pytest.fixture
def fx(fixture_dir, tmp_path) -> Path:
    """A private copy to break."""
    d = tmp_path / "fx"
    shutil.copytree(fixture_dir, d)
    return d


def test_fixture_layout_and_planted_truth(fixture_dir):
    data = load_inputs(data_dir=fixture_dir)
    assert data.expr.shape == (64, 40)
    assert (data.meta_id == "DMSO").sum() == 8
    assert pd.Series(data.meta_id).value_counts().drop("DMSO").eq(4).all()
    assert data.well_id[0].startswith("tc1_A1_A")
    # label is exactly 1[w . x_drivers > 0]
    w = np.array([1.0, 0.8, 0.6, 0.9])
    np.testing.assert_array_equal(data.label, (data.expr[:, :4].astype(np.float64) @ w > 0).astype(int))
    # activators and inhibitors move the drivers in opposite directions; null metabolites do not
    drv = pd.Series(data.expr[:, :4].mean(axis=1)).groupby(data.meta_id).mean()
    assert drv[["M1", "M2", "M3"]].min() > 2 and drv[["M4", "M5"]].max() < -2
    assert drv.drop(["M1", "M2", "M3", "M4", "M5"]).abs().max() < 1
    assert data.legacy is not None and data.cluster is not None
    np.testing.assert_allclose(data.scores.mean(axis=0), 0, atol=1e-6)


def test_scores_read_by_name_not_position(fx):
    before = load_inputs(data_dir=fx).scores
    df = pd.read_csv(fx / "scores_3_z.csv")
    df[["Tscore_z", "pseudotime_z", "cytoscore_z"]].to_csv(fx / "scores_3_z.csv", index=False)
    np.testing.assert_array_equal(load_inputs(data_dir=fx).scores, before)


def test_mislabelled_score_header_is_an_error(fx):
    df = pd.read_csv(fx / "scores_3_z.csv")
    df.columns = ["Tscore", "CytoTRACE", "Pseudotime"]  # the order the original export assumed
    df.to_csv(fx / "scores_3_z.csv", index=False)
    with pytest.raises(InputError, match=r"scores_3_z.csv: column 'pseudotime_z': expected score columns pseudotime_z, cytoscore_z, Tscore_z"):
        load_inputs(data_dir=fx)


def test_h5ad_and_csv_give_the_same_data(fixture_dir, tmp_path):
    csv = load_inputs(data_dir=fixture_dir)
    adata = csv.to_anndata()
    adata.obs["well_id"] = adata.obs_names  # users often keep ids in a column, with other obs_names
    adata.obs_names = [f"cell{i}" for i in range(adata.n_obs)]
    adata.uns.clear()
    adata.write_h5ad(tmp_path / "user.h5ad")
    h5 = load_inputs(h5ad=tmp_path / "user.h5ad")
    for field in ("expr", "well_id", "meta_id", "label", "scores", "legacy", "cluster"):
        np.testing.assert_array_equal(getattr(h5, field), getattr(csv, field), err_msg=field)
    assert h5.genes == csv.genes
    write_prepared(h5, tmp_path / "prep.h5ad", "fixture")
    back, source = read_prepared(tmp_path / "prep.h5ad")
    assert source == "fixture"
    np.testing.assert_array_equal(back.expr, csv.expr)
    np.testing.assert_array_equal(back.scores, csv.scores)


def test_legacy_file_under_the_shipped_name_is_used_loudly(fx, caplog):
    (fx / "activation_score_old.csv").rename(fx / "e.activation_score_old.csv")
    with caplog.at_level(logging.WARNING):
        data = load_inputs(data_dir=fx)
    assert data.legacy is not None
    assert data.provenance["legacy_file"] == "e.activation_score_old.csv"
    assert any("e.activation_score_old.csv" in r.message and "LEGACY" in r.message for r in caplog.records)
    # the original's lookup: exact name only, so the regulariser is off, and it says so
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        original = load_inputs(data_dir=fx, legacy_lookup="original")
    assert original.legacy is None
    assert any("NOT USED" in r.message for r in caplog.records)
    assert load_inputs(data_dir=fx, legacy_lookup="off").legacy is None


def test_two_legacy_candidates_are_ambiguous(fx):
    (fx / "activation_score_old.csv").rename(fx / "e.activation_score_old.csv")
    shutil.copy(fx / "e.activation_score_old.csv", fx / "old.activation_score_old.csv")
    with pytest.raises(InputError, match="legacy activation score: expected one file named like activation_score_old.csv"):
        load_inputs(data_dir=fx)


def _edit(path: Path, fn) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


@pytest.mark.parametrize(
    ("file", "edit", "fragments"),
    [
        ("meta_id.csv", lambda df: df.iloc[:-1], ("meta_id.csv", "rows", "expected 64 rows", "found 63 rows")),
        ("well_id.csv", lambda df: df.assign(x=["tc1_A1_A1"] * 2 + list(df["x"][2:])), ("well_id.csv", "well ids", "unique well ids", "tc1_A1_A1")),
        ("expr_mat.csv", lambda df: df.assign(G7=["high"] + list(df["G7"][1:])), ("expr_mat.csv", "column 'G7'", "numeric", "'high' on data row 1")),
        ("meta_id.csv", lambda df: df.replace("DMSO", "vehicle"), ("meta_id.csv", "metabolite ids", "control wells named 'DMSO'")),
        ("labels_cls.csv", lambda df: df.replace("1", "2"), ("labels_cls.csv", "labels", "binary labels")),
        ("scores_3_z.csv", lambda df: df.rename(columns={"cytoscore_z": "CytoTRACE"}), ("scores_3_z.csv", "column 'cytoscore_z'", "read by name")),
    ],
)
def test_bad_inputs_give_their_one_line_error(fx, file, edit, fragments):
    _edit(fx / file, edit)
    with pytest.raises(InputError) as err:
        load_inputs(data_dir=fx)
    msg = str(err.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg


def test_prepare_cli_bad_input_is_one_line_and_writes_nothing(fx, tmp_path):
    _edit(fx / "labels_cls.csv", lambda df: df.iloc[:-3])
    out = tmp_path / "prep.h5ad"
    res = run_cli(["drugseq.py", "prepare", "--data-dir", str(fx), "--out", str(out)])
    assert_one_line_error(res, "labels_cls.csv", "expected 64 rows", "found 61 rows")
    assert not out.exists() and not list(tmp_path.glob(".prep*"))


def test_prepare_cli_h5ad_missing_obs_is_one_line(fixture_dir, tmp_path):
    adata = load_inputs(data_dir=fixture_dir).to_anndata()
    del adata.obs["cytoscore_z"]
    adata.write_h5ad(tmp_path / "bad.h5ad")
    res = run_cli(["drugseq.py", "prepare", "--h5ad", str(tmp_path / "bad.h5ad"), "--out", str(tmp_path / "p.h5ad")])
    assert_one_line_error(res, "bad.h5ad", "obs['cytoscore_z']")


def test_h5ad_and_csv_together_is_an_error(fixture_dir, tmp_path):
    with pytest.raises(InputError, match="either --h5ad or the CSV files"):
        load_inputs(h5ad=tmp_path / "x.h5ad", data_dir=fixture_dir)


def test_expression_with_row_names_is_checked_against_well_ids(fx):
    before = load_inputs(data_dir=fx).expr
    wells = pd.read_csv(fx / "well_id.csv")["x"]
    expr = pd.read_csv(fx / "expr_mat.csv", float_precision="round_trip")
    expr.index = wells.rename(None)  # as R's write.csv(row.names = TRUE) writes it: an unnamed first column
    expr.to_csv(fx / "expr_mat.csv")
    np.testing.assert_array_equal(load_inputs(data_dir=fx).expr, before)
    expr.index = wells[::-1].to_numpy()  # same ids, other order
    expr.to_csv(fx / "expr_mat.csv")
    with pytest.raises(InputError, match="row names: expected the well ids of well_id.csv in the same order"):
        load_inputs(data_dir=fx)
