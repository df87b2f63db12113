"""Load a trained model, predict every well, and score the validation split.

The original computed no metric beyond the loss curves; R2 per score and AUC/accuracy for the
label are our additions (studies.md drugseq section 3) and every row says so in its notes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

from txrepro.errors import InputError
from txrepro.metrics.table import MetricRow, not_computed
from txrepro.studies.drugseq.data import SCORE_COLUMNS, DrugseqData
from txrepro.studies.drugseq.model import GeneTransformerMultiTask, ModelConfig
from txrepro.studies.drugseq.train import apply_zscore

STUDY = "drugseq"
MODEL = "dpf_transformer"
ADDITION = "addition: the original code computed no validation metric (only loss curves)"
Which = Literal["best", "last"]


@dataclass
class TrainedModel:
    model: GeneTransformerMultiTask
    config: dict
    split: pd.Series  # well_id -> train/val
    zscore: tuple[np.ndarray, np.ndarray] | None

    def model_input(self, data: DrugseqData) -> np.ndarray:
        """The matrix the model was trained on: genes checked, z-scored with training statistics."""
        if list(data.genes) != list(self.config["genes"]):
            raise InputError("prepared data", "genes", "the genes the model was trained on, in the same order",
                             f"{len(data.genes)} genes ({data.genes[:3]}...)")
        return apply_zscore(data.expr, *self.zscore) if self.zscore is not None else data.expr


def load_trained(model_dir: str | os.PathLike[str], which: Which = "best", device: str = "cpu") -> TrainedModel:
    d = Path(model_dir)
    ckpt = d / f"model_{which}.pt"
    for p in (d / "config.json", ckpt, d / "split.csv"):
        if not p.is_file():
            raise InputError(p, "trained model", "the output folder of `drugseq.py train`", "nothing at this path")
    config = json.loads((d / "config.json").read_text())
    model = GeneTransformerMultiTask(ModelConfig(**config["model"]))
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    model.to(device).eval()
    split = pd.read_csv(d / "split.csv", dtype=str).set_index("well_id")["split"]
    zscore = None
    if config.get("zscore"):
        sc = pd.read_csv(d / "gene_scaler.csv")
        zscore = (sc["mean"].to_numpy(np.float32), sc["std"].to_numpy(np.float32))
    return TrainedModel(model, config, split, zscore)


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray, batch_size: int = 32, device: str = "cpu") -> dict[str, np.ndarray]:
    """Head outputs for every row of x, in eval mode (no dropout; the fused attention kernel)."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), batch_size):
        out = model(torch.from_numpy(x[start:start + batch_size]).to(device))
        for k, v in out.items():
            parts.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def predictions_table(data: DrugseqData, pred: dict[str, np.ndarray], split: pd.Series) -> pd.DataFrame:
    """Per-well true and predicted values; score columns named from the file's header, not assumed."""
    prob = 1.0 / (1.0 + np.exp(-pred["logit"].astype(np.float64)))
    df = pd.DataFrame({
        "well_id": data.well_id,
        "meta_id": data.meta_id,
        "split": split.reindex(data.well_id).to_numpy(),
        "label_true": data.label,
        "label_logit": pred["logit"],
        "label_prob": prob,
        "label_pred": (prob > 0.5).astype(int),
        "activation_pred": pred["act"],
    })
    if data.legacy is not None:
        df["activation_score_old_true"] = data.legacy
    for j, c in enumerate(SCORE_COLUMNS):
        df[f"{c}_true"] = data.scores[:, j]
        df[f"{c}_pred"] = pred["scores3"][:, j]
    if data.cluster is not None:
        df["cluster_id"] = data.cluster
    return df


def validation_metrics(pred_table: pd.DataFrame, dataset: str, best_epoch: int, best_val_loss: float) -> list[MetricRow]:
    """R2 per score, ROC-AUC and accuracy of the label on the validation wells."""
    val = pred_table[pred_table["split"] == "val"]
    n = len(val)

    def f64(col: str) -> np.ndarray:  # sklearn computes in the input dtype; predictions are float32
        return val[col].to_numpy(dtype=np.float64)

    rows = [
        MetricRow(STUDY, dataset, MODEL, "val", f"r2_{c}", float(r2_score(f64(f"{c}_true"), f64(f"{c}_pred"))), n, ADDITION)
        for c in SCORE_COLUMNS
    ]
    if val["label_true"].nunique() == 2:
        rows.append(MetricRow(STUDY, dataset, MODEL, "val", "roc_auc_label", float(roc_auc_score(val["label_true"], f64("label_prob"))), n,
                              ADDITION + "; positive class activated (label 1)"))
    else:
        rows.append(not_computed(STUDY, dataset, MODEL, "val", "roc_auc_label", "validation split holds one class only"))
    rows.append(MetricRow(STUDY, dataset, MODEL, "val", "accuracy_label", float(accuracy_score(val["label_true"], val["label_pred"])), n,
                          ADDITION + "; threshold 0.5 on sigmoid(logit)"))
    rows.append(MetricRow(STUDY, dataset, MODEL, "val", "best_val_total_loss", float(best_val_loss), n,
                          "validation total loss (MSE + BCE + lambda x REG) at the best epoch, as the original logged it"))
    rows.append(MetricRow(STUDY, dataset, MODEL, "val", "best_epoch", float(best_epoch), n, "epoch with the lowest validation total loss"))
    return rows
