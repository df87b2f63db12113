"""assets/published_metrics.tsv: every number a reviewer will compare, with its source."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from txrepro import STUDY_IDS
from txrepro.errors import InputError
from txrepro.io.tables import read_table
from txrepro.paths import published_metrics_path

PUBLISHED_COLUMNS: tuple[str, ...] = (
    "study", "dataset", "model", "split", "metric", "published", "direction", "tolerance", "source", "notes",
)
DIRECTIONS = ("higher", "lower", "none")


def read_published(path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Read and check the published table: known studies, numeric values, a source on every row."""
    p = Path(path) if path else published_metrics_path()
    text_cols = {c: str for c in PUBLISHED_COLUMNS if c not in ("published", "tolerance")}
    df = read_table(p, PUBLISHED_COLUMNS, sep="\t", what="published metrics", dtype=text_cols, keep_default_na=False)
    for col in ("published", "tolerance"):
        try:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
        except (ValueError, TypeError):
            raise InputError(p, f"column '{col}'", "a number on every row") from None
    checks = [
        (~df["study"].isin(STUDY_IDS), "column 'study'", f"one of {', '.join(STUDY_IDS)}"),
        (~df["direction"].isin(DIRECTIONS), "column 'direction'", "higher, lower or none"),
        (df["tolerance"] < 0, "column 'tolerance'", "a non-negative number"),
        (df["source"].str.strip() == "", "column 'source'", "a source on every row"),
    ]
    for bad, field, expected in checks:
        if bad.any():
            row = df[bad].iloc[0]
            raise InputError(p, field, expected, f"row {row['study']}/{row['model']}/{row['metric']}")
    key = ["study", "dataset", "model", "split", "metric"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        raise InputError(p, "rows", "one row per study/dataset/model/split/metric", f"duplicates {df.loc[dup, key].iloc[0].to_dict()}")
    return df


def published_value(study: str, dataset: str, model: str, split: str, metric: str, path: str | os.PathLike[str] | None = None) -> float:
    """One published number, for code that must use it as the original did (e.g. a hard-coded baseline)."""
    df = read_published(path)
    hit = df[(df.study == study) & (df.dataset == dataset) & (df.model == model) & (df.split == split) & (df.metric == metric)]
    if hit.empty:
        raise KeyError(f"no published value for {study}/{dataset}/{model}/{split}/{metric}")
    return float(hit["published"].iloc[0])
