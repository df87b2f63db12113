"""Bad inputs stop with one line naming the file, the field and what was expected (through the CLI)."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import assert_one_line_error, run_cli
from txrepro.errors import InputError
from txrepro.fixtures.vcc import make_counts, write_fixture
from txrepro.studies.vcc.features import load_embedding_file
from txrepro.studies.vcc.params import DataParams, VccRunParams
from txrepro.studies.vcc.preprocess import prepare


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("vcc_inputs")
    paths = write_fixture(d / "fx", seed=0)
    prepare(paths["input"], d / "prep", dp=DataParams(n_hvg=20), test_genes_file=paths["test_genes"])
    return d, paths


def _write(adata, path):
    adata.write_h5ad(path)
    return str(path)


def _prepare(base, input_path, *extra):
    d, paths = base
    return run_cli(["vcc.py", "prepare", "--input", input_path, "--outdir", str(d / "out"), "--test-genes", str(paths["test_genes"]), *extra])


def test_missing_obs_column(base, tmp_path):
    a, _, _ = make_counts()
    del a.obs["target_gene"]
    res = _prepare(base, _write(a, tmp_path / "x.h5ad"))
    assert_one_line_error(res, "x.h5ad", "obs['target_gene']", "expected an obs column 'target_gene'")
    assert not (base[0] / "out").exists()  # nothing half-written


def test_missing_var_column(base, tmp_path):
    a, _, _ = make_counts()
    del a.var["gene_id"]
    assert_one_line_error(_prepare(base, _write(a, tmp_path / "x.h5ad")), "var['gene_id']")


def test_renamed_columns_are_accepted_when_named(base, tmp_path):
    a, _, _ = make_counts()
    a.obs = a.obs.rename(columns={"target_gene": "gene"})
    r = prepare(_write(a, tmp_path / "x.h5ad"), tmp_path / "out", dp=DataParams(pert_col="gene", n_hvg=10, chunk_size=200),
                test_genes_file=base[1]["test_genes"])
    assert (r.n_obs, r.n_vars) == (680, 60) and r.n_hvg >= 10  # scanpy keeps ties at the cut-off


def test_no_control_cells(base, tmp_path):
    a, _, _ = make_counts()
    a.obs["target_gene"] = a.obs["target_gene"].astype(str).replace({"non-targeting": "NTC"}).astype("category")
    assert_one_line_error(_prepare(base, _write(a, tmp_path / "x.h5ad")), "obs['target_gene']", "control cells labelled 'non-targeting'")


def test_log_normalised_instead_of_counts(base, tmp_path):
    a, _, _ = make_counts()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()))
    assert_one_line_error(_prepare(base, _write(a, tmp_path / "x.h5ad")), "x.h5ad", "X", "raw counts", "log-normalised")


def test_test_gene_absent_from_the_data(base, tmp_path):
    tg = tmp_path / "tg.txt"
    tg.write_text("T3\nT99\n")
    d, paths = base
    res = run_cli(["vcc.py", "prepare", "--input", str(paths["input"]), "--outdir", str(d / "out"), "--test-genes", str(tg)])
    assert_one_line_error(res, "obs['target_gene']", "tg.txt", "missing T99")


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_other_bad_prepare_inputs(base, tmp_path):
    d, paths = base
    tg = tmp_path / "tg.txt"
    tg.write_text("# nothing\n")
    with pytest.raises(InputError, match="at least one gene"):
        prepare(paths["input"], tmp_path / "o", test_genes_file=tg)
    tg.write_text("T3\nT3\n")
    with pytest.raises(InputError, match="each gene once"):
        prepare(paths["input"], tmp_path / "o", test_genes_file=tg)
    a, _, _ = make_counts()
    names = a.var_names.tolist()
    names[-1] = names[-2]
    a.var_names = names
    with pytest.raises(InputError, match="unique gene names"):
        prepare(_write(a, tmp_path / "x.h5ad"), tmp_path / "o", test_genes_file=paths["test_genes"])
    with pytest.raises(InputError, match="an existing .h5ad file"):
        prepare(tmp_path / "nope.h5ad", tmp_path / "o", test_genes_file=paths["test_genes"])
    with pytest.raises(InputError, match="sha256 checksum"):
        prepare(paths["input"], tmp_path / "o", test_genes_file=paths["test_genes"], input_checksum="sha256:" + "0" * 64)
    with pytest.raises(InputError, match="vcc_val_fraction"):
        prepare(paths["input"], tmp_path / "o", dp=DataParams(val_fraction=1.5), test_genes_file=paths["test_genes"])
    assert not (tmp_path / "o").exists()


def test_features_file_missing_a_training_gene(base, tmp_path):
    d, paths = base
    feats = torch.load(paths["features"], weights_only=True)
    del feats["T1"]
    torch.save(feats, tmp_path / "esm2.pt")
    res = run_cli(["vcc.py", "predict", "--prepared", str(d / "prep"), "--model", "ridge_features", "--outdir", str(tmp_path / "p"),
                   "--features", str(tmp_path / "esm2.pt")])
    assert_one_line_error(res, "esm2.pt", "perturbation features", "missing 1: T1")
    assert not (tmp_path / "p" / "ridge_features_pred.h5ad").exists()


def test_features_file_that_is_not_a_dict_or_is_ragged(tmp_path):
    torch.save(torch.zeros(3, 4), tmp_path / "esm2.pt")
    with pytest.raises(InputError, match="dict of gene -> 1-D tensor"):
        load_embedding_file(tmp_path / "esm2.pt", ["T1"])
    torch.save({"T1": torch.zeros(4), "T2": torch.zeros(5)}, tmp_path / "esm2.pt")
    with pytest.raises(InputError, match="length 4 like the others"):
        load_embedding_file(tmp_path / "esm2.pt", ["T1", "T2"])
    (tmp_path / "bad.pt").write_text("not a torch file")
    with pytest.raises(InputError, match="torch-saved dict"):
        load_embedding_file(tmp_path / "bad.pt", ["T1"])


def test_unknown_model(base, tmp_path):
    d, _ = base
    res = run_cli(["vcc.py", "predict", "--prepared", str(d / "prep"), "--model", "gears", "--outdir", str(tmp_path / "p")])
    assert_one_line_error(res, "model", "cell_mean, ridge, random_forest, state", "'gears'")


def test_trained_model_without_its_training_folder(base, tmp_path):
    d, _ = base
    res = run_cli(["vcc.py", "predict", "--prepared", str(d / "prep"), "--model", "state", "--outdir", str(tmp_path / "p")])
    assert_one_line_error(res, "--trained", "state-train", "not given")
    assert not (tmp_path / "p" / "state_pred.h5ad").exists()


def test_predictions_missing_a_test_perturbation(base, tmp_path):
    d, _ = base
    prep = ad.read_h5ad(d / "prep" / "prepared.h5ad")
    keep = prep.obs["target_gene"].isin(["T3", "T6", "T9", "non-targeting"]).to_numpy()  # no T12
    bad = ad.AnnData(prep.X[keep], obs=prep.obs.loc[keep, ["target_gene"]].copy(), var=prep.var[[]].copy())
    bad.write_h5ad(tmp_path / "pred.h5ad")
    res = run_cli(["vcc.py", "evaluate", "--prepared", str(d / "prep"), "--reference", str(tmp_path / "noref"),
                   "--predictions", str(tmp_path / "pred.h5ad"), "--model", "x", "--outdir", str(tmp_path / "e")])
    assert_one_line_error(res, "pred.h5ad", "obs['target_gene']", "exactly the test perturbations", "T12")


def test_params_are_coerced_from_strings_and_checked():
    rp = VccRunParams.from_params({"vcc_n_hvg": "500", "vcc_seed": "7", "vcc_models": "cell_mean, ridge", "vcc_ridge_alphas": "1,10",
                                   "vcc_input": "null"})
    assert rp.data.n_hvg == 500 and rp.data.seed == 7 and rp.model.seed == 7
    assert rp.models == ("cell_mean", "ridge") and rp.model.ridge_alphas == (1.0, 10.0) and rp.input is None
    with pytest.raises(InputError, match="vcc_n_hvg"):
        VccRunParams.from_params({"vcc_n_hvg": "many"})
