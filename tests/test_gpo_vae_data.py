"""gpo_vae preprocessing: QC flags, filters, split, OT pairing, model inputs and bad inputs."""

from __future__ import annotations

import anndata as ad
import numpy as np
import ot
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.model_selection import train_test_split

from conftest import assert_one_line_error, run_cli
from txrepro.errors import InputError
from txrepro.fixtures.gpo_vae import PERTURBED, write_fixture
from txrepro.studies.gpo_vae.config import load_config
from txrepro.studies.gpo_vae.data import (
    MATCHED_COLUMN,
    cell_split,
    knockdown_mask,
    perturbation_split,
    prepare,
    strong_perturbations,
    treatment_labels,
)
from txrepro.studies.gpo_vae.features import counterfactual_inputs, delta_x, dosage_matrix
from txrepro.studies.gpo_vae.pairing import pair_controls, sinkhorn_pairing
from txrepro.studies.gpo_vae.qc import chunk_of_cells, mad_outliers, qc_flags


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("gpo_vae_fx"))


# --- QC ------------------------------------------------------------------------------------------


def test_qc_flags_equal_a_hand_computation():
    obs = pd.DataFrame({
        # sorted 40 98 99 100 101 102: median 99.5; |dev| sorted .5 .5 1.5 1.5 2.5 59.5: MAD 1.5; low 95
        "UMI_count": [100, 102, 98, 101, 99, 40],
        # sorted 20 48 49 50 50 51: median 49.5; |dev| sorted .5 .5 .5 1.5 1.5 29.5: MAD 1; low 46.5
        "ngenes": [50, 51, 49, 48, 50, 20],
        # sorted 1.9 2 2 2.1 2.2 10: median 2.05; |dev| sorted .05 .05 .05 .15 .15 7.95: MAD .1; high 2.35
        "pct_counts_mt": [2.1, 1.9, 2.0, 2.0, 2.2, 10.0],
        # sorted 29 29 30 31 31 34: median 30.5; |dev| sorted .5 .5 .5 1.5 1.5 3.5: MAD 1; high 33.5
        "pct_counts_ribo": [30, 31, 29, 34, 31, 29],
        # all zero: MAD 0, threshold 0, and 0 > 0 is false
        "pct_counts_hb": [0.0] * 6,
        "predicted_doublet": [False, True, False, False, False, False],
    })
    flags, thr = qc_flags(obs, 3.0)
    assert thr["thr_qc_UMI_count"] == pytest.approx(95.0)
    assert thr["thr_qc_ngenes"] == pytest.approx(46.5)
    assert thr["thr_qc_pct_counts_mt"] == pytest.approx(2.35)
    assert thr["thr_qc_pct_counts_ribo"] == pytest.approx(33.5)
    assert thr["thr_qc_pct_counts_hb"] == 0.0
    assert flags["qc_UMI_count"].tolist() == [0, 0, 0, 0, 0, 1]
    assert flags["qc_ngenes"].tolist() == [0, 0, 0, 0, 0, 1]
    assert flags["qc_pct_counts_mt"].tolist() == [0, 0, 0, 0, 0, 1]
    assert flags["qc_pct_counts_ribo"].tolist() == [0, 0, 0, 1, 0, 0]
    assert flags["qc_pct_counts_hb"].tolist() == [0] * 6
    assert flags["qc_predicted_doublet"].tolist() == [0, 1, 0, 0, 0, 0]
    assert flags["num_qc"].tolist() == [0, 1, 0, 1, 0, 3]
    assert flags["total_qc"].tolist() == [0, 1, 0, 1, 0, 1]


def test_mad_threshold_is_strict_and_unscaled():
    flags, thr = mad_outliers(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), 2.0)  # median 3, MAD 1 -> 5
    assert thr == 5.0 and flags.tolist() == [0, 0, 0, 0, 1]
    flags, thr = mad_outliers(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2.0)
    assert flags.tolist() == [0, 0, 0, 0, 0]  # 5 is not > 5


