"""What every study's `reproduce()` returns, and the shared way it writes its outputs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from txrepro.metrics.table import MetricRow, metrics_frame, not_computed, write_metrics
from txrepro.report.multiqc import study_metrics_mqc
from txrepro.report.published import read_published
from txrepro.report.run_info import write_run_info

Profile = Literal["test", "full"]
DATA_NOT_PROVIDED = "data not provided"


@dataclass(frozen=True)
class StudyRun:
    """The outputs the report needs from one study run."""

    study: str
    outdir: Path
    metrics: Path
    run_info: Path
    figures: list[Path] = field(default_factory=list)


def finish_study(
    outdir: Path,
    study: str,
    rows: Iterable[MetricRow],
    *,
    data_source: Literal["fixture", "provided", "missing"],
    figures: Iterable[Path] = (),
    inputs: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    status: str = "ok",
) -> StudyRun:
    """Write metrics.tsv, `<study>_metrics_mqc.tsv` and run_info.json for a finished study."""
    outdir.mkdir(parents=True, exist_ok=True)
    df = metrics_frame(rows)
    metrics_path = write_metrics(df, outdir / "metrics.tsv")
    study_metrics_mqc(df, study, outdir / f"{study}_metrics_mqc.tsv")
    info = write_run_info(outdir / "run_info.json", study, data_source, inputs=inputs, params=params, status=status)
    return StudyRun(study, outdir, metrics_path, info, [Path(f) for f in figures])


def missing_data_run(outdir: Path, study: str, reason: str = DATA_NOT_PROVIDED, params: Mapping[str, Any] | None = None) -> StudyRun:
    """A study whose real data was not given: every published number becomes `not computed`."""
    pub = read_published()
    pub = pub[pub["study"] == study]
    rows = [not_computed(study, r.dataset, r.model, r.split, r.metric, reason) for r in pub.itertuples(index=False)]
    return finish_study(outdir, study, rows, data_source="missing", params=params, status=f"not computed: {reason}")
