"""reproduction_summary.tsv and .md: the table a reviewer reads first."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from txrepro import STUDY_IDS, __version__
from txrepro.io.atomic import atomic_path, write_text
from txrepro.report.verdict import VERDICTS

FIXTURE_NOTE = (
    "Rows whose data is `fixture` ran on synthetic inputs with planted truth: they show the pipeline "
    "works end to end, and their verdicts say nothing about the published paper."
)


def fmt(x: object) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return ""
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return str(x)
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(x)
    if v == 0:
        return "0"
    if abs(v) >= 1000 or v.is_integer():
        return f"{v:.6g}"
    return f"{v:.4g}"


def write_summary_tsv(summary: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        summary.to_csv(tmp, sep="\t", index=False, na_rep="")
    return Path(path)


def verdict_counts(summary: pd.DataFrame) -> pd.DataFrame:
    counts = summary.groupby(["study", "verdict"]).size().unstack(fill_value=0)
    return counts.reindex(columns=list(VERDICTS), fill_value=0)


def _escape(s: object) -> str:
    return str(s).replace("|", "\\|")


def write_summary_md(
    summary: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    study_status: Mapping[str, str],
    data_sources: Mapping[str, str],
    figures: Mapping[str, Sequence[str]],
    overview_figure: str | None = None,
) -> Path:
    """Markdown with one overview table and one section per study; figures linked relative to the file."""
    lines = [
        "# txrepro reproduction summary",
        "",
        f"txrepro {__version__} · generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "Verdicts: `reproduced` within the tolerance recorded in assets/published_metrics.tsv; `better` or "
        "`worse` outside it by the metric's direction; `differs` outside it for numbers with no better side; "
        "`not computed` for a published number the run did not produce (with the reason); "
        "`no published value` for numbers the paper does not report.",
        "",
    ]
    if any(v == "fixture" for v in data_sources.values()):
        lines += [f"> {FIXTURE_NOTE}", ""]
    counts = verdict_counts(summary) if not summary.empty else pd.DataFrame(columns=list(VERDICTS))
    lines += ["| study | data | status | " + " | ".join(VERDICTS) + " |", "|---|---|---|" + "---|" * len(VERDICTS)]
    for study in STUDY_IDS:
        c = counts.loc[study] if study in counts.index else pd.Series(0, index=list(VERDICTS))
        lines.append(
            f"| {study} | {data_sources.get(study, 'not run')} | {_escape(study_status.get(study, 'ok'))} | "
            + " | ".join(str(int(c[v])) for v in VERDICTS)
            + " |"
        )
    lines.append("")
    if overview_figure:
        lines += [f"![Reproduced versus published]({overview_figure})", ""]
    for study in STUDY_IDS:
        part = summary[summary["study"] == study]
        lines += [f"## {study}", ""]
        status = study_status.get(study, "ok")
        if status != "ok":
            lines += [f"Status: {status}.", ""]
        if part.empty:
            lines += ["No numbers.", ""]
            continue
        # Sources are long and repeat across rows: number them once per study.
        sources = list(dict.fromkeys(s for s in part["source"] if isinstance(s, str) and s))
        ref = {s: f"[{i + 1}]" for i, s in enumerate(sources)}
        lines += [
            "| dataset | model | split | metric | reproduced | published | difference | tolerance | verdict | source | notes |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in part.itertuples(index=False):
            lines.append(
                f"| {_escape(r.dataset)} | {_escape(r.model)} | {_escape(r.split)} | {_escape(r.metric)} | {fmt(r.reproduced)} | "
                f"{fmt(r.published)} | {fmt(r.difference)} | {fmt(r.tolerance)} | **{r.verdict}** | {ref.get(r.source, '')} | "
                f"{_escape(r.notes if isinstance(r.notes, str) else '')} |"
            )
        lines.append("")
        if sources:
            lines += ["Sources:", ""] + [f"{ref[s]} {_escape(s)}" + "  " for s in sources] + [""]
        figs = figures.get(study, [])
        if figs:
            lines += ["Figures: " + ", ".join(f"[{Path(f).name}]({f})" for f in figs), ""]
    return write_text(path, "\n".join(lines) + "\n")
