"""The metrics.tsv contract: long format, one row per number.

Columns: study, dataset, model, split, metric, value, n, notes. A number that could not be
computed is still a row: value is empty and notes starts with 'not computed: <reason>', so the
report never drops it silently.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from txrepro import STUDY_IDS
from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path
from txrepro.io.tables import read_table

METRICS_COLUMNS: tuple[str, ...] = ("study", "dataset", "model", "split", "metric", "value", "n", "notes")
KEY_COLUMNS: tuple[str, ...] = ("study", "dataset", "model", "split", "metric")
NOT_COMPUTED_PREFIX = "not computed: "


@dataclass(frozen=True)
class MetricRow:
    study: str
    dataset: str
    model: str
    split: str
    metric: str
    value: float
    n: int | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if self.study not in STUDY_IDS:
            raise ValueError(f"unknown study id {self.study!r}")
        for name in ("dataset", "model", "split", "metric"):
            v = getattr(self, name)
            if not v or "\t" in v or "\n" in v:
                raise ValueError(f"{name} must be a non-empty single-line string, got {v!r}")
        if "\t" in self.notes or "\n" in self.notes:
            raise ValueError("notes must be a single line without tabs")


def not_computed(study: str, dataset: str, model: str, split: str, metric: str, reason: str) -> MetricRow:
    """A row that says a number is missing and why (the report shows it as `not computed`)."""
    return MetricRow(study, dataset, model, split, metric, math.nan, None, NOT_COMPUTED_PREFIX + reason)


def metrics_frame(rows: Iterable[MetricRow]) -> pd.DataFrame:
    """Rows as a DataFrame in contract column order; duplicate keys are a bug and raise."""
    df = pd.DataFrame([asdict(r) for r in rows], columns=list(METRICS_COLUMNS))
    df["value"] = df["value"].astype(float)
    df["n"] = df["n"].astype("Int64")
    dup = df.duplicated(list(KEY_COLUMNS), keep=False)
    if dup.any():
        raise ValueError(f"duplicate metric keys: {df.loc[dup, list(KEY_COLUMNS)].to_dict('records')[:3]}")
    return df


def write_metrics(rows: Iterable[MetricRow] | pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write metrics.tsv atomically; values keep full float precision (repr round-trips)."""
    df = rows if isinstance(rows, pd.DataFrame) else metrics_frame(rows)
    df = _validate(df, Path(path))
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="", float_format=None)
    return Path(path)


def read_metrics(path: str | os.PathLike[str]) -> pd.DataFrame:
    df = read_table(
        path,
        METRICS_COLUMNS,
        sep="\t",
        what="metrics table",
        dtype={"study": str, "dataset": str, "model": str, "split": str, "metric": str, "notes": str},
        keep_default_na=False,
        na_values={"value": [""], "n": [""]},
        float_precision="round_trip",  # the default C parser can be off by one ulp
    )
    return _validate(df, Path(path))


def _validate(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [c for c in METRICS_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, f"column '{missing[0]}'", f"columns {', '.join(METRICS_COLUMNS)}")
    df = df[list(METRICS_COLUMNS)].copy()
    df["notes"] = df["notes"].fillna("").astype(str)
    try:
        df["value"] = pd.to_numeric(df["value"], errors="raise").astype(float)
    except (ValueError, TypeError):
        raise InputError(path, "column 'value'", "numbers (empty for not computed)") from None
    df["n"] = pd.to_numeric(df["n"], errors="coerce").astype("Int64")
    bad_study = ~df["study"].isin(STUDY_IDS)
    if bad_study.any():
        raise InputError(path, "column 'study'", f"one of {', '.join(STUDY_IDS)}", repr(df.loc[bad_study, 'study'].iloc[0]))
    silent_nan = df["value"].isna() & ~df["notes"].str.startswith(NOT_COMPUTED_PREFIX)
    if silent_nan.any():
        r = df[silent_nan].iloc[0]
        raise InputError(path, f"value of {r['model']}/{r['metric']}", "a number, or notes starting 'not computed: '", "an empty value")
    if np.isinf(df["value"]).any():
        raise InputError(path, "column 'value'", "finite numbers", "inf")
    return df
