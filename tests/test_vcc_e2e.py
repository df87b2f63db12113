"""`txrepro reproduce vcc` on the fixture, the report's verdicts, determinism, the step CLI."""

import json
import math

import pandas as pd
import pytest

from conftest import run_cli
from txrepro.metrics.table import read_metrics
from txrepro.report.published import read_published
from txrepro.reproduce import reproduce
from txrepro.studies.vcc.evaluate import evaluate
from txrepro.studies.vcc.models import predict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    out = tmp_path_factory.mktemp("vcc_e2e")
    runs, report = reproduce("vcc", out, profile="test", params={"vcc_threads": 1})
    return out, runs[0], report


def _expected_verdict(rep: float, pub: float, tol: float, direction: str) -> str:
    if rep is None or math.isnan(rep):
        return "not computed"
    if abs(rep - pub) <= tol + 1e-12:
        return "reproduced"
    return "better" if (rep > pub) == (direction == "higher") else "worse"


def test_report_has_every_published_vcc_row_with_the_right_verdict(e2e):
    out, run, report = e2e
    summary = pd.read_csv(report.summary_tsv, sep="\t", keep_default_na=False, na_values={"reproduced": [""], "published": [""]})
    vcc = summary[summary["study"] == "vcc"].set_index(["model", "metric"])
    metrics = read_metrics(run.metrics).set_index(["model", "metric"])
    pub = read_published()
    pub = pub[pub["study"] == "vcc"]
    assert len(pub) == 28
    for r in pub.itertuples(index=False):
        rep = metrics.loc[(r.model, r.metric), "value"] if (r.model, r.metric) in metrics.index else math.nan
        got = vcc.loc[(r.model, r.metric)]
        assert got["verdict"] == _expected_verdict(rep, r.published, r.tolerance, r.direction), (r.model, r.metric)
        assert got["data"] == "fixture"
    for model in ("state", "state_more_steps", "scgpt_zero_shot", "scgpt_finetuned"):  # every published row is computed
        assert vcc.loc[(model, "overall_score"), "verdict"] != "not computed", model
    for model in ("scgpt_zero_shot", "scgpt_finetuned"):  # the test profile has no checkpoint: labelled in the report
        assert "RANDOM INITIALISATION" in vcc.loc[(model, "PDS"), "notes"]
    assert vcc.loc[("cell_mean", "overall_score"), "verdict"] == "reproduced"  # 0 by construction
    md = report.summary_md.read_text()
    assert "## vcc" in md and "**not computed**" in md and "vcc_pds_rank_heatmap.png" in md


def test_metrics_label_both_evaluators_and_ridge_beats_the_baseline(e2e):
    _, run, _ = e2e
    m = read_metrics(run.metrics).set_index(["model", "metric"])
    for model in ("cell_mean", "ridge", "random_forest", "ridge_features", "random_forest_features"):
        for metric in ("DES", "PDS", "MAE", "overall_score", "overall_score_published_baseline"):
            assert m.loc[(model, metric), "notes"].startswith("project evaluator"), (model, metric)
        for metric in ("cell_eval_overlap_at_N", "cell_eval_discrimination_score_l1", "cell_eval_mae", "cell_eval_overall_score"):
            assert m.loc[(model, metric), "notes"].startswith("official evaluator"), (model, metric)
        assert m.loc[(model, "PDS"), "n"] == 4
    # the published ridge / forest rows: the original one-hot design; the feature models: labelled alternatives
    assert "one-hot target_gene / guide_id / batch (the original design" in m.loc[("ridge", "DES"), "notes"]
    assert "ESM2_pert_features.pt" in m.loc[("ridge_features", "DES"), "notes"]
    assert "alternative design, not in the published table" in m.loc[("random_forest_features", "PDS"), "notes"]
    assert m.loc[("cell_mean", "overall_score"), "value"] == 0.0
    assert m.loc[("cell_mean", "cell_eval_overall_score"), "value"] == 0.0
    for score in ("overall_score", "cell_eval_overall_score"):
        assert m.loc[("ridge_features", score), "value"] > 20.0
    assert m.loc[("ridge_features", "PDS"), "value"] > m.loc[("cell_mean", "PDS"), "value"]
    assert m.loc[("ridge_features", "DES"), "value"] > m.loc[("cell_mean", "DES"), "value"]
    # one-hot: every unseen test gene gets the same intercept + batch prediction, so PDS cannot beat chance
    assert m.loc[("ridge", "PDS"), "value"] <= m.loc[("ridge_features", "PDS"), "value"]
    info = json.loads(run.run_info.read_text())
    assert info["data_source"] == "fixture" and info["status"] == "ok"
    for fig in run.figures:
        assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_inputs_and_seed_give_the_same_numbers(e2e, tmp_path):
    out, _, _ = e2e
    vcc = out / "vcc"
    h5, _ = predict(vcc / "prepared", "ridge_features", tmp_path / "pred", features=vcc / "fixture" / "ESM2_pert_features.pt")
    again = json.loads(evaluate(vcc / "prepared", vcc / "reference", h5, "ridge_features", tmp_path / "eval").read_text())
    first = json.loads((vcc / "evaluations" / "ridge_features_eval.json").read_text())
    assert again["project"] == first["project"] and again["cell_eval"] == first["cell_eval"]


