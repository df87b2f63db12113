"""Expression preprocessing against statsmodels / numpy oracles, and training z-scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from conftest import assert_one_line_error, run_cli
from txrepro.studies.sage_net.expression import adjust_expression, expression_pcs, pcaforqtl_filter, zscores


def _tpm(rng, n_genes=40, n_samples=60):
    """log2(TPM+1) = gene mean + 1.5 x batch + hidden factor + noise; returns TPM and the known covariates."""
    batch = rng.integers(0, 2, n_samples)
    age = rng.normal(70, 8, n_samples)
    hidden = rng.normal(size=n_samples)
    load_h = rng.normal(size=n_genes)
    mu = rng.uniform(2, 8, n_genes)
    log_expr = mu[:, None] + 1.5 * batch[None, :] + load_h[:, None] * hidden[None, :] + rng.normal(0, 0.3, (n_genes, n_samples))
    samples = [f"s{i}" for i in range(n_samples)]
    genes = [f"g{i}" for i in range(n_genes)]
    tpm = pd.DataFrame(np.power(2.0, log_expr) - 1, index=genes, columns=samples)
    cov = pd.DataFrame({"batch": np.where(batch, "b2", "b1"), "age": age}, index=samples)
    return tpm, cov, log_expr


def test_adjustment_equals_per_gene_ols_oracle():
    rng = np.random.default_rng(0)
    tpm, cov, _ = _tpm(rng)
    adjusted, report = adjust_expression(tpm, cov, n_pcs=3, r2_cutoff=1.01)  # keep every known covariate
    assert report.kept == ["age", "batch_b2"]
    log_expr = np.log2(tpm.T + 1)
    known = pd.DataFrame({"age": cov["age"], "batch_b2": (cov["batch"] == "b2").astype(float)})
    x = sm.add_constant(pd.concat([known, expression_pcs(log_expr, 3)], axis=1).to_numpy())
    for g in ["g0", "g7", "g33"]:
        y = log_expr[g].to_numpy()
        oracle = sm.OLS(y, x).fit().resid + y.mean()
        np.testing.assert_allclose(adjusted.loc[g].to_numpy(), oracle, atol=1e-8)


def test_pcaforqtl_drops_covariates_the_pcs_capture():
    rng = np.random.default_rng(1)
    tpm, cov, _ = _tpm(rng)
    # batch moves every gene by 1.5: PC1 captures it, so the PCAForQTL rule drops it; age is unrelated
    adjusted, report = adjust_expression(tpm, cov, n_pcs=3)
    assert report.dropped == ["batch_b2"]
    assert report.kept == ["age"]
    assert report.covariate_r2["batch_b2"] >= 0.9 > report.covariate_r2["age"]
    # the oracle R2: OLS without intercept of the standardised covariate on the PCs
    log_expr = np.log2(tpm.T + 1)
    pcs = expression_pcs(log_expr, 3)
    std = (cov["age"] - cov["age"].mean()) / cov["age"].std()
    assert report.covariate_r2["age"] == pytest.approx(sm.OLS(std.to_numpy(), pcs.to_numpy()).fit().rsquared, abs=1e-12)
    r2, dropped = pcaforqtl_filter(pd.DataFrame({"age": cov["age"]}), pcs, r2_cutoff=0.0)
    assert dropped == ["age"]
    # the batch effect is gone after adjustment
    b = (cov["batch"] == "b2").to_numpy()
    assert abs(adjusted.loc["g3"].to_numpy()[b].mean() - adjusted.loc["g3"].to_numpy()[~b].mean()) < 0.1


def test_pcs_match_numpy_svd():
    rng = np.random.default_rng(2)
    tpm, _, _ = _tpm(rng, n_genes=15, n_samples=30)
    log_expr = np.log2(tpm.T + 1)
    pcs = expression_pcs(log_expr, 2).to_numpy()
    x = ((log_expr - log_expr.mean()) / log_expr.std()).to_numpy()
    u, s, _ = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    for k in range(2):
        assert abs(np.corrcoef(pcs[:, k], u[:, k] * s[k])[0, 1]) == pytest.approx(1.0, abs=1e-9)


def test_zscores_use_training_individuals_with_pandas_sd():
    rng = np.random.default_rng(3)
    expr = rng.normal(5, 2, (4, 20))
    train = np.arange(12)
    mean, sd, z = zscores(expr, train)
    df = pd.DataFrame(expr)
    np.testing.assert_allclose(mean, df.iloc[:, train].mean(axis=1))
    np.testing.assert_allclose(sd, df.iloc[:, train].std(axis=1))
    np.testing.assert_allclose(z[:, 15], (expr[:, 15] - mean) / sd)


def test_preprocess_cli_refuses_log_scaled_input(tmp_path):
    df = pd.DataFrame([[1.0, -0.5], [2.0, 3.0]], index=["g1", "g2"], columns=["a", "b"])
    df.to_csv(tmp_path / "tpm.csv")
    res = run_cli(["sage_net.py", "preprocess-expression", "--tpm", str(tmp_path / "tpm.csv"), "--out", str(tmp_path / "adj.csv")])
    assert_one_line_error(res, "tpm.csv", "TPM values", "skip this step")
    assert not (tmp_path / "adj.csv").exists()
