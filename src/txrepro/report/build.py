"""Assemble the report from study outputs: summary tables, overview figure, MultiQC HTML."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from txrepro import STUDY_IDS
from txrepro.io.atomic import atomic_dir
from txrepro.io.controlled import redact_params
from txrepro.metrics.table import METRICS_COLUMNS, read_metrics
from txrepro.paths import assets_dir
from txrepro.report import multiqc
from txrepro.report.figures import reproduction_overview
from txrepro.report.published import read_published
from txrepro.report.run_info import read_run_info
from txrepro.report.summary import write_summary_md, write_summary_tsv
from txrepro.report.verdict import compare
from txrepro.runtime import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class ReportOutputs:
    outdir: Path
    summary_tsv: Path
    summary_md: Path
    html: Path | None
    summary: pd.DataFrame


def _study_of_figure(path: Path) -> str:
    for sid in STUDY_IDS:
        if path.name.startswith(sid) or sid in path.parts:
            return sid
    return "other"


def build_report(
    outdir: str | os.PathLike[str],
    *,
    metrics: Sequence[str | os.PathLike[str]],
    run_infos: Sequence[str | os.PathLike[str]] = (),
    figures: Sequence[str | os.PathLike[str]] = (),
    versions_tsv: Sequence[str | os.PathLike[str]] = (),
    versions: Mapping[str, Mapping[str, str]] | None = None,
    params: Mapping[str, object] | None = None,
    published: str | os.PathLike[str] | None = None,
    multiqc_config: str | os.PathLike[str] | None = None,
    selected: Sequence[str] = STUDY_IDS,
    study_status: Mapping[str, str] | None = None,
    html: bool = True,
) -> ReportOutputs:
    """Write report/ atomically: nothing is left half-written if a step fails."""
    outdir = Path(outdir)
    pub = read_published(published)
    frames = [read_metrics(p) for p in metrics]
    reproduced = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(METRICS_COLUMNS))

    data_sources: dict[str, str] = {}
    status: dict[str, str] = {}
    for p in run_infos:
        info = read_run_info(p)
        data_sources[info["study"]] = info["data_source"]
        if info.get("status", "ok") != "ok":
            status[info["study"]] = info["status"]
    for sid in STUDY_IDS:
        if sid not in selected:
            status.setdefault(sid, "not selected in this run")
        elif sid not in set(reproduced["study"]) and sid not in data_sources:
            status.setdefault(sid, "no output from this study")
    status.update(study_status or {})
    for sid in set(reproduced["study"]):
        data_sources.setdefault(sid, "unknown")

    summary = compare(reproduced, pub, data_sources=data_sources, study_status=status)

    with atomic_dir(outdir) as tmp:
        fig_dir = tmp / "figures"
        fig_dir.mkdir()
        study_figs: dict[str, list[str]] = {}
        for f in figures:
            f = Path(f)
            files = sorted(f.rglob("*.png")) if f.is_dir() else [f]
            for png in files:
                sid = _study_of_figure(png)
                dest = fig_dir / sid / png.name
                dest.parent.mkdir(exist_ok=True)
                shutil.copy2(png, dest)
                study_figs.setdefault(sid, []).append(str(dest.relative_to(tmp)))
        overview = reproduction_overview(summary, fig_dir / "reproduction_overview.png")
        summary_tsv = write_summary_tsv(summary, tmp / "reproduction_summary.tsv")
        summary_md = write_summary_md(
            summary,
            tmp / "reproduction_summary.md",
            study_status={s: status.get(s, "ok") for s in STUDY_IDS},
            data_sources=data_sources,
            figures=study_figs,
            overview_figure=str(overview.relative_to(tmp)) if overview else None,
        )
        html_path = None
        if html:
            content = tmp / "multiqc_content"
            content.mkdir()
            multiqc.write_mqc_table(
                summary,
                content / "reproduction_summary_mqc.tsv",
                section_id="txrepro_reproduction_summary",
                section_name="Reproduced versus published",
                description="Every published number beside the reproduced one, with a verdict (see reproduction_summary.md).",
                row_id_columns=("study", "dataset", "model", "split", "metric"),
            )
            for sid, part in reproduced.groupby("study"):
                multiqc.study_metrics_mqc(part, str(sid), content / f"{sid}_metrics_mqc.tsv")
            all_versions: dict[str, dict[str, str]] = {k: dict(v) for k, v in (versions or {}).items()}
            all_versions.setdefault("report", {}).update(multiqc.installed_versions())
            for proc, tools in multiqc.read_versions_tsv(versions_tsv).items():
                all_versions.setdefault(proc, {}).update(tools)
            multiqc.write_versions_yaml(all_versions, content / "software_versions_mqc.yml")
            # controlled-access inputs appear by file name only (txrepro.io.controlled)
            multiqc.write_workflow_summary(redact_params(params or {}), content / "workflow_summary_mqc.yml")
            if overview:
                shutil.copy2(overview, content / "reproduction_overview_mqc.png")
            config = Path(multiqc_config) if multiqc_config else assets_dir() / "multiqc_config.yml"
            multiqc.run_multiqc(content, tmp, config if config.exists() else None)
            html_path = outdir / "multiqc_report.html"
    log.info("report written to %s", outdir)
    return ReportOutputs(outdir, outdir / summary_tsv.name, outdir / summary_md.name, html_path, summary)
