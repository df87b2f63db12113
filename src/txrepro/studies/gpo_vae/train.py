"""The `train` step: Adam on the GPO-VAE loss with early stopping on the validation loss.

As the original Lightning setup: Adam (lr 3e-4, weight decay 1e-6), gradient-norm clipping at 100,
one validation pass per epoch, EarlyStopping on val/loss with patience 30 and the checkpoint with
the best val/loss kept. The best state is a real copy of the weights (not a reference that later
steps overwrite), and it is what the checkpoint holds.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path
from txrepro.runtime import deterministic_torch, get_logger, progress, seed_everything
from txrepro.studies.gpo_vae.config import GpoVaeConfig, config_from_dict
from txrepro.studies.gpo_vae.features import PreparedDataset, SplitTensors
from txrepro.studies.gpo_vae.model import GpoVae, gpo_vae_loss

log = get_logger(__name__)

BATCH_KEYS = ("X", "D", "qc", "cfX", "deltaX", "library")


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    seconds: float
    n_parameters: int


class EarlyStopping:
    """Stop after `patience` epochs without a strictly lower monitored value; keep a copy of the best state."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = float("inf")
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.wait = 0

    def update(self, value: float, epoch: int, module: torch.nn.Module) -> bool:
        """Record one epoch; True when training should stop."""
        if value < self.best:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_state = copy.deepcopy(module.state_dict())
        else:
            self.wait += 1
        return self.wait >= self.patience


def batches(data: SplitTensors, batch_size: int, device: str, generator: torch.Generator | None = None):
    n = len(data)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield {k: getattr(data, k)[idx].to(device) for k in BATCH_KEYS}


def evaluate_loss(net: GpoVae, cfg: GpoVaeConfig, data: SplitTensors, D_counts: torch.Tensor, qc_counts: torch.Tensor, device: str) -> float:
    """Mean loss over a split, batches weighted by their size (Lightning's epoch mean)."""
    total, n = 0.0, 0
    with torch.no_grad():
        for b in batches(data, cfg.train.batch_size, device):
            terms = gpo_vae_loss(net, cfg.loss, b, D_counts, qc_counts, cfg.train.n_particles)
            total += float(terms.loss) * b["X"].shape[0]
            n += b["X"].shape[0]
    return total / max(n, 1)


def train_model(ds: PreparedDataset, cfg: GpoVaeConfig, *, seed: int, device: str = "cpu") -> tuple[GpoVae, TrainResult, pd.DataFrame]:
    """Train from scratch; returns the network holding the best validation state."""
    seed_everything(seed)
    deterministic_torch()
    net = GpoVae(cfg.model, len(ds.genes), len(ds.treatments), ds.log_mean, ds.log_std).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    counts = {s: (ds.dosage_counts(s).to(device), ds.qc_counts(s).to(device)) for s in ("train", "val")}
    stopper = EarlyStopping(cfg.train.patience)
    history = []
    start = time.perf_counter()
    stopped = False
    epoch = -1
    for epoch in progress(range(cfg.train.max_epochs), desc="gpo_vae epochs", total=cfg.train.max_epochs):
        net.train()
        tr_total, tr_n, parts = 0.0, 0, np.zeros(5)
        for b in batches(ds.splits["train"], cfg.train.batch_size, device, gen):
            terms = gpo_vae_loss(net, cfg.loss, b, *counts["train"], cfg.train.n_particles)
            opt.zero_grad(set_to_none=True)
            terms.loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.gradient_clip_norm)
            opt.step()
            k = b["X"].shape[0]
            tr_total += float(terms.loss.detach()) * k
            tr_n += k
            parts += k * np.array([terms.reconstruction, terms.kl_plated, terms.cf_divergence, terms.grn, terms.penalty])
        net.eval()
        val = evaluate_loss(net, cfg, ds.splits["val"], *counts["val"], device)
        if not np.isfinite(val):
            raise FloatingPointError(f"validation loss is {val} at epoch {epoch}: lower train.lr or check the input counts")
        parts /= max(tr_n, 1)
        history.append({"epoch": epoch, "train_loss": tr_total / max(tr_n, 1), "val_loss": val, "reconstruction": parts[0],
                        "kl_plated": parts[1], "cf_divergence": parts[2], "grn_loss": parts[3], "penalty": parts[4]})
        if stopper.update(val, epoch, net):
            stopped = True
            log.info("early stopping at epoch %d (best %d, val loss %.4f)", epoch, stopper.best_epoch, stopper.best)
            break
    assert stopper.best_state is not None
    net.load_state_dict(stopper.best_state)
    net.eval()
    result = TrainResult(stopper.best_epoch, stopper.best, epoch + 1, stopped, time.perf_counter() - start,
                         sum(p.numel() for p in net.parameters()))
    return net, result, pd.DataFrame(history)


def save_checkpoint(path: str | os.PathLike[str], net: GpoVae, cfg: GpoVaeConfig, ds: PreparedDataset, result: TrainResult, seed: int) -> Path:
    payload = {
        "format": "txrepro.gpo_vae/1",
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "config": cfg.to_dict(),
        "genes": ds.genes,
        "treatments": ds.treatments,
        "n_perturbed": ds.n_perturbed,
        "seed": seed,
        "result": asdict(result),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], ds: PreparedDataset, device: str = "cpu") -> tuple[GpoVae, GpoVaeConfig, dict]:
    """Rebuild the network and check it was trained on the same genes and treatments as `ds`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "checkpoint", "an existing file written by `gpo_vae.py train`", "nothing at this path")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(p, "checkpoint", "a checkpoint written by `gpo_vae.py train`", type(exc).__name__) from None
    if not isinstance(payload, dict) or payload.get("format") != "txrepro.gpo_vae/1":
        raise InputError(p, "checkpoint format", "txrepro.gpo_vae/1")
    if list(payload["genes"]) != ds.genes or list(payload["treatments"]) != ds.treatments:
        raise InputError(p, "genes/treatments", "the prepared data the model was trained on", "a different gene or treatment list")
    cfg = config_from_dict(payload["config"])
    net = GpoVae(cfg.model, len(ds.genes), len(ds.treatments), ds.log_mean, ds.log_std)
    net.load_state_dict(payload["state_dict"])
    return net.to(device).eval(), cfg, payload
