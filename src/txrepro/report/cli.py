"""`report.py` / `txrepro report`: build the report, or mark a study as not computed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import yaml

from txrepro import STUDY_IDS
from txrepro.errors import InputError


def read_params_file(path: str | None) -> dict[str, object]:
    """Run parameters for the workflow summary: JSON/YAML, or Nextflow's `key<TAB>value` lines."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "params file", "an existing file", "nothing at this path")
    text = p.read_text()
    if p.suffix == ".tsv":
        return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError):
        raise InputError(p, "params file", "JSON, YAML or key<TAB>value lines") from None
    if not isinstance(data, dict):
        raise InputError(p, "params file", "a mapping of parameter names to values", type(data).__name__)
    return data


def _build(args: argparse.Namespace) -> int:
    from txrepro.report.build import build_report
    from txrepro.studies import parse_selection

    out = build_report(
        args.outdir,
        metrics=args.metrics,
        run_infos=args.run_info,
        figures=args.figures,
        versions_tsv=args.versions,
        params=read_params_file(args.params_file),
        published=args.published,
        multiqc_config=args.multiqc_config,
        selected=parse_selection(args.studies, require_implemented=False),
        html=not args.no_html,
    )
    print(f"report: {out.summary_md}")
    return 0


def _not_computed(args: argparse.Namespace) -> int:
    from txrepro.studies.base import missing_data_run

    run = missing_data_run(Path(args.outdir), args.study, reason=args.reason)
    print(f"{args.study}: not computed ({args.reason}): {run.metrics}")
    return 0


def add_report_steps(steps: argparse._SubParsersAction, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = steps.add_parser("build", help="study metrics + published numbers -> reproduction summary, figures, MultiQC HTML")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.tsv files of the studies that ran")
    p.add_argument("--run-info", nargs="*", default=[], help="run_info.json files (data source per study)")
    p.add_argument("--figures", nargs="*", default=[], help="PNG files or folders of PNGs")
    p.add_argument("--versions", nargs="*", default=[], help="collated versions TSV (process, tool, version)")
    p.add_argument("--params-file", default=None, help="the run's parameters (JSON, YAML or key<TAB>value) for the workflow summary")
    p.add_argument("--published", default=None, help="published metrics TSV (default: the bundled assets/published_metrics.tsv)")
    p.add_argument("--multiqc-config", default=None, help="MultiQC config (default: the bundled assets/multiqc_config.yml)")
    p.add_argument("--studies", default="all", help="studies selected for this run ('all' or a comma list)")
    p.add_argument("--no-html", action="store_true", help="skip MultiQC (tables and figures only)")
    p.add_argument("--outdir", required=True, help="report folder to write")
    add_common(p)
    p.set_defaults(func=_build)

    p = steps.add_parser("not-computed", help="metrics.tsv + run_info.json for a study whose data was not given")
    p.add_argument("--study", required=True, choices=STUDY_IDS)
    p.add_argument("--reason", default="data not provided", help="why nothing was computed (shown in the report)")
    p.add_argument("--outdir", required=True, help="study folder to write")
    add_common(p)
    p.set_defaults(func=_not_computed)
