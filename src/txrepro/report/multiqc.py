"""MultiQC custom content: metrics tables, versions and the run summary, then the HTML report."""

from __future__ import annotations

import html
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import pandas as pd
import yaml

from txrepro.errors import TxreproError
from txrepro.io.atomic import atomic_path, write_text

# Versions of what a study's numbers depend on; collected in-process by `txrepro reproduce`.
TRACKED_PACKAGES = (
    "txrepro", "numpy", "scipy", "pandas", "anndata", "scanpy", "scikit-learn", "statsmodels", "torch",
    "cell-eval", "arc-state", "scgpt", "pot", "cyvcf2", "pysam", "pyfaidx", "multiqc",
)


def write_mqc_table(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    section_id: str,
    section_name: str,
    description: str,
    row_id_columns: Sequence[str],
) -> Path:
    """A `*_mqc.tsv` table: MultiQC reads the `#` header, the first column names each row."""
    table = df.copy()
    # On an empty frame agg(axis=1) returns a DataFrame, not a Series (a study with no rows: missing data).
    row_ids = table[list(row_id_columns)].astype(str).agg(" | ".join, axis=1) if len(table) else pd.Series([], dtype=str)
    table.insert(0, "row", row_ids)
    header = (
        f"# id: '{section_id}'\n"
        f"# section_name: '{section_name}'\n"
        f"# description: '{description.replace(chr(39), '')}'\n"
        "# plot_type: 'table'\n"
        "# pconfig:\n"
        f"#     id: '{section_id}_table'\n"
        "#     col1_header: 'study | dataset | model | split | metric'\n"
    )
    with atomic_path(path) as tmp:
        with tmp.open("w") as fh:
            fh.write(header)
            table.to_csv(fh, sep="\t", index=False, na_rep="")
    return Path(path)


def study_metrics_mqc(metrics: pd.DataFrame, study: str, path: str | os.PathLike[str]) -> Path:
    """`<study>_metrics_mqc.tsv` as NEXTFLOW.md asks each study to write."""
    return write_mqc_table(
        metrics,
        path,
        section_id=f"txrepro_{study}_metrics",
        section_name=f"{study}: reproduced metrics",
        description=f"Every number computed by the {study} study, long format.",
        row_id_columns=("study", "dataset", "model", "split", "metric"),
    )


def installed_versions(packages: Sequence[str] = TRACKED_PACKAGES) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def read_versions_tsv(paths: Sequence[str | os.PathLike[str]]) -> dict[str, dict[str, str]]:
    """Collated Nextflow `versions` topic rows: process <tab> tool <tab> version."""
    out: dict[str, dict[str, str]] = {}
    for p in paths:
        for line in Path(p).read_text().splitlines():
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3 and parts[0]:
                out.setdefault(parts[0].split(":")[-1], {})[parts[1]] = parts[2]
    return out


def write_versions_yaml(versions: Mapping[str, Mapping[str, str]], path: str | os.PathLike[str]) -> Path:
    """`software_versions_mqc.yml`: an HTML custom-content section, one row per process and tool."""
    rows = "".join(
        f"<tr><td>{html.escape(proc)}</td><td>{html.escape(tool)}</td><td><samp>{html.escape(str(ver))}</samp></td></tr>"
        for proc, tools in sorted(versions.items())
        for tool, ver in sorted(tools.items())
    )
    content = {
        "id": "software_versions",
        "section_name": "Software versions",
        "description": "Versions reported by every process (Nextflow `versions` topic) or the in-process run.",
        "plot_type": "html",
        "data": f"<table class='table table-condensed'><thead><tr><th>Process</th><th>Software</th><th>Version</th></tr></thead><tbody>{rows}</tbody></table>",
    }
    return write_text(path, yaml.safe_dump(content, sort_keys=False))


def write_workflow_summary(params: Mapping[str, object], path: str | os.PathLike[str]) -> Path:
    """`workflow_summary_mqc.yml`: the parameters the run used."""
    items = "".join(f"<dt>{html.escape(str(k))}</dt><dd><samp>{html.escape(str(v))}</samp></dd>" for k, v in sorted(params.items()))
    content = {
        "id": "txrepro_workflow_summary",
        "section_name": "Workflow summary",
        "description": "Parameters of this run.",
        "plot_type": "html",
        "data": f"<dl class='dl-horizontal'>{items}</dl>",
    }
    return write_text(path, yaml.safe_dump(content, sort_keys=False))


def run_multiqc(content_dir: str | os.PathLike[str], outdir: str | os.PathLike[str], config: str | os.PathLike[str] | None = None) -> Path:
    """Run MultiQC in a subprocess (it keeps global state) and return the HTML path."""
    outdir = Path(outdir)
    cmd = [sys.executable, "-m", "multiqc", str(content_dir), "-o", str(outdir), "-n", "multiqc_report.html", "-f", "--no-data-dir", "--quiet"]
    if config:
        cmd += ["-c", str(config)]
    env = dict(os.environ, MPLCONFIGDIR=str(outdir / ".mpl"))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    html_path = outdir / "multiqc_report.html"
    if res.returncode != 0 or not html_path.exists():
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TxreproError(f"MultiQC failed on {content_dir}: {tail[0]}")
    return html_path
