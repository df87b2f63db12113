"""`txrepro reproduce`: a study's steps in order, in-process, then the report (no JVM needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from txrepro import STUDY_IDS
from txrepro.errors import InputError
from txrepro.io.mapping import read_mapping
from txrepro.report.build import ReportOutputs, build_report
from txrepro.report.multiqc import installed_versions
from txrepro.runtime import get_logger
from txrepro.studies import implemented_studies, parse_selection, pipeline_module
from txrepro.studies.base import StudyRun

log = get_logger(__name__)


def load_params(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Nextflow-style params (YAML or JSON), so `-params-file` works for both front ends."""
    if path is None:
        return {}
    return read_mapping(path, "params file", "a mapping of parameter names to values")


def reproduce(
    selection: str,
    outdir: str | os.PathLike[str],
    *,
    profile: str = "test",
    params: Mapping[str, Any] | None = None,
    report: bool = True,
) -> tuple[list[StudyRun], ReportOutputs | None]:
    """Run the selected studies into `outdir/<study>/`, then write `outdir/report/`."""
    if profile not in ("test", "full"):
        raise InputError("--profile", "profile", "'test' (bundled fixtures) or 'full' (your data)", repr(profile))
    outdir = Path(outdir)
    explicit = selection.strip() != "all"
    studies = parse_selection(selection, require_implemented=explicit)
    impl = set(implemented_studies())
    status: dict[str, str] = {}
    runs: list[StudyRun] = []
    for study in studies:
        if study not in impl:
            status[study] = "not implemented in this version"
            log.warning("study %s is not implemented in this version: skipped", study)
            continue
        log.info("=== %s (%s profile) ===", study, profile)
        runs.append(pipeline_module(study).reproduce(outdir / study, profile=profile, params=dict(params or {})))
    out = None
    if report:
        out = build_report(
            outdir / "report",
            metrics=[r.metrics for r in runs],
            run_infos=[r.run_info for r in runs],
            figures=[f for r in runs for f in r.figures],
            versions={"txrepro reproduce": installed_versions()},
            params={"study": selection, "profile": profile, **dict(params or {})},
            selected=studies,
            study_status=status,
        )
    return runs, out


__all__ = ["STUDY_IDS", "load_params", "reproduce"]