def test_step_cli_as_nextflow_calls_it(e2e, tmp_path):
    out, run, _ = e2e
    vcc = out / "vcc"
    res = run_cli(["vcc.py", "predict", "--prepared", str(vcc / "prepared"), "--model", "random_forest", "--outdir", str(tmp_path / "p"),
                   "--features", str(vcc / "fixture" / "ESM2_pert_features.pt"), "--threads", "1"], check=True)
    assert "random_forest_pred.h5ad" in res.stdout
    run_cli(["vcc.py", "evaluate", "--prepared", str(vcc / "prepared"), "--reference", str(vcc / "reference"),
             "--predictions", str(tmp_path / "p" / "random_forest_pred.h5ad"), "--model", "random_forest", "--outdir", str(tmp_path / "e")], check=True)
    for m in ("cell_mean", "ridge"):  # the other models' evaluations from the in-process run
        for suffix in ("_eval.json", "_cell_eval_agg.csv", "_per_perturbation.tsv"):
            (tmp_path / "e" / f"{m}{suffix}").write_bytes((vcc / "evaluations" / f"{m}{suffix}").read_bytes())
    run_cli(["vcc.py", "summarise", "--evaluations", str(tmp_path / "e"), "--outdir", str(tmp_path / "s"), "--data-source", "fixture",
             "--models", "cell_mean,ridge,random_forest"], check=True)
    three = ["cell_mean", "ridge", "random_forest"]
    cli = read_metrics(tmp_path / "s" / "metrics.tsv").query("model in @three").set_index(["model", "metric"])["value"]
    ref = read_metrics(run.metrics).query("model in @three").set_index(["model", "metric"])["value"]
    pd.testing.assert_series_equal(cli.sort_index(), ref.sort_index(), check_exact=True)


def test_state_learns_the_planted_blocks_and_scgpt_finetuning_lowers_the_loss(e2e):
    """A few hundred STATE steps (tiny preset) beat cell-mean on PDS; scGPT's training loss falls."""
    out, run, _ = e2e
    m = read_metrics(run.metrics).set_index(["model", "metric"])["value"]
    assert m[("state", "PDS")] > m[("cell_mean", "PDS")]
    info = json.loads((out / "vcc" / "state_model" / "train_info.json").read_text())
    assert [s["steps"] for s in info["stages"]] == [100, 300] and info["final_train_loss"] is not None
    assert len(pd.read_csv(out / "vcc" / "state_model" / "training_log.csv").dropna(subset=["train_loss"])) >= 20
    ft = json.loads((out / "vcc" / "scgpt_model" / "train_info.json").read_text())
    hist = pd.read_csv(out / "vcc" / "scgpt_model" / "training_log.csv")
    assert ft["random_init"] and hist["train_loss"].iloc[-1] < 0.5 * ft["initial_train_loss"]
    assert m[("scgpt_finetuned", "MAE")] < m[("scgpt_zero_shot", "MAE")]


def test_full_profile_without_data_reports_not_computed(tmp_path):
    runs, _ = reproduce("vcc", tmp_path, profile="full", params={}, report=False)
    m = read_metrics(runs[0].metrics)
    assert len(m) == 28 and m["value"].isna().all()
    assert (m["notes"] == "not computed: data not provided").all()
