"""train: the scGPT age classifier of a protocol, and the L1 logistic-regression baseline.

Seeded and shuffled (the original DataLoader did not shuffle and never seeded: `--no_shuffle`
restores the order). The best epoch is the one with the lowest validation loss; the validation
cells are carved from train, or are the test cells with `--select_on_test` (the original's choice,
which makes test metrics optimistic).
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path
from txrepro.runtime import deterministic_torch, get_logger, progress, resolve_device, seed_everything
from txrepro.studies.age_clock.config import AgeClockConfig
from txrepro.studies.age_clock.data import read_prepared
from txrepro.studies.age_clock.model import AgeClassifier, from_pretrained, save_classifier, token_batch

log = get_logger(__name__)

TRAIN_LOG = "training_log.tsv"


def apply_overrides(cfg: AgeClockConfig, overrides: Mapping[str, Any] | None) -> AgeClockConfig:
    return replace(cfg, **{k: v for k, v in (overrides or {}).items() if v is not None})


def selection_split(cfg: AgeClockConfig) -> str:
    return "test" if cfg.select_on_test else "val"


def _check_vocab_ids(adata, vocab, prepared: Path) -> np.ndarray:
    ids = adata.var["vocab_id"].to_numpy(dtype=np.int64)
    expected = np.array([vocab[g] if g in vocab else -1 for g in adata.var_names], dtype=np.int64)
    if not np.array_equal(ids, expected):
        raise InputError(prepared, "var['vocab_id']", "vocabulary ids of the checkpoint given to train (prepare with the same checkpoint)")
    return ids


def _autocast(device: str):
    if device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return torch.autocast(device_type="cpu", enabled=False)


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


@torch.no_grad()
def predict_logit_old(model: AgeClassifier, src: Tensor, values: Tensor, batch_size: int, device: str) -> np.ndarray:
    model.eval()
    out = []
    for idx in torch.arange(src.shape[0]).split(batch_size):
        with _autocast(device):
            out.append(model.logit_old(src[idx].to(device), values[idx].to(device)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def _safe_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


def _fit_repository(model: AgeClassifier, data: dict[str, tuple[Tensor, Tensor, Tensor]], cfg: AgeClockConfig, device: str) -> tuple[dict, list[dict]]:
    """Whole-model fine-tuning with cross-entropy on the ClsDecoder (Adam, StepLR, grad clip)."""
    src, values, labels = data["train"]
    vsrc, vvalues, vlabels = data["select"]
    amp = device.startswith("cuda")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-4 if amp else 1e-8)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=cfg.lr_step_gamma) if cfg.lr_step_gamma else None
    weight = _class_weights(labels).to(device) if cfg.class_weighted else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    gen = torch.Generator().manual_seed(cfg.seed) if cfg.shuffle else None
    best, history, best_loss = None, [], float("inf")
    for epoch in progress(range(1, cfg.epochs + 1), desc="age_clock train (scGPT fine-tune)", total=cfg.epochs):
        model.train()
        total, n = 0.0, 0
        for idx in _batches(src.shape[0], cfg.batch_size, gen):
            opt.zero_grad(set_to_none=True)
            with _autocast(device):
                logits = model.class_logits(src[idx].to(device), values[idx].to(device))
                loss = loss_fn(logits.float(), labels[idx].to(device))
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            total += loss.item() * len(idx)
            n += len(idx)
        lr = opt.param_groups[0]["lr"]
        if sched is not None:
            sched.step()
        z = predict_logit_old(model, vsrc, vvalues, cfg.eval_batch_size, device)
        val_loss = float(nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(z), vlabels.float()))
        history.append({"epoch": epoch, "train_loss": total / max(n, 1), "select_loss": val_loss, "select_auc": _safe_auc(vlabels.numpy(), z), "lr": lr})
        if val_loss < best_loss:
            best_loss, best = val_loss, copy.deepcopy(model.state_dict())
        log.info("epoch %d: train CE %.4f, selection CE %.4f, AUC %.3f", epoch, history[-1]["train_loss"], val_loss, history[-1]["select_auc"])
    return best, history


def _class_weights(labels: Tensor) -> Tensor:
    counts = torch.bincount(labels, minlength=2).float()
    return counts.sum() / (2.0 * counts.clamp_min(1.0))


@torch.no_grad()
def pooled_embeddings(model: AgeClassifier, src: Tensor, values: Tensor, batch_size: int, device: str) -> Tensor:
    model.eval()
    out = []
    for idx in torch.arange(src.shape[0]).split(batch_size):
        with _autocast(device):
            out.append(model.pooled(src[idx].to(device), values[idx].to(device)).float())
    return torch.cat(out)


def _fit_article(model: AgeClassifier, data: dict[str, tuple[Tensor, Tensor, Tensor]], cfg: AgeClockConfig, device: str) -> tuple[dict, list[dict]]:
    """Frozen encoder: embeddings once, then the head (AdamW, class-weighted BCE-with-logits).

    The encoder is frozen and in eval mode, so pooling once equals pooling in every batch.
    """
    emb = {k: pooled_embeddings(model, s, v, cfg.eval_batch_size, device) for k, (s, v, _) in data.items()}
    labels = data["train"][2].to(device).float()
    vlabels = data["select"][2]
    n_pos = float(labels.sum())
    pos_weight = torch.tensor([(len(labels) - n_pos) / max(n_pos, 1.0)], device=device) if cfg.class_weighted else None
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    params = [p for p in model.head.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay) if cfg.optimizer == "adamw" else torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed) if cfg.shuffle else None
    best, history, best_loss = None, [], float("inf")
    for epoch in progress(range(1, cfg.epochs + 1), desc="age_clock train (frozen scGPT + head)", total=cfg.epochs):
        model.train()
        total = 0.0
        for idx in _batches(len(labels), cfg.batch_size, gen):
            idx = idx.to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model.head_logit(emb["train"][idx]), labels[idx])
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            z = model.head_logit(emb["select"]).float().cpu()
        val_loss = float(nn.functional.binary_cross_entropy_with_logits(z, vlabels.float()))
        history.append({"epoch": epoch, "train_loss": total / len(labels), "select_loss": val_loss, "select_auc": _safe_auc(vlabels.numpy(), z.numpy()), "lr": cfg.lr})
        if val_loss < best_loss:
            best_loss, best = val_loss, copy.deepcopy(model.state_dict())
    return best, history


def train_scgpt(
    prepared: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    overrides: Mapping[str, Any] | None = None,
    verify_manifest: bool = False,
    device: str = "auto",
) -> Path:
    """Fine-tune (repository) or train the head on the frozen encoder (article); save the best epoch."""
    prepared = Path(prepared)
    adata, info, cfg = read_prepared(prepared)
    cfg = apply_overrides(cfg, overrides)
    device = resolve_device(device)
    seed_everything(cfg.seed)
    deterministic_torch()
    model, vocab, arch = from_pretrained(checkpoint, cfg, verify_manifest=verify_manifest)
    model.to(device)
    gene_ids = _check_vocab_ids(adata, vocab, prepared)
    split = adata.obs["split"].to_numpy()
    select = selection_split(cfg)
    data: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
    for name, side in (("train", "train"), ("select", select)):
        mask = split == side
        if not mask.any():
            raise InputError(prepared, "obs['split']", f"{side} cells (prepare without --select_on_test carves a validation set)")
        src, values = token_batch(gene_ids, adata.layers["binned"][mask], vocab["<cls>"])
        data[name] = (src, values, torch.from_numpy(adata.obs["label"].to_numpy()[mask].astype(np.int64)))
    log.info("training %s model on %d cells, selecting on %d %s cells, %s", cfg.model, len(data["train"][2]), len(data["select"][2]), select, device)
    fit = _fit_repository if cfg.model == "finetune_cls" else _fit_article
    best, history = fit(model, data, cfg, device)
    model.load_state_dict(best)
    best_epoch = int(min(history, key=lambda h: h["select_loss"])["epoch"])
    out_dir = Path(out_dir)
    meta = {"best_epoch": best_epoch, "selected_on": select, "n_train": int(len(data["train"][2])), "n_select": int(len(data["select"][2])), "device": device}
    save_classifier(out_dir, model.cpu(), vocab, arch, cfg, extra=meta)
    hist = pd.DataFrame(history)
    hist["best"] = hist["epoch"] == best_epoch
    with atomic_path(out_dir / TRAIN_LOG) as tmp:
        hist.to_csv(tmp, sep="\t", index=False)
    log.info("best epoch %d of %d (lowest %s loss); model saved to %s", best_epoch, cfg.epochs, select, out_dir)
    return out_dir


def train_logreg(prepared: str | os.PathLike[str], out_path: str | os.PathLike[str], *, overrides: Mapping[str, Any] | None = None) -> Path:
    """L1 logistic regression on the same genes' log-normalised values (train + val cells).

    Standardised per gene first: an L1 penalty on unscaled features would favour highly expressed
    genes. Class-weighted when the protocol weights its scGPT loss (article).
    """
    adata, info, cfg = read_prepared(prepared)
    cfg = apply_overrides(cfg, overrides)
    fit_mask = adata.obs["split"].isin(["train", "val"]).to_numpy()
    x = adata.layers["log_norm"][fit_mask]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    y = adata.obs["label"].to_numpy()[fit_mask]
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(
        l1_ratio=1.0, C=cfg.logreg_c, solver="liblinear", class_weight="balanced" if cfg.class_weighted else None, max_iter=1000, random_state=cfg.seed
    )
    clf.fit(scaler.transform(x), y)
    n_nonzero = int(np.count_nonzero(clf.coef_))
    log.info("L1 logistic regression: %d of %d genes with non-zero weight", n_nonzero, x.shape[1])
    with atomic_path(out_path) as tmp:
        with tmp.open("wb") as fh:
            pickle.dump({"scaler": scaler, "model": clf, "genes": list(adata.var_names), "config": cfg.as_dict(), "n_nonzero": n_nonzero}, fh)
    return Path(out_path)


def load_logreg(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "logistic model", "a file written by `age_clock.py baseline`", "nothing at this path")
    with p.open("rb") as fh:
        obj = pickle.load(fh)
    if not isinstance(obj, dict) or "model" not in obj:
        raise InputError(p, "logistic model", "a file written by `age_clock.py baseline`")
    return obj
