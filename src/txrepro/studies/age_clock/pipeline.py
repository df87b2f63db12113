"""age_clock end to end: both protocols through prepare, train, baseline, evaluate, perturb, statistics.

`reproduce()` calls the same step functions as `bin/age_clock.py`, in the same order, and reads the
same `age_clock_*` parameters as the Nextflow pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from txrepro.errors import InputError
from txrepro.metrics.table import KEY_COLUMNS, MetricRow, not_computed, read_metrics
from txrepro.report.published import read_published
from txrepro.runtime import get_logger
from txrepro.studies.age_clock.config import DATASET, PROTOCOLS, STUDY, InputColumns, protocol_config
from txrepro.studies.base import StudyRun, finish_study, missing_data_run

log = get_logger(__name__)

STEPS: tuple[str, ...] = ("prepare", "train", "baseline", "evaluate", "perturb", "statistics", "finish")


@dataclass(frozen=True)
class Inputs:
    """Everything a run reads; one object for both protocols."""

    h5ad: Path
    checkpoint: Path
    reference: tuple[Path, ...] = ()
    degs: Path | None = None  # AgeAnno DEG table (repository genes); default: bundled
    age_genes: Path | None = None  # 869-gene list (article genes); default: bundled
    columns: InputColumns = InputColumns()
    tissues: tuple[str, ...] = ()
    verify_manifest: bool = False
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)  # AgeClockConfig fields for every protocol


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _list(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


def selected_protocols(params: Mapping[str, Any]) -> tuple[str, ...]:
    chosen = _list(params.get("age_clock_protocol", "repository,article"))
    chosen = PROTOCOLS if chosen in (("all",), ("both",)) else chosen
    for p in chosen:
        if p not in PROTOCOLS:
            raise InputError("age_clock_protocol", "age_clock_protocol", f"a comma list of {', '.join(PROTOCOLS)}", repr(p))
    return tuple(p for p in PROTOCOLS if p in chosen)


def config_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """AgeClockConfig fields set by age_clock_* parameters (None = the protocol's value)."""
    def num(name: str, cast):  # noqa: ANN001, ANN202
        v = params.get(name)
        return None if v in (None, "") else cast(v)

    out: dict[str, Any] = {
        "seed": num("age_clock_seed", int),
        "epochs": num("age_clock_epochs", int),
        "n_runs": num("age_clock_runs", int),
        "perturb_mode": params.get("age_clock_perturb_mode") or None,
        "perturb_pooling": params.get("age_clock_perturb_pooling") or None,
    }
    if _flag(params.get("age_clock_select_on_test", False)):
        out["select_on_test"] = True
    if _flag(params.get("age_clock_no_shuffle", False)):
        out["shuffle"] = False
    if _flag(params.get("age_clock_random_genes", False)):
        out["gene_source"] = "random"
    return {k: v for k, v in out.items() if v is not None}


def inputs_from_params(params: Mapping[str, Any], h5ad: Path, checkpoint: Path, reference: Sequence[Path], *, verify_default: bool = False) -> Inputs:
    def opt(name: str) -> str | None:
        v = params.get(name)
        return None if v in (None, "") else str(v)

    columns = InputColumns(
        age=opt("age_clock_age_column") or "age",
        tissue=opt("age_clock_tissue_column") or "tissue",
        donor=opt("age_clock_donor_column") or "donor",
        cell_id=opt("age_clock_cell_id_column"),
        gene=opt("age_clock_gene_column"),
        layer=opt("age_clock_layer"),
        split=opt("age_clock_split_column"),
    )
    return Inputs(
        h5ad=Path(h5ad),
        checkpoint=Path(checkpoint),
        reference=tuple(Path(r) for r in reference),
        degs=Path(params["age_clock_degs"]) if opt("age_clock_degs") else None,
        age_genes=Path(params["age_clock_age_genes"]) if opt("age_clock_age_genes") else None,
        columns=columns,
        tissues=_list(params.get("age_clock_tissues")),
        verify_manifest=_flag(params.get("age_clock_verify_checksums", verify_default)),
        device=str(params.get("age_clock_device") or "auto"),
        overrides=config_overrides(params),
    )


def run_protocol(protocol: str, outdir: Path, inputs: Inputs, scale: str) -> dict[str, Any]:
    """One protocol through every step; returns its metrics files and figures."""
    from txrepro.studies.age_clock.data import prepare
    from txrepro.studies.age_clock.evaluate import evaluate
    from txrepro.studies.age_clock.perturb import perturb
    from txrepro.studies.age_clock.statistics import statistics
    from txrepro.studies.age_clock.train import train_logreg, train_scgpt

    cfg = protocol_config(protocol, scale=scale, overrides=inputs.overrides)
    out = outdir / protocol
    gene_table = inputs.degs if cfg.gene_source == "ageanno_degs" else inputs.age_genes if cfg.gene_source == "age_genes_869" else None
    log.info("--- age_clock %s protocol (%s scale) ---", protocol, scale)
    prepared = prepare(inputs.h5ad, inputs.checkpoint, out / "prepared.h5ad", cfg, inputs.columns, gene_table=gene_table, tissues=inputs.tissues or None)
    model = train_scgpt(prepared, inputs.checkpoint, out / "model", verify_manifest=inputs.verify_manifest, device=inputs.device)
    logreg = train_logreg(prepared, out / "logreg_l1.pkl")
    ev = evaluate(prepared, model, logreg, out / "evaluate", device=inputs.device)
    table = perturb(prepared, model, out / "perturbation.parquet", device=inputs.device)
    st = statistics(table, out / "statistics", reference=inputs.reference)
    return {"metrics": [ev["metrics"], st["metrics"]], "figures": [ev["roc"], ev["tissue_auc"], st["volcano"], st["stability"]]}


def collect(
    outdir: Path,
    metrics_files: Sequence[Path],
    *,
    figures: Sequence[Path] = (),
    data_source: str,
    protocols: Sequence[str] = PROTOCOLS,
    inputs: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> StudyRun:
    """metrics.tsv of the study: every step's rows, and `not computed` for published numbers of a
    protocol that was not run."""
    frames = [read_metrics(p) for p in metrics_files]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    rows = [MetricRow(**{k: (None if k == "n" and pd.isna(v) else v) for k, v in r.items()}) for r in df.to_dict("records")]
    have = {tuple(r[k] for k in KEY_COLUMNS) for r in df.to_dict("records")}
    pub = read_published()
    for r in pub[pub["study"] == STUDY].itertuples(index=False):
        if (r.study, r.dataset, r.model, r.split, r.metric) not in have:
            protocol = r.model.rsplit("_", 1)[-1]
            reason = "protocol not selected" if protocol not in protocols else "missing from the run"
            rows.append(not_computed(STUDY, r.dataset, r.model, r.split, r.metric, reason))
    return finish_study(outdir, STUDY, rows, data_source=data_source, figures=figures, inputs=inputs, params=params)  # type: ignore[arg-type]


def reproduce(outdir: Path, *, profile: str, params: Mapping[str, Any]) -> StudyRun:
    outdir = Path(outdir)
    protocols = selected_protocols(params)
    h5ad, checkpoint = params.get("age_clock_input"), params.get("age_clock_checkpoint")
    reference = [Path(p) for p in _list(params.get("age_clock_reference_genes"))]
    if h5ad and checkpoint:
        data_source = "provided"
    elif profile == "full":
        return missing_data_run(outdir, STUDY, params=dict(params))
    else:
        from txrepro.fixtures.age_clock import write_fixture

        fx = write_fixture(outdir / "fixture", seed=int(params.get("age_clock_seed") or 0))
        h5ad, checkpoint = fx["h5ad"], fx["checkpoint"]
        reference = reference or [fx["reference_genes"]]
        data_source = "fixture"
    scale = str(params.get("age_clock_scale") or ("tiny" if profile == "test" else "full"))
    # The manifest knows scGPT whole-human: check it on real runs, never on the fixture checkpoint.
    inputs = inputs_from_params(params, Path(h5ad), Path(checkpoint), reference, verify_default=profile == "full")
    metrics: list[Path] = []
    figures: list[Path] = []
    for protocol in protocols:
        res = run_protocol(protocol, outdir, inputs, scale)
        metrics += res["metrics"]
        figures += res["figures"]
    recorded = {"input": str(h5ad), "checkpoint": str(checkpoint), "reference_genes": ",".join(map(str, reference))}
    return collect(outdir, metrics, figures=figures, data_source=data_source, protocols=protocols, inputs=recorded, params={**dict(params), "age_clock_scale": scale, "dataset": DATASET})
