"""evaluate: P(old) for the test cells from scGPT and the logistic baseline, metrics overall and per tissue.

Positive class = old-age (label 1) in every metric; a cell is called old when P(old) >= 0.5.
Metrics come from scikit-learn. Model names in metrics.tsv: `scgpt_<protocol>` and
`logreg_l1_<protocol>`, matching assets/published_metrics.tsv.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score

from txrepro.io.atomic import atomic_path
from txrepro.metrics.table import MetricRow, not_computed, write_metrics
from txrepro.runtime import get_logger, resolve_device, seed_everything
from txrepro.studies.age_clock.config import DATASET, POSITIVE_CLASS, STUDY
from txrepro.studies.age_clock.data import read_prepared
from txrepro.studies.age_clock.model import load_classifier, token_batch
from txrepro.studies.age_clock.train import load_logreg, predict_logit_old

log = get_logger(__name__)

PREDICTION_COLUMNS = ("cell_id", "tissue", "donor", "age_group", "label", "model", "p_old")
CORE_METRICS = ("accuracy", "precision", "recall", "roc_auc")


def model_name(kind: str, protocol: str) -> str:
    return f"{'scgpt' if kind == 'scgpt' else 'logreg_l1'}_{protocol}"


def tissue_slug(tissue: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", tissue.lower()).strip("_")


def classification_metrics(labels: np.ndarray, p_old: np.ndarray) -> dict[str, float]:
    """accuracy, precision, recall (positive = old, P >= 0.5) and ROC-AUC; NaN when undefined."""
    labels = np.asarray(labels).astype(int)
    called = (np.asarray(p_old) >= 0.5).astype(int)
    both = len(np.unique(labels)) == 2
    return {
        "accuracy": float(accuracy_score(labels, called)),
        "precision": float(precision_score(labels, called, pos_label=1, zero_division=np.nan)),
        "recall": float(recall_score(labels, called, pos_label=1, zero_division=np.nan)) if labels.any() else math.nan,
        "roc_auc": float(roc_auc_score(labels, p_old)) if both else math.nan,
    }


def _test_frame(adata) -> pd.DataFrame:
    test = adata.obs["split"].to_numpy() == "test"
    frame = adata.obs.loc[test, ["cell_id", "tissue", "donor", "age_group", "label"]].reset_index(drop=True)
    return frame.astype({"cell_id": str, "tissue": str, "donor": str, "age_group": str}), test


def predict_scgpt(prepared: str | os.PathLike[str], model_dir: str | os.PathLike[str], *, device: str = "auto") -> pd.DataFrame:
    adata, info, cfg = read_prepared(prepared)
    device = resolve_device(device)
    seed_everything(cfg.seed)
    model, vocab, mcfg, meta = load_classifier(model_dir)
    model.to(device)
    frame, test = _test_frame(adata)
    src, values = token_batch(adata.var["vocab_id"].to_numpy(), adata.layers["binned"][test], vocab["<cls>"])
    z = predict_logit_old(model, src, values, mcfg.eval_batch_size, device)
    frame["model"] = model_name("scgpt", mcfg.protocol)
    frame["p_old"] = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    return frame


def predict_logreg(prepared: str | os.PathLike[str], logreg_path: str | os.PathLike[str]) -> pd.DataFrame:
    adata, info, cfg = read_prepared(prepared)
    obj = load_logreg(logreg_path)
    if list(obj["genes"]) != list(adata.var_names):
        from txrepro.errors import InputError

        raise InputError(logreg_path, "genes", "the genes of the prepared file it is applied to")
    frame, test = _test_frame(adata)
    x = adata.layers["log_norm"][test]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    frame["model"] = model_name("logreg", cfg.protocol)
    frame["p_old"] = obj["model"].predict_proba(obj["scaler"].transform(x))[:, list(obj["model"].classes_).index(1)]
    return frame


def metric_rows(pred: pd.DataFrame, note: str) -> list[MetricRow]:
    """Overall and per-tissue metrics of one model's predictions, plus the mean of tissue AUCs."""
    model = str(pred["model"].iloc[0])
    rows: list[MetricRow] = []

    def add(metric: str, value: float, n: int, extra: str = "") -> None:
        text = "; ".join(t for t in (note, extra) if t)
        if math.isnan(value):
            rows.append(not_computed(STUDY, DATASET, model, "test", metric, f"undefined on these cells ({extra or 'one class only'})"))
        else:
            rows.append(MetricRow(STUDY, DATASET, model, "test", metric, value, n, text))

    for metric, value in classification_metrics(pred["label"].to_numpy(), pred["p_old"].to_numpy()).items():
        add(metric, value, len(pred), "all test cells")
    aucs = []
    for tissue, sub in pred.groupby("tissue", sort=True):
        slug = tissue_slug(str(tissue))
        values = classification_metrics(sub["label"].to_numpy(), sub["p_old"].to_numpy())
        for metric, value in values.items():
            add(f"{metric}_tissue_{slug}", value, len(sub), f"tissue {tissue}")
        if not math.isnan(values["roc_auc"]):
            aucs.append(values["roc_auc"])
    n_tissues = pred["tissue"].nunique()
    add("roc_auc_mean_tissues", float(np.mean(aucs)) if len(aucs) == n_tissues else math.nan, len(pred), f"mean of {n_tissues} per-tissue ROC-AUCs")
    return rows


def evaluate(
    prepared: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    logreg_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
) -> dict[str, Path]:
    """predictions.tsv, metrics_evaluate.tsv, ROC and per-tissue AUC figures."""
    from txrepro.studies.age_clock.figures import plot_roc, plot_tissue_auc

    out_dir = Path(out_dir)
    _, info, cfg = read_prepared(prepared)
    preds = pd.concat([predict_scgpt(prepared, model_dir, device=device), predict_logreg(prepared, logreg_path)], ignore_index=True)
    _, _, mcfg, meta = load_classifier(model_dir)
    selection = (
        f"best epoch {meta.get('best_epoch')} chosen on the test cells (original behaviour: optimistic)"
        if meta.get("selected_on") == "test"
        else f"best epoch {meta.get('best_epoch')} chosen on validation cells"
    )
    base = f"{cfg.protocol} protocol; positive class {POSITIVE_CLASS}-age; called old when P(old) >= 0.5"
    rows: list[MetricRow] = []
    for model, pred in preds.groupby("model", sort=False):
        note = f"{base}; {selection}" if str(model).startswith("scgpt") else f"{base}; L1 logistic regression on the same genes"
        rows += metric_rows(pred.reset_index(drop=True), note)
    paths = {"predictions": out_dir / "predictions.tsv", "metrics": out_dir / "metrics_evaluate.tsv"}
    with atomic_path(paths["predictions"]) as tmp:
        preds.loc[:, list(PREDICTION_COLUMNS)].to_csv(tmp, sep="\t", index=False)
    write_metrics(rows, paths["metrics"])
    paths["roc"] = plot_roc(preds, cfg.protocol, out_dir / f"age_clock_{cfg.protocol}_roc.png")
    paths["tissue_auc"] = plot_tissue_auc(preds, cfg.protocol, out_dir / f"age_clock_{cfg.protocol}_tissue_auc.png")
    for r in rows:
        if r.metric in CORE_METRICS + ("roc_auc_mean_tissues",):
            log.info("%s %s = %.4f", r.model, r.metric, r.value)
    return paths
