"""prepare: the streaming passes give what scanpy / STATE's preprocess_train give in memory."""

import json

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.model_selection import train_test_split

from txrepro.fixtures.vcc import make_counts, write_fixture
from txrepro.studies.vcc.data import Prepared, make_split, read_gene_list
from txrepro.studies.vcc.params import DataParams, default_test_genes_path
from txrepro.studies.vcc.preprocess import hvg_seurat, prepare


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    d = tmp_path_factory.mktemp("vcc_prep")
    paths = write_fixture(d / "fx", seed=0)
    prepare(paths["input"], d / "prep_small_blocks", dp=DataParams(chunk_size=97, n_hvg=20), test_genes_file=paths["test_genes"])
    prepare(paths["input"], d / "prep_one_block", dp=DataParams(chunk_size=10_000, n_hvg=20), test_genes_file=paths["test_genes"])
    return d, paths


def _scanpy_reference(path, n_top):
    a = ad.read_h5ad(path)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=n_top)
    return a


def test_normalised_x_and_hvgs_match_scanpy(fx):
    d, paths = fx
    ref = _scanpy_reference(paths["input"], 20)
    got = ad.read_h5ad(d / "prep_small_blocks" / "prepared.h5ad")
    assert sp.issparse(got.X) and got.X.dtype == np.float32
    np.testing.assert_allclose(got.X.toarray(), ref.X.toarray(), rtol=1e-6, atol=1e-7)
    assert (got.var["highly_variable"].to_numpy() == ref.var["highly_variable"].to_numpy()).all()
    np.testing.assert_allclose(got.var["dispersions_norm"], ref.var["dispersions_norm"], rtol=1e-5)
    hv = ref.var["highly_variable"].to_numpy()
    assert got.obsm["X_hvg"].shape == (got.n_obs, 20)
    np.testing.assert_allclose(got.obsm["X_hvg"], ref.X[:, hv].toarray(), rtol=1e-6, atol=1e-7)
    assert list(got.obs.columns[:4]) == ["target_gene", "guide_id", "batch", "cell_type"]


def test_block_size_does_not_change_a_bit(fx):
    d, _ = fx
    a = ad.read_h5ad(d / "prep_small_blocks" / "prepared.h5ad")
    b = ad.read_h5ad(d / "prep_one_block" / "prepared.h5ad")
    assert (a.X != b.X).nnz == 0
    assert np.array_equal(a.obsm["X_hvg"], b.obsm["X_hvg"])
    ga = ad.read_h5ad(d / "prep_small_blocks" / "group_means.h5ad")
    gb = ad.read_h5ad(d / "prep_one_block" / "group_means.h5ad")
    np.testing.assert_allclose(ga.X, gb.X, rtol=1e-12)


def test_hvg_selection_on_a_wider_matrix_matches_scanpy():
    rng = np.random.default_rng(1)
    counts = rng.negative_binomial(2, 0.3, size=(300, 400)).astype(np.float32)
    counts[:, 5] = 0  # an unexpressed gene
    a = ad.AnnData(sp.csr_matrix(counts))
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    x = np.expm1(a.X.toarray().astype(np.float64))
    mine = hvg_seurat(x.mean(0), x.var(0, ddof=1), 50)
    sc.pp.highly_variable_genes(a, n_top_genes=50)
    assert (mine["highly_variable"].to_numpy() == a.var["highly_variable"].to_numpy()).all()
    np.testing.assert_allclose(mine["means"], a.var["means"], rtol=1e-6)


def test_group_means_are_the_pseudobulk_of_each_perturbation(fx):
    d, _ = fx
    p = Prepared(d / "prep_small_blocks")
    x = ad.read_h5ad(p.h5ad)
    for g in ["T1", "T12", "non-targeting"]:
        rows = x[x.obs["target_gene"] == g].X
        np.testing.assert_allclose(p.mean_of([g])[0], np.asarray(rows.mean(axis=0)).ravel(), rtol=1e-6)
    assert p.n_cells(["T1", "non-targeting"]).tolist() == [40, 200]
    # planted truth: T1 knocks its own target down, raises P1B1/P1B2 and lowers P1B3/P1B4
    delta = dict(zip(p.var_names, p.deltas(["T1"])[0], strict=True))
    assert delta["T1"] < -0.5 and delta["P1B1"] > 0.5 and delta["P1B2"] > 0.5
    assert delta["P1B3"] < -0.5 and delta["P1B4"] < -0.5
    assert abs(delta["P2B1"]) < 0.3


def test_split_is_the_projects(fx):
    d, paths = fx
    info = json.loads((d / "prep_small_blocks" / "split.json").read_text())
    split = info["split"]
    assert split["test"] == sorted(["T3", "T6", "T9", "T12"])
    rest = sorted({f"T{i}" for i in range(1, 13)} - set(split["test"]))
    train, val = train_test_split(rest, test_size=0.2, random_state=42)
    assert split["train"] == sorted(train) and split["val"] == sorted(val)
    assert info["target_sum"] > 0 and info["n_hvg"] == 20
    obs = ad.read_h5ad(d / "prep_small_blocks" / "prepared.h5ad", backed="r").obs
    assert set(obs.loc[obs["target_gene"] == "non-targeting", "vcc_split"]) == {"control"}
    assert set(obs.loc[obs["target_gene"] == "T3", "vcc_split"]) == {"test"}


def test_default_test_genes_are_the_published_30():
    genes = read_gene_list(default_test_genes_path())
    assert len(genes) == 30 and genes[0] == "AKT2" and genes[-1] == "ZNF562"
    split = make_split([*genes, *[f"G{i:03d}" for i in range(120)]], genes, 0.2, 42)
    assert len(split["train"]) == 96 and len(split["val"]) == 24 and split["test"] == sorted(genes)


def test_fixture_is_deterministic():
    a, ea, _ = make_counts(seed=5)
    b, eb, _ = make_counts(seed=5)
    assert (a.X != b.X).nnz == 0 and all(np.array_equal(ea[k], eb[k]) for k in ea)


def test_rows_of_reads_exactly_the_selected_cells(fx):
    d, _ = fx
    p = Prepared(d / "prep_small_blocks")
    full = ad.read_h5ad(p.h5ad)
    got = p.rows_of(["T2", "non-targeting"], block=97)
    mask = full.obs["target_gene"].isin(["T2", "non-targeting"]).to_numpy()
    assert (got.X != full.X[mask]).nnz == 0
    assert got.obs_names.equals(full.obs_names[mask])
    assert got.obs["target_gene"].astype(str).tolist() == full.obs["target_gene"][mask].astype(str).tolist()
    assert got.var_names.equals(full.var_names)
