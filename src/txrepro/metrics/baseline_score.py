"""Baseline-scaled scores: the Virtual Cell Challenge overall-score arithmetic.

Each metric is scaled so the baseline model scores 0 and a perfect prediction 1:
higher-is-better s = (u - b) / (1 - b), lower-is-better s = 1 - u / b = (b - u) / b.
A scaled score that is NaN counts 0 and negatives are clipped at 0; the overall score is the
mean of the scaled scores times 100. This is what `cell-eval score` does and what the VCC
project's evaluator (my_cell_eval3.py) did, including its guard that a baseline of 1 (or an MAE
baseline of 0) leaves nothing to improve on and scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# The three VCC metrics and their better side.
VCC_DIRECTIONS: dict[str, str] = {"DES": "higher", "PDS": "higher", "MAE": "lower"}


def scaled_score(value: float, baseline: float, direction: str) -> float:
    """One metric scaled against its baseline, clipped at 0 (NaN counts as 0)."""
    if direction == "higher":
        s = 0.0 if baseline >= 1.0 - 1e-12 else (value - baseline) / (1.0 - baseline)
    elif direction == "lower":
        s = 0.0 if baseline <= 0.0 else (baseline - value) / baseline
    else:
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    return 0.0 if math.isnan(s) else max(0.0, s)


def overall_score(values: Mapping[str, float], baseline: Mapping[str, float], directions: Mapping[str, str] = VCC_DIRECTIONS) -> float:
    """Mean of the clipped scaled scores x 100 (0 = no better than the baseline, 100 = perfect)."""
    parts = [scaled_score(float(values[m]), float(baseline[m]), d) for m, d in directions.items()]
    return 100.0 * sum(parts) / len(parts)
