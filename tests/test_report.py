import math

import pandas as pd
import pytest

from conftest import assert_one_line_error, run_cli
from txrepro.metrics.table import MetricRow, not_computed, write_metrics
from txrepro.report.build import build_report
from txrepro.report.published import read_published
from txrepro.report.run_info import write_run_info
from txrepro.report.verdict import compare, verdict_for


@pytest.mark.parametrize(
    ("rep", "pub", "tol", "direction", "expected"),
    [
        (0.83, 0.832, 0.02, "higher", "reproduced"),
        (0.852, 0.832, 0.02, "higher", "reproduced"),  # on the boundary
        (0.90, 0.832, 0.02, "higher", "better"),
        (0.70, 0.832, 0.02, "higher", "worse"),
        (0.05, 0.1258, 0.01, "lower", "better"),
        (0.20, 0.1258, 0.01, "lower", "worse"),
        (3000, 2211, 221, "none", "differs"),
    ],
)
def test_verdict_for(rep, pub, tol, direction, expected):
    assert verdict_for(rep, pub, tol, direction) == expected


def _pub():
    return pd.DataFrame(
        [
            ["vcc", "d", "ridge", "test", "DES", 0.1, "higher", 0.01, "paper", ""],
            ["vcc", "d", "state", "test", "DES", 0.08, "higher", 0.01, "paper", ""],
            ["vcc", "d", "scgpt", "test", "DES", 0.18, "higher", 0.01, "paper", ""],
            ["age_clock", "A", "m", "test", "roc_auc", 0.9, "higher", 0.05, "paper", ""],
        ],
        columns=["study", "dataset", "model", "split", "metric", "published", "direction", "tolerance", "source", "notes"],
    )


def test_compare_keeps_every_published_row():
    rep = pd.DataFrame(
        [r.__dict__ for r in [
            MetricRow("vcc", "d", "ridge", "test", "DES", 0.105),
            not_computed("vcc", "d", "scgpt", "test", "DES", "no checkpoint given"),
            MetricRow("vcc", "d", "ridge", "test", "pearson_delta", 0.5),
        ]]
    )
    out = compare(rep, _pub(), data_sources={"vcc": "fixture"}, study_status={"age_clock": "not selected in this run"}).set_index(["study", "model", "metric"])
    assert out.loc[("vcc", "ridge", "DES"), "verdict"] == "reproduced"
    assert out.loc[("vcc", "ridge", "DES"), "data"] == "fixture"
    assert out.loc[("vcc", "scgpt", "DES"), "verdict"] == "not computed"
    assert "no checkpoint given" in out.loc[("vcc", "scgpt", "DES"), "notes"]
    assert out.loc[("vcc", "state", "DES"), "verdict"] == "not computed"
    assert "model state not run on d" in out.loc[("vcc", "state", "DES"), "notes"]
    assert "not selected" in out.loc[("age_clock", "m", "roc_auc"), "notes"]
    assert out.loc[("vcc", "ridge", "pearson_delta"), "verdict"] == "no published value"
    assert len(out) == 5


def test_run_and_published_notes_are_told_apart():
    pub = _pub()
    pub.loc[0, "notes"] = "Table 2, H1 test genes"
    rep = pd.DataFrame([MetricRow("vcc", "d", "ridge", "test", "DES", 0.1, notes="ESM2 features").__dict__, MetricRow("vcc", "d", "state", "test", "DES", 0.1).__dict__])
    out = compare(rep, pub).set_index(["study", "model", "metric"])
    assert out.loc[("vcc", "ridge", "DES"), "notes"] == "ESM2 features; published: Table 2, H1 test genes"
    assert out.loc[("vcc", "state", "DES"), "notes"] == ""  # neither side has notes: nothing is added


def test_not_computed_reason_names_the_missing_dataset():
    pub = _pub()
    pub.loc[1, "dataset"] = "other"
    rep = pd.DataFrame([MetricRow("vcc", "d", "ridge", "test", "DES", 0.1).__dict__])
    out = compare(rep, pub).set_index(["study", "dataset", "model", "metric"])
    assert "dataset other not in this run (this run: d)" in out.loc[("vcc", "other", "state", "DES"), "notes"]


def test_bundled_published_table_is_valid():
    pub = read_published()
    assert {"age_clock", "gpo_vae", "vcc", "sage_net"} <= set(pub["study"])
    assert (pub["source"].str.len() > 10).all()
    # numbers quoted in published_numbers.md
    v = pub.set_index(["study", "model", "metric"]).sort_index()
    assert v.loc[("age_clock", "scgpt_repository", "accuracy"), "published"].item() == 0.832
    assert v.loc[("vcc", "ridge", "overall_score"), "published"].item() == 11.76


def test_build_report_end_to_end(tmp_path):
    import matplotlib.pyplot as plt

    from txrepro.report.figures import save_png

    study = tmp_path / "vcc"
    study.mkdir()
    m = write_metrics(
        [MetricRow("vcc", "vcc_h1_crispri", "ridge", "test", "DES", 0.5, 3), MetricRow("vcc", "vcc_h1_crispri", "ridge", "test", "PDS", 0.6, 3)],
        study / "metrics.tsv",
    )
    ri = write_run_info(study / "run_info.json", "vcc", "fixture")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set(title="t", xlabel="x (unit)", ylabel="y (unit)")
    png = save_png(fig, study / "figures" / "vcc_scores.png")
    out = build_report(tmp_path / "report", metrics=[m], run_infos=[ri], figures=[study / "figures"], selected=["vcc"], versions={"p": {"numpy": "2"}})
    s = out.summary[out.summary["study"] == "vcc"].set_index(["model", "metric"])
    assert s.loc[("ridge", "DES"), "verdict"] == "better"
    assert s.loc[("cell_mean", "DES"), "verdict"] == "not computed"
    md = out.summary_md.read_text()
    assert "fixture" in md and "## vcc" in md and "figures/vcc/vcc_scores.png" in md
    assert (out.outdir / "figures" / "reproduction_overview.png").exists()
    assert out.html is not None and out.html.stat().st_size > 10_000
    assert "Reproduced versus published" in out.html.read_text()
    assert png.exists()
    age = out.summary[out.summary["study"] == "age_clock"]
    assert (age["verdict"] == "not computed").all() and age["notes"].str.contains("not selected").all()


def test_report_cli_bad_metrics_leaves_no_report(tmp_path):
    bad = tmp_path / "metrics.tsv"
    bad.write_text("study\tvalue\nvcc\t1\n")
    res = run_cli(["report.py", "build", "--metrics", str(bad), "--outdir", str(tmp_path / "report"), "--no-html"])
    assert_one_line_error(res, "metrics.tsv", "dataset")
    assert not (tmp_path / "report").exists()


def test_figure_without_title_refused(tmp_path):
    import matplotlib.pyplot as plt

    from txrepro.report.figures import save_png

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set(xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match="title"):
        save_png(fig, tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()
    assert math.isfinite(1.0)


def test_overview_marks_fixture_rows():
    from txrepro.report.figures import overview_labels

    rows = pd.DataFrame({"study": ["vcc", "age_clock"], "dataset": ["d", "A"], "model": ["ridge", "m"], "metric": ["DES", "roc_auc"], "data": ["fixture", "user data"]})
    assert list(overview_labels(rows)) == ["vcc · d · ridge · DES [fixture]", "age_clock · A · m · roc_auc"]
    assert list(overview_labels(rows.drop(columns="data"))) == ["vcc · d · ridge · DES", "age_clock · A · m · roc_auc"]
