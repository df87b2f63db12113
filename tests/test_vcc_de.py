"""The project evaluator's Wilcoxon DE against scipy and statsmodels."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import mannwhitneyu
from statsmodels.stats.multitest import multipletests

from txrepro.studies.vcc.de import fold_change, rank_sum_de


def _case(seed=0):
    rng = np.random.default_rng(seed)
    n, g = 130, 9
    x = rng.poisson(0.8, size=(n, g)).astype(float)  # many zeros: one big tie group
    x[:, 2] = np.round(rng.normal(0, 1, n), 1)  # negative values and ties
    x[:, 3] = 2.0  # every value tied
    x[:, 4] = np.log1p(rng.gamma(2.0, 1.0, n))  # continuous, no ties
    x[50:80, 5] += 2.5  # group A shifted
    x[80:125, 6] = 0.0  # group B silent on gene 6
    labels = np.array(["ctrl"] * 50 + ["A"] * 30 + ["B"] * 45 + ["C"] * 4 + ["D"])
    return x.astype(np.float32), labels  # the precision of h5ad values


def test_pvalues_match_scipy_and_fdr_matches_statsmodels():
    x, labels = _case()
    res = rank_sum_de(sp.csr_matrix(x), labels, "ctrl")
    assert res.groups == ["A", "B", "C"]  # D has 1 cell (< 2): left out as hpdex does
    assert res.n_cells.tolist() == [30, 45, 4]
    x64 = x.astype(np.float64)  # scipy would otherwise compute in float32
    expected = np.array([
        [mannwhitneyu(x64[labels == k, j], x64[labels == "ctrl", j], use_continuity=True, alternative="two-sided", method="asymptotic").pvalue
         for j in range(x.shape[1])]
        for k in res.groups
    ])
    np.testing.assert_allclose(res.pvalue, expected, rtol=1e-10, atol=1e-14)
    assert np.all(res.pvalue[:, 3] == 1.0)
    bh = multipletests(expected.ravel(), alpha=0.05, method="fdr_bh")[1].reshape(expected.shape)
    np.testing.assert_allclose(res.fdr, bh, rtol=1e-10, atol=1e-14)  # one BH over the whole table
    assert res.fdr[0, 5] < 0.05  # the planted shift is found


def test_dense_and_sparse_input_agree():
    x, labels = _case(1)
    a = rank_sum_de(x, labels, "ctrl")
    b = rank_sum_de(sp.csr_matrix(x), labels, "ctrl")
    np.testing.assert_array_equal(a.pvalue, b.pvalue)
    np.testing.assert_array_equal(a.log2_fold_change, b.log2_fold_change)


def test_fold_change_follows_hpdex_rules():
    fc = fold_change(np.array([2.0, 1.0, 0.0, 0.0]), np.array([1.0, 0.0, 1.0, 0.0]))
    assert fc.tolist() == [2.0, 20.0, 0.05, 0.05]  # group-zero wins when both are zero
    x, labels = _case()
    res = rank_sum_de(x, labels, "ctrl")
    b = res.groups.index("B")
    assert res.log2_fold_change[b, 6] == pytest.approx(np.log2(1 / 20))
