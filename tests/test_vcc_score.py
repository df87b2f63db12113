"""`vcc.py score`: a reviewer's own predictions, scored without `prepare`, against cell-eval itself.

The oracle is cell-eval run directly (MetricsEvaluator on the full cell matrices, profile vcc, and
score_agg_metrics for the overall score), plus hand computations of the project evaluator's PDS
(cosine, rank 1-based) and MAE (top 2,000 genes; all 60 here) with numpy.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp

from conftest import assert_one_line_error, run_cli
from txrepro.fixtures.vcc import write_fixture
from txrepro.metrics.baseline_score import overall_score
from txrepro.metrics.table import read_metrics
from txrepro.studies.vcc.data import Prepared
from txrepro.studies.vcc.evaluate import evaluate, reference
from txrepro.studies.vcc.models import predict
from txrepro.studies.vcc.params import DataParams
from txrepro.studies.vcc.preprocess import prepare

CONTROL = "non-targeting"
COL = "target_gene"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("vcc_score")
    fx = write_fixture(d / "fx", seed=0)
    prepare(fx["input"], d / "prep", dp=DataParams(n_hvg=20), test_genes_file=fx["test_genes"])
    prepared = Prepared(d / "prep")
    test = sorted(prepared.split["test"])
    real = prepared.rows_of([*test, CONTROL])
    real.write_h5ad(d / "real.h5ad")
    preds = {m: predict(d / "prep", m, d / "pred", features=fx["features"])[0] for m in ("ridge_features", "cell_mean")}
    return d, fx, prepared, real, preds


def _cell_eval(real: ad.AnnData, pred: ad.AnnData, outdir) -> tuple[pd.DataFrame, pl.DataFrame]:
    from cell_eval import MetricsEvaluator

    ev = MetricsEvaluator(adata_pred=pred.copy(), adata_real=real.copy(), control_pert=CONTROL, pert_col=COL, num_threads=1, outdir=str(outdir))
    res, agg = ev.compute(profile="vcc", write_csv=False)
    return res.to_pandas().set_index("perturbation"), agg


def _by_hand(real: ad.AnnData, pred: ad.AnnData) -> tuple[float, float]:
    """Project PDS (cosine of effects, target kept, rank 1-based) and MAE of pseudobulks, in numpy."""
    def means(a):
        x = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
        lab = a.obs[COL].astype(str).to_numpy()
        return {g: x[lab == g].mean(axis=0, dtype=np.float64) for g in set(lab)}

    r, p = means(real), means(pred)
    perts = sorted(set(r) - {CONTROL})
    dr = {g: r[g] - r[CONTROL] for g in perts}
    dp = {g: p[g] - p[CONTROL] for g in perts}
    pds, mae = [], []
    for g in perts:
        sims = [dp[g] @ dr[h] / (np.linalg.norm(dp[g]) * np.linalg.norm(dr[h])) for h in perts]
        rank = 1 + sum(s > sims[perts.index(g)] for s in sims)
        pds.append(1 - (rank - 1) / len(perts))
        mae.append(np.abs(p[g] - r[g]).mean())
    return float(np.mean(pds)), float(np.mean(mae))


def test_score_equals_cell_eval_and_the_hand_computation(world, tmp_path):
    d, _, prepared, real, preds = world
    out = tmp_path / "score"
    res = run_cli(["vcc.py", "score", "--real", str(d / "real.h5ad"), "--pred", str(preds["ridge_features"]), "--baseline",
                   str(preds["cell_mean"]), "--model", "my_model", "--outdir", str(out)], check=True)
    assert "metrics" in res.stdout
    m = read_metrics(out / "metrics.tsv").set_index(["model", "metric"])["value"]
    pred, base = ad.read_h5ad(preds["ridge_features"]), ad.read_h5ad(preds["cell_mean"])
    ce, ce_agg = _cell_eval(real, pred, tmp_path / "ce1")
    _, base_agg = _cell_eval(real, base, tmp_path / "ce2")
    for metric in ("overlap_at_N", "discrimination_score_l1", "mae"):
        assert m[("my_model", f"cell_eval_{metric}")] == pytest.approx(ce[metric].mean(), rel=1e-6, abs=1e-9), metric
    from cell_eval import score_agg_metrics

    avg = score_agg_metrics(ce_agg, base_agg).filter(pl.col("metric") == "avg_score")["from_baseline"][0]
    assert m[("my_model", "cell_eval_overall_score")] == pytest.approx(100 * avg, rel=1e-6, abs=1e-9)
    pds, mae = _by_hand(real, pred)
    assert m[("my_model", "PDS")] == pytest.approx(pds, abs=1e-12)
    assert m[("my_model", "MAE")] == pytest.approx(mae, rel=1e-6)
    base_pds, base_mae = _by_hand(real, base)
    # the pipeline's own evaluate step gives the same project numbers (DES included) for this prediction
    reference(d / "prep", tmp_path / "ref")
    import json

    ev = json.loads(evaluate(d / "prep", tmp_path / "ref", preds["ridge_features"], "x", tmp_path / "ev").read_text())
    assert m[("my_model", "DES")] == pytest.approx(ev["project"]["DES"], abs=1e-12)
    base_ev = json.loads(evaluate(d / "prep", tmp_path / "ref", preds["cell_mean"], "y", tmp_path / "ev").read_text())
    assert m[("my_model", "overall_score")] == pytest.approx(overall_score(ev["project"], base_ev["project"]), abs=1e-9)
    assert base_pds == pytest.approx(base_ev["project"]["PDS"]) and base_mae == pytest.approx(base_ev["project"]["MAE"], rel=1e-6)
    assert m[("baseline", "overall_score")] == 0.0
    rows = read_metrics(out / "metrics.tsv")
    assert set(rows["dataset"]) == {"user"}
    assert rows.set_index(["model", "metric"]).loc[("my_model", "overall_score_published_baseline"), "notes"].startswith("not computed")
    assert (out / "my_model_per_perturbation.tsv").is_file()
    assert not list(out.glob(".*"))  # no scratch left


def test_score_takes_counts_as_cell_eval_run_does(world, tmp_path):
    """Integer counts (no `prepare`): each file normalised to its own median total + log1p, as cell-eval does."""
    d, fx, prepared, _, _ = world
    counts = ad.read_h5ad(fx["input"])
    test = sorted(prepared.split["test"])
    real = counts[counts.obs[COL].isin([*test, CONTROL])].copy()
    real.obs = real.obs[[COL]].copy()
    rng = np.random.default_rng(5)
    pred = real.copy()
    pred.X = sp.csr_matrix(rng.poisson(pred.X.toarray() * 1.3).astype(np.float32))  # noisy counts, another depth
    real.write_h5ad(tmp_path / "real_counts.h5ad")
    pred.write_h5ad(tmp_path / "pred_counts.h5ad")
    out = tmp_path / "score"
    run_cli(["vcc.py", "score", "--real", str(tmp_path / "real_counts.h5ad"), "--pred", str(tmp_path / "pred_counts.h5ad"), "--outdir", str(out)], check=True)
    m = read_metrics(out / "metrics.tsv").set_index(["model", "metric"])
    ce, _ = _cell_eval(real, pred, tmp_path / "ce")  # cell-eval normalises the counts itself
    for metric in ("overlap_at_N", "discrimination_score_l1", "mae"):
        assert m.loc[("prediction", f"cell_eval_{metric}"), "value"] == pytest.approx(ce[metric].mean(), rel=1e-5, abs=1e-7), metric
    assert "normalised to the median total" in m.loc[("prediction", "PDS"), "notes"]
    assert m.loc[("prediction", "overall_score"), "notes"].startswith("not computed: no baseline")


def test_score_bad_inputs_are_one_line_naming_the_parameter(world, tmp_path):
    d, _, prepared, real, preds = world
    pred = ad.read_h5ad(preds["ridge_features"])
    short = pred[pred.obs[COL] != "T12"].copy()
    short.write_h5ad(tmp_path / "short.h5ad")
    res = run_cli(["vcc.py", "score", "--real", str(d / "real.h5ad"), "--pred", str(tmp_path / "short.h5ad"), "--outdir", str(tmp_path / "o")])
    assert_one_line_error(res, "short.h5ad", "vcc_score_pred", "missing ['T12']")
    scaled = pred.copy()
    scaled.X = scaled.X * 7.5  # decimals far above the log1p range: normalised but not logged
    scaled.write_h5ad(tmp_path / "scaled.h5ad")
    res = run_cli(["vcc.py", "score", "--real", str(d / "real.h5ad"), "--pred", str(tmp_path / "scaled.h5ad"), "--outdir", str(tmp_path / "o")])
    assert_one_line_error(res, "scaled.h5ad", "X", "log-normalised values in [0, 15)")
    res = run_cli(["vcc.py", "score", "--real", str(d / "real.h5ad"), "--pred", str(preds["ridge_features"]), "--dataset", "vcc_h1_crispri",
                   "--outdir", str(tmp_path / "o")])
    assert_one_line_error(res, "vcc_score_dataset", "published 30-gene test split", "4 perturbations")
    assert not (tmp_path / "o" / "metrics.tsv").exists()
