"""`txrepro reproduce drugseq`: prepare -> train -> analyse, the same functions the CLI steps call.

Parameters are the pipeline's `drugseq_*` keys. Without input paths the `test` profile runs on the
bundled fixture and `full` reports `not computed: data not provided` (the expression matrix is not
public).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from txrepro.errors import InputError
from txrepro.runtime import get_logger
from txrepro.studies.base import StudyRun, missing_data_run
from txrepro.studies.drugseq.params import AnalyseParams, TrainParams

if TYPE_CHECKING:  # torch-heavy modules load when a step runs, so `txrepro --help` stays fast
    from txrepro.studies.drugseq.data import DrugseqData

log = get_logger(__name__)

STUDY = "drugseq"
STEPS: tuple[str, ...] = ("fixture", "prepare", "train", "analyse")
PREFIX = "drugseq_"
# Input params -> load_inputs keyword.
INPUT_PARAMS = {
    "drugseq_h5ad": "h5ad", "drugseq_data_dir": "data_dir", "drugseq_expr": "expr", "drugseq_scores": "scores",
    "drugseq_labels": "labels", "drugseq_meta": "meta", "drugseq_wells": "wells", "drugseq_legacy_score": "legacy",
    "drugseq_clusters": "clusters",
}
# The fixture is 64 wells x 40 genes: a tiny model, and a larger learning rate so 30 epochs converge.
TEST_PROFILE = {
    "epochs": 60, "batch_size": 16, "lr": 5e-3, "d_model": 32, "nhead": 4, "num_layers": 1,
    "dim_feedforward": 64, "latent_dim": 8,
}


def _coerce(value: Any, like: Any, key: str) -> Any:
    """Nextflow passes command-line params as strings ('false' is truthy): coerce to the field's type."""
    if value is None or value == "":
        return None
    try:
        if isinstance(like, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(like, int) and not isinstance(like, bool):
            return int(value)
        if isinstance(like, float):
            return float(value)
    except (TypeError, ValueError):
        raise InputError(f"--{key}", key, f"a {type(like).__name__}", repr(value)) from None
    return value


def params_for(cls: type, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> Any:
    """A params dataclass from `drugseq_<field>` keys, over profile defaults, over the dataclass defaults."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        like = f.default
        value = params.get(PREFIX + f.name, defaults.get(f.name))
        value = _coerce(value, like, PREFIX + f.name) if like is not None and not isinstance(like, str) else value
        if value is not None and value != "":
            kwargs[f.name] = value
    return cls(**kwargs)


def check_analyse_params(data: DrugseqData, ap: AnalyseParams, tp: TrainParams) -> None:
    """Fail on analysis options before training, not after it."""
    from txrepro.studies.drugseq.importance import target_selector
    from txrepro.studies.drugseq.latent import control_mask

    target_selector(ap.gradinput_target, 3, tp.latent_dim)
    control_mask(data, ap.control, ap.dmso_cluster)


def prepare(out: str | os.PathLike[str], *, data_source: str, control: str, legacy_lookup: str = "auto", **inputs: Any) -> tuple[Path, DrugseqData]:
    from txrepro.studies.drugseq.data import load_inputs, write_prepared

    data = load_inputs(control=control, legacy_lookup=legacy_lookup, **inputs)  # type: ignore[arg-type]
    log.info("drugseq inputs: %d wells x %d genes, %d %s wells, legacy score: %s", data.n_wells, len(data.genes),
             int((data.meta_id == control).sum()), control, data.provenance.get("legacy_file") or "none")
    return write_prepared(data, out, data_source), data


def reproduce(outdir: Path, *, profile: str, params: dict[str, Any]) -> StudyRun:
    outdir = Path(outdir)
    if params.get("device") and not params.get("drugseq_device"):  # the pipeline's global --device
        params = {**params, "drugseq_device": params["device"]}
    inputs = {kw: params[k] for k, kw in INPUT_PARAMS.items() if params.get(k)}
    if not inputs:
        if profile == "full":
            log.warning("drugseq: no input data given (drugseq_data_dir, drugseq_h5ad or the CSV paths); the matrix is not public")
            return missing_data_run(outdir, STUDY, params={k: v for k, v in params.items() if k.startswith(PREFIX)})
        from txrepro.fixtures.drugseq import write_fixture

        write_fixture(outdir / "fixture", seed=0)
        inputs, data_source = {"data_dir": outdir / "fixture"}, "fixture"
    else:
        data_source = "provided"
    defaults = TEST_PROFILE if profile == "test" else {}
    tp = params_for(TrainParams, params, defaults)
    ap = params_for(AnalyseParams, params, defaults)
    prepared, data = prepare(outdir / "prepared.h5ad", data_source=data_source, control=ap.control,
                             legacy_lookup=str(params.get("drugseq_legacy_lookup") or "auto"), **inputs)
    check_analyse_params(data, ap, tp)
    from txrepro.studies.drugseq.analyse import analyse
    from txrepro.studies.drugseq.train import train_model

    train_model(data, outdir / "model", tp)
    return analyse(prepared, outdir / "model", outdir, ap)
