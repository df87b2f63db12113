"""The steps read cells from disk a group at a time; that must change no number.

`dataset_stats_h5ad` (what `reference` and `evaluate` run) against `dataset_stats` on the same
cells loaded whole (what they ran before): group means, rank-sum DE and pdex tables equal bit
for bit, for the real test cells (rows scattered through prepared.h5ad) and for a model's
prediction (rows grouped), also when the prediction's X is stored dense.
"""

import anndata as ad
import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from txrepro.errors import InputError
from txrepro.fixtures.vcc import write_fixture
from txrepro.studies.vcc.data import Prepared
from txrepro.studies.vcc.evaluate import DatasetStats, dataset_stats, dataset_stats_h5ad, evaluate, open_predictions, reference
from txrepro.studies.vcc.h5ad_stream import CsrRows
from txrepro.studies.vcc.models import predict
from txrepro.studies.vcc.params import DataParams
from txrepro.studies.vcc.preprocess import prepare

CONTROL = "non-targeting"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("vcc_streamed")
    paths = write_fixture(d / "fx", seed=0)
    prepare(paths["input"], d / "prep", dp=DataParams(n_hvg=20), test_genes_file=paths["test_genes"])
    h5, _ = predict(d / "prep", "ridge", d / "pred", features=paths["features"])
    return d, Prepared(d / "prep"), h5


def assert_same_stats(a: DatasetStats, b: DatasetStats) -> None:
    assert a.groups == b.groups and a.control == b.control and a.n_cells == b.n_cells
    np.testing.assert_array_equal(a.means, b.means)
    assert a.rank_sum.groups == b.rank_sum.groups
    np.testing.assert_array_equal(a.rank_sum.n_cells, b.rank_sum.n_cells)
    for f in ("pvalue", "fdr", "log2_fold_change"):
        np.testing.assert_array_equal(getattr(a.rank_sum, f), getattr(b.rank_sum, f), err_msg=f)
    assert a.pdex.height == b.pdex.height > 0
    assert a.pdex.equals(b.pdex, null_equal=True)


def test_csr_rows_reads_any_rows_in_the_order_asked(world):
    _, prepared, _ = world
    whole = ad.read_h5ad(prepared.h5ad).X
    idx = np.array([5, 6, 7, 0, 40, 41, 3, 3, whole.shape[0] - 1])
    with CsrRows(prepared.h5ad) as reader:
        got = reader.rows(idx)
        assert got.shape == (idx.size, whole.shape[1]) and got.dtype == whole.dtype
        assert (got != whole[idx]).nnz == 0
        assert reader.rows(np.array([], dtype=int)).shape == (0, whole.shape[1])


def test_reference_cells_streamed_equal_loaded_whole(world):
    _, prepared, _ = world
    keep = [*prepared.split["test"], CONTROL]
    labels = np.where(np.isin(prepared.cell_labels, keep), prepared.cell_labels, "")
    streamed = dataset_stats_h5ad(prepared.h5ad, labels, "target_gene", CONTROL)
    whole = dataset_stats(prepared.rows_of(keep), "target_gene", CONTROL)
    assert streamed.groups == sorted(prepared.split["test"])
    assert_same_stats(streamed, whole)


@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_prediction_streamed_equals_loaded_whole(world, dense, tmp_path):
    d, prepared, h5 = world
    pred = ad.read_h5ad(h5)
    assert pred.X.dtype == np.float32  # predicted cells are stored as float32
    if dense:
        pred.X = pred.X.toarray()
        h5 = tmp_path / "dense_pred.h5ad"
        pred.write_h5ad(h5)
    path, labels = open_predictions(h5, prepared, tmp_path)
    assert (path != h5) == dense  # a dense X is rewritten as CSR first
    assert_same_stats(dataset_stats_h5ad(path, labels, "target_gene", CONTROL), dataset_stats(pred, "target_gene", CONTROL))


def test_evaluate_reads_no_whole_matrix_and_rejects_non_finite(world, tmp_path):
    d, prepared, h5 = world
    reference(d / "prep", tmp_path / "ref")
    out = evaluate(d / "prep", tmp_path / "ref", h5, "ridge", tmp_path / "eval")
    assert out.is_file() and not list((tmp_path / "eval").glob(".evaluate.*"))  # its scratch folder is gone
    bad = ad.read_h5ad(h5)
    bad.X = sp.csr_matrix(bad.X)
    bad.X.data[7] = np.nan
    bad.write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(InputError, match="finite"):
        open_predictions(tmp_path / "bad.h5ad", prepared, tmp_path)
    assert pl.read_csv(tmp_path / "eval" / "ridge_cell_eval_agg.csv").height > 0