def test_qc_chunks_take_a_slice_of_every_perturbation():
    labels = pd.Series(["A"] * 25 + ["B"] * 15)  # 20 cells per group on average, 2 chunks -> step 10
    chunks = chunk_of_cells(labels, 2)
    assert chunks[:25].tolist() == [0] * 10 + [1] * 10 + [2] * 5
    assert chunks[25:].tolist() == [0] * 10 + [1] * 5


# --- filters, split ------------------------------------------------------------------------------


def test_strong_perturbations_use_the_causalbench_thresholds():
    stats = pd.DataFrame({
        "genetic perturbation": ["A", "B", "C", "D"],
        "Number of DEGs (anderson-darling)": [51, 50, 200, 200],
        "percent knockdown": [-0.3, -0.9, -0.29, -0.9],
        "number of cells (filtered)": [26, 100, 100, 25],
    })
    assert strong_perturbations(stats, load_config("adamson").data) == {"A"}


def test_knockdown_keeps_cells_at_or_below_the_control_percentile():
    ctrl = np.arange(1, 11, dtype=float)  # 10th percentile of 1..10 = 1.9
    pert = np.array([0.0, 1.0, 1.5, 2.0, 5.0])
    X = np.zeros((15, 2))
    X[:10, 0], X[10:, 0] = ctrl, pert
    adata = ad.AnnData(X=X, var=pd.DataFrame(index=["A", "Z"]))
    labels = pd.Series(["non-targeting"] * 10 + ["A"] * 5)
    keep = knockdown_mask(adata, labels, 10.0)
    assert keep[:10].all()
    assert keep[10:].tolist() == [True, True, True, False, False]


def test_cell_split_is_the_nested_sklearn_split():
    split = cell_split(1000, 0)
    idx = np.arange(1000)
    tr, te = train_test_split(idx, train_size=0.8, random_state=0)
    tr, va = train_test_split(tr, train_size=0.8, random_state=0)
    assert set(np.flatnonzero(split == "train")) == set(tr)
    assert set(np.flatnonzero(split == "val")) == set(va)
    assert set(np.flatnonzero(split == "test")) == set(te)
    assert (len(tr), len(va), len(te)) == (640, 160, 200)


def test_heldout_perturbation_split_extension():
    labels = pd.Series(["non-targeting"] * 100 + [f"G{i}" for i in range(10) for _ in range(20)])
    split = perturbation_split(labels, 0)
    held = {g for g in labels.unique() if g != "non-targeting" and set(split[labels == g]) == {"test"}}
    assert len(held) == 2  # 20 % of 10 perturbations, all of their cells in test
    seen = set(labels.unique()) - held - {"non-targeting"}
    assert all("test" not in set(split[labels == g]) for g in seen)
    assert sorted(pd.Series(split[labels == "non-targeting"]).value_counts().tolist()) == [16, 20, 64]


def test_non_targeting_variants_become_the_control_label():
    assert treatment_labels(pd.Series(["non-targeting_0012", "P1"])).tolist() == ["non-targeting", "P1"]


# --- OT pairing ----------------------------------------------------------------------------------


def test_ot_pairing_is_the_argmax_of_pots_sinkhorn_plan():
    rng = np.random.default_rng(3)
    pert = rng.normal(size=(6, 4)) * 50
    ctrl = rng.normal(size=(9, 4)) * 50
    cost = ot.dist(pert, ctrl, metric="euclidean") / 100.0
    plan = ot.sinkhorn(np.full(6, 1 / 6), np.full(9, 1 / 9), cost, 1.0)
    expected = plan.argmax(axis=1)
    assert sinkhorn_pairing(pert, ctrl).tolist() == expected.tolist()
    # POT's torch backend (the GPU path) gives the same pairs on CPU tensors
    assert sinkhorn_pairing(pert, ctrl, backend="torch").tolist() == expected.tolist()
    # each row's choice really holds the row's largest mass
    assert np.allclose(plan[np.arange(6), expected], plan.max(axis=1))


def test_pairing_stays_inside_split_and_perturbation():
    rng = np.random.default_rng(0)
    labels = np.array(["non-targeting"] * 12 + ["A"] * 6 + ["B"] * 6)
    splits = np.array(["train", "val", "test"] * 8)
    expr = rng.normal(size=(24, 3))
    matched = pair_controls(expr, labels, splits, control_label="non-targeting")
    assert (labels[matched] == "non-targeting").all()
    assert (splits[matched] == splits).all()
    a_train = np.flatnonzero((labels == "A") & (splits == "train"))
    c_train = np.flatnonzero((labels == "non-targeting") & (splits == "train"))
    assert matched[a_train].tolist() == c_train[sinkhorn_pairing(expr[a_train], expr[c_train])].tolist()


