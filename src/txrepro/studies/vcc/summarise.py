"""summarise: every model's evaluation -> overall scores, metrics.tsv, figures.

Scores need the cell-mean run: the project evaluator's overall score is scaled against this
run's own cell-mean row (`overall_score`) and, as my_cell_eval3.py literally did, against the
published cell-mean triple (`overall_score_published_baseline`); the official score is
cell_eval.score_agg_metrics against the cell-mean run's aggregate table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from txrepro.errors import InputError
from txrepro.metrics.baseline_score import VCC_DIRECTIONS, overall_score
from txrepro.metrics.table import MetricRow, metrics_frame, not_computed
from txrepro.report.published import published_value, read_published
from txrepro.runtime import get_logger
from txrepro.studies.base import StudyRun, finish_study
from txrepro.studies.vcc.evaluate import CELL_EVAL_METRICS
from txrepro.studies.vcc.figures import metrics_vs_published, pds_rank_heatmap
from txrepro.studies.vcc.models import PLANNED, PREDICTORS
from txrepro.studies.vcc.params import DATASET, SPLIT

log = get_logger(__name__)

STUDY = "vcc"
BASELINE = "cell_mean"
PROJECT_NOTE = "project evaluator (my_cell_eval3.py definitions)"
OFFICIAL_NOTE = "official evaluator (cell-eval 'vcc' profile)"


def _find_evaluations(paths: Iterable[str | Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in map(Path, paths):
        files = sorted(p.glob("*_eval.json")) if p.is_dir() else [p]
        for f in files:
            if not f.is_file() or not f.name.endswith("_eval.json"):
                raise InputError(f, "evaluation", "a <model>_eval.json written by `vcc.py evaluate` (or its folder)", "nothing usable")
            found[f.name[: -len("_eval.json")]] = f
    if not found:
        raise InputError(", ".join(map(str, paths)) or "--evaluations", "evaluations", "at least one <model>_eval.json", "none")
    return found


NOT_COMPARABLE = "NOT COMPARABLE with the published row"
ALTERNATIVE = "alternative design, not in the published table (the published ridge / random forest used the one-hot design)"


def _row(dataset: str, model: str, metric: str, value: float, n: int | None, notes: str) -> MetricRow:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return not_computed(STUDY, dataset, model, SPLIT, metric, f"no finite value ({notes})")
    return MetricRow(STUDY, dataset, model, SPLIT, metric, float(value), n, notes)


def row_label(model: str, ev: Mapping[str, Any]) -> str:
    """The model name of a model's rows: `<model>_not_comparable` when its run cannot stand beside
    the published row (STATE without perturbation features), so the report cannot pair them."""
    return f"{model}_not_comparable" if ev.get("model_info", {}).get("not_comparable") else model


def model_note(model: str, ev: Mapping[str, Any]) -> str:
    """What every row of a model says after the evaluator: its features and comparability."""
    info = ev.get("model_info", {})
    parts = []
    if info.get("not_comparable"):
        parts.append(f"{NOT_COMPARABLE} ({model}): {info['not_comparable']}")
    if model.endswith("_features"):
        parts.append(ALTERNATIVE)
    if info.get("features"):
        parts.append(str(info["features"]))
    return "; ".join(parts)


def score_rows(evals: Mapping[str, dict[str, Any]], agg: Mapping[str, pl.DataFrame], *, dataset: str = DATASET,
               published: bool = True, baseline: str = BASELINE, baseline_note: str = "this run's cell_mean",
               no_baseline: str = "cell_mean baseline not run in this pipeline") -> list[MetricRow]:
    """Both evaluators' rows for every model. `published`: the run is on the published dataset, so
    the published cell-mean triple may serve as the baseline the original hard-coded. `baseline`:
    which of `evals` the overall scores are scaled against."""
    from cell_eval import score_agg_metrics

    rows: list[MetricRow] = []
    base = evals.get(baseline)
    pub_base = {m: published_value(STUDY, DATASET, BASELINE, SPLIT, m) for m in VCC_DIRECTIONS} if published else None
    for model, ev in evals.items():
        proj, ce = ev["project"], ev["cell_eval"]
        n = int(ev["n_perturbations"])
        label = row_label(model, ev)
        extra = model_note(model, ev)
        note = f"{PROJECT_NOTE}; {extra}" if extra else PROJECT_NOTE
        rows.append(_row(dataset, label, "DES", proj["DES"], int(proj.get("n_DES", n)), note + "; mean over perturbations with real DE genes"))
        rows.append(_row(dataset, label, "PDS", proj["PDS"], n, note + "; cosine, target gene kept"))
        rows.append(_row(dataset, label, "MAE", proj["MAE"], n, note + "; top 2,000 genes by mean |real effect|"))
        if base is not None:
            rows.append(_row(dataset, label, "overall_score", overall_score(proj, base["project"]), n, note + f"; baseline: {baseline_note}"))
        else:
            rows.append(not_computed(STUDY, dataset, label, SPLIT, "overall_score", no_baseline))
        if pub_base is not None:
            rows.append(_row(dataset, label, "overall_score_published_baseline", overall_score(proj, pub_base), n,
                             note + "; baseline: the published cell-mean DES/PDS/MAE, as the original hard-coded it"))
        else:
            rows.append(not_computed(STUDY, dataset, label, SPLIT, "overall_score_published_baseline",
                                     f"the published cell-mean triple is a baseline of the published dataset ({DATASET}) only"))
        ce_note = f"{OFFICIAL_NOTE}; {extra}" if extra else OFFICIAL_NOTE
        for m in CELL_EVAL_METRICS:
            rows.append(_row(dataset, label, f"cell_eval_{m}", ce[m], n, ce_note))
        if base is not None:
            scored = score_agg_metrics(agg[model], agg[baseline])
            avg = scored.filter(pl.col("metric") == "avg_score")["from_baseline"][0]
            rows.append(_row(dataset, label, "cell_eval_overall_score", 100.0 * float(avg), n, ce_note + f"; score_agg_metrics vs {baseline_note}"))
        else:
            rows.append(not_computed(STUDY, dataset, label, SPLIT, "cell_eval_overall_score", no_baseline))
    return rows


def missing_model_rows(evaluated: Iterable[str], selected: Iterable[str] | None, not_run: Mapping[str, str] | None = None) -> list[MetricRow]:
    """`not computed` for every published vcc number of a model this run did not evaluate.

    `not_run` gives the reason for models that were selected but could not run (scGPT without a
    checkpoint) or whose rows are not comparable. Only for a run on the published dataset: on other
    data the report itself says the published dataset was not in the run."""
    pub = read_published()
    pub = pub[pub["study"] == STUDY]
    done, chosen = set(evaluated), set(selected) if selected is not None else None
    rows = []
    for r in pub.itertuples(index=False):
        if r.model in done:
            continue
        if not_run and r.model in not_run and (chosen is None or r.model in chosen):
            reason = not_run[r.model]
        elif r.model in PLANNED:
            reason = PLANNED[r.model]
        elif r.model in PREDICTORS and chosen is not None and r.model not in chosen:
            reason = "model not selected (vcc_models)"
        else:
            reason = "model not evaluated in this run"
        rows.append(not_computed(STUDY, r.dataset, r.model, r.split, r.metric, reason))
    return rows


def run_dataset(evals: Mapping[str, dict[str, Any]]) -> tuple[str, bool]:
    """The one dataset every evaluation was made on (from prepare, through evaluate)."""
    names = {(str(ev.get("dataset") or DATASET), bool(ev.get("published_dataset", (ev.get("dataset") or DATASET) == DATASET)))
             for ev in evals.values()}
    if len(names) != 1:
        raise InputError("--evaluations", "dataset", "evaluations of one prepared dataset", ", ".join(sorted(n for n, _ in names)))
    return names.pop()


def scgpt_not_run(params: Mapping[str, Any]) -> dict[str, str]:
    """Why the scGPT rows were not run under these vcc_* params (empty when they could run)."""
    from txrepro.studies.vcc.params import SCGPT_MODELS, VccRunParams
    from txrepro.studies.vcc.scgpt_perturb import unavailable_reason

    rp = VccRunParams.from_params(params)
    why = unavailable_reason(rp.scgpt_checkpoint, rp.scgpt_allow_random_init)
    return {m: why for m in SCGPT_MODELS} if why else {}


def summarise(
    evaluations: Iterable[str | Path],
    outdir: str | Path,
    *,
    data_source: str = "provided",
    selected_models: Iterable[str] | None = None,
    inputs: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    not_run: Mapping[str, str] | None = None,
) -> StudyRun:
    """`not_run`: model -> why it was not run; by default derived from `params` (scGPT rows without
    a checkpoint, as the Nextflow workflow skips them)."""
    outdir = Path(outdir)
    if not_run is None:
        not_run = scgpt_not_run(params or {})
    files = _find_evaluations(evaluations)
    order = [m for m in PREDICTORS if m in files] + sorted(m for m in files if m not in PREDICTORS)
    evals = {m: json.loads(files[m].read_text()) for m in order}
    agg: dict[str, pl.DataFrame] = {}
    per: dict[str, pd.DataFrame] = {}
    for m, f in ((m, files[m]) for m in order):
        agg_file = f.with_name(f"{m}_cell_eval_agg.csv")
        per_file = f.with_name(f"{m}_per_perturbation.tsv")
        for needed in (agg_file, per_file):
            if not needed.is_file():
                raise InputError(needed.parent, needed.name, f"the files `vcc.py evaluate` writes beside {f.name}", "missing")
        agg[m] = pl.read_csv(agg_file)
        per[m] = pd.read_csv(per_file, sep="\t")
    dataset, published = run_dataset(evals)
    not_run = dict(not_run or {})
    for m, ev in evals.items():
        if row_label(m, ev) != m:
            not_run[m] = f"{NOT_COMPARABLE}: {ev['model_info']['not_comparable']}; this run's numbers are under {row_label(m, ev)}"
    rows = score_rows(evals, agg, dataset=dataset, published=published)
    if published:
        rows += missing_model_rows([row_label(m, ev) for m, ev in evals.items()], selected_models, not_run)
    else:
        log.info("vcc: dataset %s is not the published one: no published numbers are compared", dataset)
    df = metrics_frame(rows)
    pub = read_published()
    pub = pub[pub["study"] == STUDY]
    outdir.mkdir(parents=True, exist_ok=True)
    # published bars only beside numbers of the published dataset
    figures = [metrics_vs_published(df, pub if published else pub.iloc[0:0], outdir / "vcc_metrics_vs_published.png", data_source=data_source)]
    ranks = pd.DataFrame({row_label(m, evals[m]): per[m].set_index("perturbation")["PDS_rank"] for m in order})
    figures.append(pds_rank_heatmap(ranks, outdir / "vcc_pds_rank_heatmap.png"))
    run = finish_study(outdir, STUDY, rows, data_source=data_source, figures=figures, inputs=inputs, params=params)  # type: ignore[arg-type]
    log.info("vcc summary: %d metric rows for %s", len(df), ", ".join(order))
    return run
