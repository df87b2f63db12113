"""The VCC overall-score arithmetic against the published table and against cell-eval."""

import math

import numpy as np
import polars as pl
import pytest

from txrepro.metrics.baseline_score import VCC_DIRECTIONS, overall_score, scaled_score
from txrepro.report.published import read_published


def _published_vcc():
    pub = read_published()
    pub = pub[pub["study"] == "vcc"]
    return pub.pivot_table(index="model", columns="metric", values="published")


def test_seven_published_rows_reproduce_their_overall_scores():
    table = _published_vcc()
    assert len(table) == 7
    baseline = table.loc["cell_mean", list(VCC_DIRECTIONS)]
    for model, row in table.iterrows():
        got = overall_score(row[list(VCC_DIRECTIONS)], baseline)
        assert round(got, 2) == pytest.approx(row["overall_score"], abs=1e-9), model


def test_state_more_steps_worked_example():
    # studies.md: DES 0.0200, PDS clipped to 0, MAE 0.1653 -> 6.18
    b = {"DES": 0.0442, "PDS": 0.5167, "MAE": 0.1258}
    assert scaled_score(0.0633, b["DES"], "higher") == pytest.approx(0.0200, abs=5e-5)
    assert scaled_score(0.5122, b["PDS"], "higher") == 0.0
    assert scaled_score(0.1050, b["MAE"], "lower") == pytest.approx(0.1653, abs=5e-5)


def test_edge_cases():
    assert scaled_score(math.nan, 0.5, "higher") == 0.0
    assert scaled_score(0.9, 1.0, "higher") == 0.0  # nothing left to improve on
    assert scaled_score(2.0, 0.1258, "lower") == 0.0  # scGPT-style MAE above the baseline clips
    assert overall_score({"DES": 1, "PDS": 1, "MAE": 0}, {"DES": 0.0442, "PDS": 0.5167, "MAE": 0.1258}) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        scaled_score(0.1, 0.2, "sideways")


def test_agrees_with_cell_eval_score_agg_metrics():
    from cell_eval import score_agg_metrics

    rng = np.random.default_rng(3)
    names = {"DES": "overlap_at_N", "PDS": "discrimination_score_l1", "MAE": "mae"}
    for _ in range(25):
        user = {"DES": rng.uniform(0, 1), "PDS": rng.uniform(0, 1), "MAE": rng.uniform(0.01, 0.3)}
        base = {"DES": rng.uniform(0, 0.9), "PDS": rng.uniform(0, 0.9), "MAE": rng.uniform(0.01, 0.3)}

        def frame(d):
            return pl.DataFrame({"statistic": ["mean"], **{names[k]: [float(v)] for k, v in d.items()}})

        ce = score_agg_metrics(frame(user), frame(base))
        avg = ce.filter(pl.col("metric") == "avg_score")["from_baseline"][0]
        assert overall_score(user, base) == pytest.approx(100 * avg, rel=1e-12, abs=1e-12)