# --- model inputs ---------------------------------------------------------------------------------


def test_counterfactual_input_is_the_lower_median_of_failing_cells_in_the_same_split():
    X = np.array([[1, 10], [3, 5], [7, 7], [9, 9], [4, 4]], dtype=np.float32)
    labels = np.array(["A", "A", "A", "A", "A"])
    splits = np.array(["train", "train", "train", "val", "val"])
    qc = np.array([1, 1, 0, 0, 0])  # failing cells only in train: rows 0 and 1
    cf = counterfactual_inputs(X, labels, splits, qc, np.random.default_rng(0))
    allowed = {tuple(X[0]), tuple(X[1]), tuple(np.minimum(X[0], X[1]))}  # (a,a), (b,b), lower median of (a,b)
    for row in cf[:3]:
        assert tuple(row) in allowed
    assert (cf[3:] == 0).all()  # no failing cell in val: zeros, the counterfactual term is skipped
    one = counterfactual_inputs(X, labels, splits, np.array([0, 1, 0, 0, 0]), np.random.default_rng(1))
    assert (one[:3] == X[1]).all()


def test_delta_x_and_dosages():
    Y = np.array([[1.0, 5.0], [2.0, 1.0], [4.0, 4.0]])
    assert delta_x(Y, np.array([1, 1, 1])).tolist() == [[1.0, 4.0], [0.0, 0.0], [2.0, 3.0]]
    D = dosage_matrix(np.array(["P2", "non-targeting", "P1"]), ["P1", "P2", "R1"], 2)
    assert D.tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 0]]


# --- prepare: the authors' format and the raw CPU path -----------------------------------------------


def test_prepare_skips_steps_the_authors_file_already_ran(fixture_files, tmp_path):
    out = tmp_path / "prepared.h5ad"
    report = prepare(fixture_files["input"], out, load_config("tiny").data)
    assert report.steps_run == []
    a = ad.read_h5ad(out)
    src = ad.read_h5ad(fixture_files["input"])
    assert (a.obs[MATCHED_COLUMN].to_numpy() == src.obs[MATCHED_COLUMN].to_numpy()).all()
    assert a.uns["gpo_vae"]["treatments"].tolist() == PERTURBED + ["R1", "R2", "R3", "R4"]
    assert (a.obs["total_qc"].to_numpy() == src.obs["total_qc"].to_numpy()).all()


def test_prepare_runs_every_step_on_raw_counts(fixture_files, tmp_path):
    out = tmp_path / "prepared_raw.h5ad"
    report = prepare(fixture_files["raw_input"], out, load_config("tiny").data, summary_stats=fixture_files["summary_stats"])
    assert report.steps_run == ["qc_metrics", "strong_perturbation_filters", "fc3_genes", "split (cells)", "ot_pairing"]
    a = ad.read_h5ad(out)
    labels = a.obs["T"].astype(str).to_numpy()
    assert set(labels) == set(PERTURBED) | {"non-targeting"}  # the weak W1 is gone
    assert list(a.obs["gene"]) == sorted(a.obs["gene"])  # cells grouped by perturbation, as the original
    X = a.X.toarray()
    ctrl = labels == "non-targeting"
    for p in PERTURBED:  # knockdown filter: target counts at or below the controls' 10th percentile
        col = a.var_names.get_loc(p)
        assert X[labels == p, col].max() <= np.percentile(X[ctrl, col], 10)
    matched = a.obs[MATCHED_COLUMN].to_numpy()
    split = a.obs["split"].astype(str).to_numpy()
    assert (labels[matched] == "non-targeting").all() and (split[matched] == split).all()
    assert a.var["FC3"].sum() >= 1 and {"UMI_count", "predicted_doublet", "total_qc"} <= set(a.obs)


# --- bad inputs ----------------------------------------------------------------------------------


