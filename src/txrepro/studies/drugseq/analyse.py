"""The analyse step: predictions, validation metrics, latent rankings, Grad x Input, figures.

One step because every part needs the same trained model and prepared matrix; it ends the study
with `finish_study` (metrics.tsv, the MultiQC table, run_info.json).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from txrepro.io.atomic import atomic_path
from txrepro.metrics.table import MetricRow
from txrepro.runtime import get_logger, resolve_device
from txrepro.studies.base import StudyRun, finish_study
from txrepro.studies.drugseq import figures as figs
from txrepro.studies.drugseq.data import read_prepared
from txrepro.studies.drugseq.evaluate import MODEL, STUDY, load_trained, predict, predictions_table, validation_metrics
from txrepro.studies.drugseq.importance import grad_x_input, importance_table, target_selector
from txrepro.studies.drugseq.params import AnalyseParams
from txrepro.studies.drugseq.latent import control_mask, distances_to_control, latent_norm_scores, rank_metabolites

log = get_logger(__name__)


def _csv(df: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def summary_metrics(ranking: pd.DataFrame, importance: pd.DataFrame, n_centre: int, dataset: str, control: str, target: str) -> list[MetricRow]:
    """A few numbers that summarise the rankings (they are tables first; these are for the report)."""
    metas = ranking[ranking["meta_id"] != control]
    beyond = metas["beyond_control_p95"]
    p95 = float(ranking.attrs["control_p95"])
    share = float(importance["GradInputImportance"].head(10).sum() / importance["GradInputImportance"].sum())
    return [
        MetricRow(STUDY, dataset, MODEL, "all", "control_centre_wells", float(n_centre), n_centre, f"{control} wells averaged into the latent centre"),
        MetricRow(STUDY, dataset, MODEL, "all", "fraction_metabolites_beyond_control_p95", float(beyond.mean()), len(metas),
                  f"metabolites whose mean latent distance to the {control} centre exceeds the 95th percentile of {control} wells"),
        MetricRow(STUDY, dataset, MODEL, "all", "top_metabolite_distance_over_control_p95", float(metas["euclidean_mean"].iloc[0] / p95), len(metas),
                  f"largest mean distance ({metas['meta_id'].iloc[0]}) in units of the {control} 95th percentile"),
        MetricRow(STUDY, dataset, MODEL, "all", "gradinput_top10_share", share, len(importance),
                  f"share of summed Grad x Input importance ({target}) held by the 10 top genes"),
    ]


def analyse(prepared: str | os.PathLike[str], model_dir: str | os.PathLike[str], outdir: str | os.PathLike[str], params: AnalyseParams) -> StudyRun:
    out = Path(outdir)
    fig_dir = out / "figures"
    device = resolve_device(params.device)
    data, data_source = read_prepared(prepared)
    trained = load_trained(model_dir, params.checkpoint, device)  # type: ignore[arg-type]
    cfg = trained.config["model"]
    select = target_selector(params.gradinput_target, cfg["n_scores"], cfg["latent_dim"])  # checked before long work
    centre = control_mask(data, params.control, params.dmso_cluster)
    x = trained.model_input(data)

    pred = predict(trained.model, x, params.batch_size, device)
    table = predictions_table(data, pred, trained.split)
    for j in range(pred["latent"].shape[1]):
        table[f"latent_{j}"] = pred["latent"][:, j]
    _csv(table, out / "well_predictions_results.csv")
    rows = validation_metrics(table, params.dataset, trained.config["best_epoch"], trained.config["best_val_loss"])

    wells_norm, meta_norm = latent_norm_scores(pred["latent"], data)
    _csv(wells_norm, out / "well_activation_scores.csv")
    _csv(meta_norm, out / "metabolite_activation_scores.csv")
    distances, _, _ = distances_to_control(pred["latent"], data, centre, pred["act"])
    _csv(distances, out / "latent_scores.csv")
    ranking = rank_metabolites(distances, params.control)
    _csv(ranking, out / "metabolite_dmso_distance.csv")

    log.info("Grad x Input on %d wells, target %s", data.n_wells, params.gradinput_target)
    saliency = grad_x_input(trained.model, x, select, params.batch_size, device)
    importance = importance_table(saliency, data.genes)
    _csv(importance, out / "gene_importance_gradinput.csv")
    rows += summary_metrics(ranking, importance, int(centre.sum()), params.dataset, params.control, params.gradinput_target)

    history = pd.read_csv(Path(model_dir) / "history_loss_detailed.csv")
    figures = [
        figs.loss_curves(history, trained.config["best_epoch"], fig_dir / "drugseq_loss_curves.png"),
        figs.latent_pca(pred["latent"], data.label, data.meta_id == params.control, fig_dir / "drugseq_latent_pca.png", params.control),
        figs.top_metabolites(ranking, params.control, fig_dir / "drugseq_top_metabolites.png", params.top_n),
        figs.top_genes(importance, params.gradinput_target, fig_dir / "drugseq_top_genes.png", params.top_n),
    ]
    prov = data.provenance
    inputs = {f"input_{k}": v for k, v in dict(prov.get("files", {})).items()}
    inputs["legacy_score"] = str(prov.get("legacy_file") or "not used")
    inputs["model"] = f"{Path(model_dir)} (model_{params.checkpoint}.pt)"
    for i, note in enumerate(np.atleast_1d(prov.get("notes", [])).tolist()):
        inputs[f"note_{i + 1}"] = str(note)
    run_params = {**asdict(params), "train": trained.config["train"], "model": cfg}
    return finish_study(out, STUDY, rows, data_source=data_source, figures=figures, inputs=inputs, params=run_params)  # type: ignore[arg-type]
