"""Training as the original `src/train.py` ran it, with a real best checkpoint.

Loss = MSE(3 scores) + BCEWithLogits(label) + lambda x MSE(activation head, legacy score) when the
legacy score exists; AdamW (lr 1e-3, default weight decay), batch 32, 50 epochs, 80/20 split
stratified by label with random_state = seed, best epoch by validation total loss.

The original kept `best_state = model.state_dict()`: references to the live tensors, so the file it
saved as "best" held the last weights. `BestCheckpoint` deep-copies by default; `aliasing=True`
reproduces the original behaviour (and a test shows what it does).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_dir, write_json
from txrepro.runtime import deterministic_torch, get_logger, progress, resolve_device, seed_everything
from txrepro.studies.drugseq.data import SCORE_COLUMNS, DrugseqData
from txrepro.studies.drugseq.model import GeneTransformerMultiTask, ModelConfig, resolve_attention_dropout
from txrepro.studies.drugseq.params import TrainParams

log = get_logger(__name__)

HISTORY_COLUMNS = ("epoch", "train_total", "train_mse", "train_bce", "train_reg", "val_total", "val_mse", "val_bce", "val_reg")
ZSCORE_EPS = 1e-8


class BestCheckpoint:
    """Keeps the weights of the epoch with the lowest validation loss.

    `aliasing=True` stores `state_dict()` itself, as the original did: its tensors are the live
    parameters, so after training "best" silently equals "last".
    """

    def __init__(self, aliasing: bool = False) -> None:
        self.aliasing = aliasing
        self.loss = float("inf")
        self.epoch = -1
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, model: nn.Module, val_loss: float, epoch: int) -> bool:
        if val_loss >= self.loss:
            return False
        self.loss, self.epoch = val_loss, epoch
        state = model.state_dict()
        self.state = state if self.aliasing else copy.deepcopy(state)
        return True


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> Split:
    """80/20 split stratified by label, random_state = seed (as the original's train_test_split)."""
    idx = np.arange(len(labels))
    counts = np.bincount(labels, minlength=2)
    n_val = int(np.ceil(val_fraction * len(labels)))
    if counts.min() < 2 or n_val < 2:
        raise InputError("labels", "labels", "at least 2 wells of each class for a stratified split", f"{counts[0]} resting, {counts[1]} activated")
    train, val = train_test_split(idx, test_size=val_fraction, stratify=labels, random_state=seed)
    return Split(np.sort(train), np.sort(val))


def fit_zscore(expr: np.ndarray, train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and s.d. (population, ddof 0) on the training split only."""
    x = expr[train_idx].astype(np.float64)
    return x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32)


def apply_zscore(expr: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((expr - mean) / (std + ZSCORE_EPS)).astype(np.float32)


def multitask_loss(
    out: Mapping[str, torch.Tensor], scores: torch.Tensor, label: torch.Tensor, legacy: torch.Tensor | None, lambda_reg: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """total, mse, bce, reg (reg is 0 without a legacy score)."""
    mse = nn.functional.mse_loss(out["scores3"], scores)
    bce = nn.functional.binary_cross_entropy_with_logits(out["logit"], label)
    reg = nn.functional.mse_loss(out["act"], legacy) if legacy is not None else torch.zeros((), device=mse.device)
    return mse + bce + lambda_reg * reg, mse, bce, reg


@dataclass
class TrainResult:
    model_dir: Path
    history: pd.DataFrame
    best_epoch: int
    best_val_loss: float
    config: dict[str, Any]


def model_config(params: TrainParams, n_genes: int, device: str) -> ModelConfig:
    return ModelConfig(
        n_genes=n_genes, d_model=params.d_model, nhead=params.nhead, num_layers=params.num_layers,
        dim_feedforward=params.dim_feedforward, dropout=params.dropout,
        attention_dropout=resolve_attention_dropout(params.attention_dropout, params.dropout, device),
        latent_dim=params.latent_dim, attention=params.attention,  # type: ignore[arg-type]
    )


def _tensors(data: DrugseqData, x: np.ndarray, idx: np.ndarray, device: str, use_legacy: bool) -> tuple[torch.Tensor, ...]:
    t = [torch.from_numpy(x[idx]).to(device), torch.from_numpy(data.scores[idx]).to(device),
         torch.from_numpy(data.label[idx].astype(np.float32)).to(device)]
    if use_legacy:
        t.append(torch.from_numpy(data.legacy[idx]).to(device))  # type: ignore[index]
    return tuple(t)


def _epoch_losses(model: nn.Module, tensors: tuple[torch.Tensor, ...], batch_size: int, lambda_reg: float,
                  order: torch.Tensor | None, optimizer: torch.optim.Optimizer | None) -> np.ndarray:
    """Sample-weighted mean of (total, mse, bce, reg) over one pass; trains when an optimizer is given."""
    n = tensors[0].shape[0]
    order = order if order is not None else torch.arange(n)
    sums = np.zeros(4)
    for start in range(0, n, batch_size):
        b = order[start:start + batch_size]
        x, y, lab = tensors[0][b], tensors[1][b], tensors[2][b]
        legacy = tensors[3][b] if len(tensors) > 3 else None
        with torch.set_grad_enabled(optimizer is not None):
            losses = multitask_loss(model(x), y, lab, legacy, lambda_reg)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            losses[0].backward()
            optimizer.step()
        sums += np.array([float(v.detach()) for v in losses]) * len(b)
    return sums / n


def train_model(data: DrugseqData, out_dir: str | os.PathLike[str], params: TrainParams) -> TrainResult:
    """Train, then write model_best.pt, model_last.pt, config.json, the loss history and the split."""
    device = resolve_device(params.device)
    seed_everything(params.seed)
    deterministic_torch()
    split = stratified_split(data.label, params.val_fraction, params.seed)
    x = data.expr
    mean = std = None
    if params.use_zscore:
        mean, std = fit_zscore(x, split.train)
        x = apply_zscore(x, mean, std)
    use_legacy = data.legacy is not None and params.lambda_reg > 0
    if data.legacy is None:
        log.warning("no legacy activation score: training without the %.2g x MSE regulariser (as the original does without the file)", params.lambda_reg)

    cfg = model_config(params, len(data.genes), device)
    log.info("model: %s on %s (%d wells train, %d val, %d genes)", cfg, device, len(split.train), len(split.val), len(data.genes))
    torch.manual_seed(params.seed)
    model = GeneTransformerMultiTask(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    train_t = _tensors(data, x, split.train, device, use_legacy)
    val_t = _tensors(data, x, split.val, device, use_legacy)
    gen = torch.Generator().manual_seed(params.seed)
    best = BestCheckpoint(aliasing=params.best_checkpoint == "original")
    rows = []
    for epoch in progress(range(1, params.epochs + 1), desc="drugseq train", total=params.epochs):
        model.train()
        tr = _epoch_losses(model, train_t, params.batch_size, params.lambda_reg, torch.randperm(len(split.train), generator=gen), optimizer)
        model.eval()
        va = _epoch_losses(model, val_t, params.batch_size, params.lambda_reg, None, None)
        rows.append([epoch, *tr, *va])
        best.update(model, float(va[0]), epoch)
        log.debug("epoch %d train %.4f val %.4f", epoch, tr[0], va[0])
    history = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    history["epoch"] = history["epoch"].astype(int)
    log.info("best epoch %d (val loss %.4f) of %d; checkpoint mode %s", best.epoch, best.loss, params.epochs, params.best_checkpoint)

    config = {
        "model": cfg.to_dict(),
        "train": asdict(params),
        "device": device,
        "genes": list(data.genes),
        "score_columns": list(SCORE_COLUMNS),
        "use_legacy": use_legacy,
        "legacy_file": data.provenance.get("legacy_file"),
        "best_epoch": best.epoch,
        "best_val_loss": best.loss,
        "zscore": params.use_zscore,
    }
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        torch.save(best.state, tmp / "model_best.pt")
        torch.save(model.state_dict(), tmp / "model_last.pt")
        history.to_csv(tmp / "history_loss_detailed.csv", index=False)
        pd.DataFrame({"well_id": data.well_id, "split": np.where(np.isin(np.arange(data.n_wells), split.val), "val", "train")}).to_csv(tmp / "split.csv", index=False)
        if params.use_zscore:
            pd.DataFrame({"gene": data.genes, "mean": mean, "std": std}).to_csv(tmp / "gene_scaler.csv", index=False)
        write_json(tmp / "config.json", config)
    return TrainResult(out, history, best.epoch, best.loss, config)