def _write(adata: ad.AnnData, path):
    adata.write_h5ad(path)
    return path


def _tiny(labels, genes=("P1", "B1"), counts=None):
    X = np.ones((len(labels), len(genes)), dtype=np.float32) * 5 if counts is None else counts
    return ad.AnnData(X=sp.csr_matrix(X), obs=pd.DataFrame({"gene": labels}, index=[f"c{i}" for i in range(len(labels))]),
                      var=pd.DataFrame(index=list(genes)))


def test_no_control_cells_is_a_one_line_error(tmp_path):
    path = _write(_tiny(["P1"] * 6), tmp_path / "noctrl.h5ad")
    res = run_cli(["gpo_vae.py", "prepare", "--input", str(path), "--out", str(tmp_path / "p.h5ad"), "--config", "tiny"])
    assert_one_line_error(res, "noctrl.h5ad", "obs['gene']", "non-targeting")
    assert not (tmp_path / "p.h5ad").exists()


def test_perturbed_gene_absent_from_var_is_a_one_line_error(tmp_path):
    path = _write(_tiny(["P1", "GHOST", "non-targeting", "non-targeting"]), tmp_path / "ghost.h5ad")
    res = run_cli(["gpo_vae.py", "prepare", "--input", str(path), "--out", str(tmp_path / "p.h5ad"), "--config", "tiny"])
    assert_one_line_error(res, "ghost.h5ad", "var_names", "GHOST")


def test_other_bad_inputs_raise_input_errors(fixture_files, tmp_path):
    cfg = load_config("tiny").data
    frac = _tiny(["P1", "non-targeting"], counts=np.array([[1.5, 2.0], [1.0, 1.0]], dtype=np.float32))
    with pytest.raises(InputError, match="non-integer"):
        prepare(_write(frac, tmp_path / "frac.h5ad"), tmp_path / "o.h5ad", cfg)
    a = ad.read_h5ad(fixture_files["input"])
    first_perturbed = int(np.flatnonzero(a.obs["gene"].astype(str) != "non-targeting")[0])
    a.obs[MATCHED_COLUMN] = first_perturbed
    with pytest.raises(InputError, match="positions of control cells"):
        prepare(_write(a, tmp_path / "badmatch.h5ad"), tmp_path / "o.h5ad", cfg)
    bad_stats = tmp_path / "stats.csv"
    pd.DataFrame({"genetic perturbation": ["P1"], "percent knockdown": [-0.9]}).to_csv(bad_stats, index=False)
    with pytest.raises(InputError, match="Number of DEGs"):
        prepare(fixture_files["input"], tmp_path / "o.h5ad", cfg, summary_stats=bad_stats)
    with pytest.raises(InputError, match="section 'modle'"):
        bad_cfg = tmp_path / "cfg.yaml"
        bad_cfg.write_text("base: tiny\nmodle:\n  n_latent: 3\n")
        load_config(bad_cfg)
    assert not (tmp_path / "o.h5ad").exists()


def test_summary_statistics_from_the_published_xlsx_sheet(tmp_path):
    """The Replogle table ships as summary_stats.xlsx with one sheet per cell line."""
    from txrepro.studies.gpo_vae.data import STATS_COLUMNS, read_summary_stats

    k562 = pd.DataFrame({c: ["P1", "P2"] if i == 0 else [60, 10] if i == 1 else [-0.5, -0.1] if i == 2 else [30, 30] for i, c in enumerate(STATS_COLUMNS)})
    book = tmp_path / "summary_stats.xlsx"
    with pd.ExcelWriter(book) as writer:
        k562.to_excel(writer, sheet_name="TabB_K562_day6_summary_stat", index=False)
        k562.assign(**{STATS_COLUMNS[0]: ["Q1", "Q2"]}).to_excel(writer, sheet_name="TabC_RPE1_summary_statistic", index=False)
    got = read_summary_stats(book, "TabC_RPE1_summary_statistic")
    assert list(got[STATS_COLUMNS[0]]) == ["Q1", "Q2"]
    with pytest.raises(InputError, match="TabB_K562_day6_summary_stat"):
        read_summary_stats(book, "TabD_missing")
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="readable xlsx"):
        read_summary_stats(broken)
