"""Training of r-SAGE-net (reference sequences -> mean expression) and p-SAGE-net (personal sequences).

Protocol (train_rsagenet.py, train_model.py, eval_model.py):
* r-SAGE-net: every prepared gene on the training chromosomes, target = mean expression over
  training individuals; the best epoch by validation-gene Pearson (across genes) is kept, with
  early stopping (patience 10, at most 100 epochs). With fewer than 3 validation genes Pearson is
  undefined and the validation MSE decides.
* p-SAGE-net: the top-N genes by PrediXcan validation r (N = 1,000), training-chromosome genes x
  training individuals; loss lam_ref * MSE(mean head, training mean) + lam_diff * MSE(deviation
  head, z-score); Adam (lr 5e-4, weight decay 1e-5), CyclicLR per batch, gradient norm clipped to
  1, at most 10 epochs. The kept epoch is the one with the best median per-gene r of the
  deviation head on training genes x validation individuals (eval_model.py's `train_gene_gene`).
  Early stopping on that loader's deviation loss (patience 5) is what train_model.py intended;
  its monitored metric names never exist, so the script crashes or, in the notebook, runs without
  it (docs/studies/sage_net.md). `early_stopping_patience=0` reproduces the notebook.

Item order: the original drew (gene, individual) items uniformly at random. Personal sequences are
built per gene for all individuals at once, so here an epoch visits genes in a random order in
blocks of `shuffle_buffer_genes` and shuffles all items of a block; with no more genes than the
buffer (the fixture) this is the uniform shuffle.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_dir
from txrepro.runtime import deterministic_torch, get_logger, progress, resolve_device, seed_everything
from txrepro.studies.sage_net.config import ModelConfig
from txrepro.studies.sage_net.data import Prepared
from txrepro.studies.sage_net.metrics import pearson, per_gene_pearson
from txrepro.studies.sage_net.model import PSageNet, RSageNet, init_from_reference, n_parameters
from txrepro.studies.sage_net.predict import SequenceProvider, VariantOptions, predict_psagenet, to_device
from txrepro.studies.sage_net.predixcan import PrediXcanResult

log = get_logger(__name__)


@dataclass
class TrainParams:
    seed: int = 42
    device: str = "auto"
    top_genes: int = 1000
    max_epochs: int | None = None  # override the config
    variant_options: VariantOptions = VariantOptions()


def _optimiser(model: nn.Module, cfg: ModelConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.scheduler == "cycle":
        sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=cfg.learning_rate / 2, max_lr=cfg.learning_rate * 2, cycle_momentum=False)
    elif cfg.scheduler == "none":
        sched = None
    else:
        raise InputError("--config", "scheduler", "'cycle' or 'none'", cfg.scheduler)
    return opt, sched


def _step(model: nn.Module, loss: torch.Tensor, opt: torch.optim.Optimizer, sched, clip: float) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    if sched is not None:
        sched.step()


def _config_for(prepared: Prepared, cfg: ModelConfig) -> ModelConfig:
    if cfg.input_len != prepared.params.window:
        log.info("model input length set to the prepared window: %d bp (config %s had %d)", prepared.params.window, cfg.name, cfg.input_len)
        cfg = cfg.with_overrides(input_len=prepared.params.window)
    return cfg


def _save(outdir: Path, model: nn.Module, cfg: ModelConfig, meta: dict, history: list[dict]) -> Path:
    with atomic_dir(outdir) as tmp:
        torch.save({"state_dict": model.state_dict(), "config": cfg.as_dict(), "meta": meta}, tmp / "model.pt")
        pd.DataFrame(history).to_csv(tmp / "history.tsv", sep="\t", index=False)
        (tmp / "meta.json").write_text(json.dumps(meta | {"config": cfg.as_dict()}, indent=2, default=str) + "\n")
    return outdir


def load_model(path: str | Path, kind: str, device: str = "cpu") -> tuple[nn.Module, dict]:
    """A trained model folder (`model.pt`): the network in eval mode and its metadata."""
    p = Path(path) / "model.pt"
    if not p.is_file():
        raise InputError(Path(path), "model folder", f"the output of `sage_net.py train-{kind}` (model.pt)", "no model.pt")
    # weights_only: a model folder can come from anywhere; a full unpickle would run code it carries
    try:
        ckpt = torch.load(p, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for foreign or corrupt files
        detail = "objects other than tensors and plain containers (refused unread: it could run code)" if "weights_only" in str(exc).lower() or "unsupported global" in str(exc).lower() else type(exc).__name__
        raise InputError(p, "model file", f"a {kind} checkpoint saved by `sage_net.py train-{kind}` (tensors, numbers, strings)", detail) from None
    if not isinstance(ckpt, dict) or not {"state_dict", "config", "meta"} <= set(ckpt):
        raise InputError(p, "model file", f"a {kind} checkpoint with state_dict, config and meta", f"keys {sorted(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__}")
    try:
        cfg = ModelConfig(**ckpt["config"])
        model = (RSageNet if kind == "rsagenet" else PSageNet)(cfg)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError, KeyError) as exc:
        raise InputError(p, "model file", f"a {kind} checkpoint matching this version's architecture", str(exc).splitlines()[0][:160]) from None
    return model.to(device).eval(), ckpt["meta"] | {"config": cfg}


# --------------------------------------------------------------------------------------------
# r-SAGE-net


def train_rsagenet(prepared: Prepared, outdir: Path, cfg: ModelConfig, params: TrainParams) -> Path:
    cfg = _config_for(prepared, cfg)
    seed_everything(params.seed)
    deterministic_torch()
    device = resolve_device(params.device)
    train_genes, val_genes = prepared.genes_in("train"), prepared.genes_in("val")
    if not train_genes:
        raise InputError(prepared.path, "genes", "at least one gene on the training chromosomes", "none")
    seqs = SequenceProvider(prepared, params.variant_options)
    refs = {g: seqs.reference(g) for g in train_genes + val_genes}
    target = {g: float(prepared.mean[prepared.gene_index[g]]) for g in train_genes + val_genes}
    model = RSageNet(cfg).to(device)
    opt, sched = _optimiser(model, cfg)
    rng = np.random.default_rng(params.seed)
    max_epochs = params.max_epochs or cfg.ref_max_epochs
    use_pearson = len(val_genes) >= 3
    best, best_state, best_epoch, waited, history = -math.inf, None, -1, 0, []
    log.info("r-SAGE-net: %d training genes, %d validation genes, %d parameters, %s", len(train_genes), len(val_genes), n_parameters(model), device)
    for epoch in progress(range(max_epochs), desc="r-SAGE-net epochs", total=max_epochs):
        model.train()
        order = rng.permutation(len(train_genes))
        losses = []
        for s in range(0, len(order), cfg.ref_batch_size):
            batch = [train_genes[i] for i in order[s : s + cfg.ref_batch_size]]
            if len(batch) < 2 and cfg.batch_norm:
                continue  # BatchNorm cannot normalise a batch of one
            x = to_device(np.stack([refs[g] for g in batch]), device)
            y = torch.tensor([target[g] for g in batch], dtype=torch.float32, device=device)
            loss = nn.functional.mse_loss(model(x), y)
            _step(model, loss, opt, sched, cfg.gradient_clip)
            losses.append(float(loss.detach()))
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan}
        if val_genes:
            model.eval()
            with torch.no_grad():
                pv = model(to_device(np.stack([refs[g] for g in val_genes]), device)).double().cpu().numpy()
            yv = np.array([target[g] for g in val_genes])
            rec["val_loss"] = float(np.mean((pv - yv) ** 2))
            rec["val_pearson"] = pearson(pv, yv) if use_pearson else math.nan
            score = rec["val_pearson"] if use_pearson else -rec["val_loss"]
        else:
            score = -rec["train_loss"]
        history.append(rec)
        if score > best:
            best, best_epoch, waited = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if cfg.ref_early_stopping_patience and waited >= cfg.ref_early_stopping_patience:
                log.info("r-SAGE-net: early stop after epoch %d", epoch)
                break
    model.load_state_dict(best_state)
    meta = {"kind": "rsagenet", "best_epoch": best_epoch, "selection": "val_pearson" if use_pearson else "val_loss", "train_genes": train_genes, "val_genes": val_genes, "seed": params.seed}
    return _save(outdir, model, cfg, meta, history)


# --------------------------------------------------------------------------------------------
# p-SAGE-net


def selected_genes(prepared: Prepared, predixcan: PrediXcanResult, top: int) -> dict[str, list[str]]:
    """Top-N genes by PrediXcan validation r, split by chromosome (train/val/test)."""
    top_set = predixcan.top_genes(top)
    split = dict(zip(prepared.genes["gene_id"], prepared.genes["gene_split"]))
    return {k: [g for g in top_set if split.get(g) == k] for k in ("train", "val", "test")}


def _batches(genes: list[str], n_ind: int, block: int, batch_size: int, rng: np.random.Generator):
    """Item batches [(gene, individual-position)] in gene blocks (see module docstring)."""
    order = rng.permutation(len(genes))
    for b in range(0, len(order), block):
        block_genes = order[b : b + block]
        items = np.array([(g, i) for g in block_genes for i in range(n_ind)], dtype=np.int64)
        items = items[rng.permutation(len(items))]
        for s in range(0, len(items), batch_size):
            yield items[s : s + batch_size]


def _validate(model: PSageNet, seqs: SequenceProvider, prepared: Prepared, genes: list[str], val_idx: np.ndarray, device: str, cfg: ModelConfig) -> dict:
    if not genes:
        return {}
    means, devs = predict_psagenet(model, seqs, genes, val_idx, device, cfg.eval_batch_size)
    gi = np.array([prepared.gene_index[g] for g in genes])
    z = _deviation_target(prepared, cfg)[gi][:, val_idx]
    m = prepared.mean[gi]
    ref_loss = float(np.mean((means - m) ** 2))
    diff_loss = float(np.mean((devs - z) ** 2))
    r = per_gene_pearson(devs, z)
    return {
        "ref_loss": ref_loss, "diff_loss": diff_loss, "loss": cfg.lam_ref * ref_loss + cfg.lam_diff * diff_loss,
        "median_gene_pearson": float(np.nanmedian(r)) if np.isfinite(r).any() else math.nan,
    }


def _deviation_target(prepared: Prepared, cfg: ModelConfig) -> np.ndarray:
    return prepared.z if cfg.zscore else prepared.expr - prepared.mean[:, None]


def train_psagenet(prepared: Prepared, predixcan: PrediXcanResult, outdir: Path, cfg: ModelConfig, params: TrainParams, init: Path | None) -> Path:
    cfg = _config_for(prepared, cfg)
    seed_everything(params.seed)
    deterministic_torch()
    device = resolve_device(params.device)
    sets = selected_genes(prepared, predixcan, params.top_genes)
    train_genes, val_genes = sets["train"], sets["val"]
    if not train_genes:
        raise InputError(predixcan.path, "ranked genes", "at least one top-ranked gene on the training chromosomes", "none")
    tr, va = prepared.train_idx, prepared.split_idx("val")
    seqs = SequenceProvider(prepared, params.variant_options)
    model = PSageNet(cfg).to(device)
    if cfg.start_from_ref:
        if init is None:
            raise InputError("--init", "r-SAGE-net model", "a trained r-SAGE-net folder (start_from_ref; pass --no-init-from-ref to start from random weights)", "none given")
        r_model, _ = load_model(init, "rsagenet", device)
        if r_model.cfg.input_len != cfg.input_len or r_model.tower.out_features != model.tower.out_features:
            raise InputError(init, "r-SAGE-net architecture", f"the same conv tower as config {cfg.name}", f"input_len {r_model.cfg.input_len}")
        init_from_reference(model, r_model)
    opt, sched = _optimiser(model, cfg)
    rng = np.random.default_rng(params.seed)
    target_z = _deviation_target(prepared, cfg)
    max_epochs = params.max_epochs or cfg.max_epochs
    best, best_state, best_epoch, waited, best_es, history = -math.inf, None, -1, 0, math.inf, []
    n_items = len(train_genes) * len(tr)
    log.info("p-SAGE-net: %d training genes x %d individuals = %d items per epoch, %d validation genes, %d parameters, %s",
             len(train_genes), len(tr), n_items, len(val_genes), n_parameters(model), device)
    for epoch in progress(range(max_epochs), desc="p-SAGE-net epochs", total=max_epochs):
        model.train()
        losses = []
        block_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for batch in _batches(train_genes, len(tr), cfg.shuffle_buffer_genes, cfg.batch_size, rng):
            if len(batch) < 2 and cfg.batch_norm:
                continue
            gidx = batch[:, 0]
            for g in np.unique(gidx):
                if g not in block_cache:
                    block_cache[g] = seqs.gene(train_genes[g], tr)
            ref = np.stack([block_cache[g][0] for g in gidx])
            haps = np.stack([block_cache[g][1][i] for g, i in batch])
            rows = np.array([prepared.gene_index[train_genes[g]] for g in gidx])
            y_mean = torch.tensor(prepared.mean[rows], dtype=torch.float32, device=device)
            y_dev = torch.tensor(target_z[rows, tr[batch[:, 1]]], dtype=torch.float32, device=device)
            out = model(to_device(ref, device), to_device(haps[:, 0], device), to_device(haps[:, 1], device))
            loss = cfg.lam_ref * nn.functional.mse_loss(out[:, 0], y_mean) + cfg.lam_diff * nn.functional.mse_loss(out[:, 1], y_dev)
            _step(model, loss, opt, sched, cfg.gradient_clip)
            losses.append(float(loss.detach()))
            if len(block_cache) > cfg.shuffle_buffer_genes:
                block_cache.pop(next(iter(block_cache)))
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan}
        v0 = _validate(model, seqs, prepared, train_genes, va, device, cfg)
        v1 = _validate(model, seqs, prepared, val_genes, va, device, cfg)
        rec.update({f"train_gene_val_ind_{k}": v for k, v in v0.items()})
        rec.update({f"val_gene_val_ind_{k}": v for k, v in v1.items()})
        history.append(rec)
        score = v0.get("median_gene_pearson", math.nan)
        score = -math.inf if not np.isfinite(score) else score
        if best_state is None or score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if cfg.early_stopping_patience:
            if v0["diff_loss"] < best_es:
                best_es, waited = v0["diff_loss"], 0
            else:
                waited += 1
                if waited >= cfg.early_stopping_patience:
                    log.info("p-SAGE-net: early stop after epoch %d", epoch)
                    break
    model.load_state_dict(best_state)
    meta = {
        "kind": "psagenet", "best_epoch": best_epoch, "selection": "median per-gene r, deviation head, training genes x validation individuals",
        "train_genes": train_genes, "val_genes": val_genes, "test_genes": sets["test"], "seed": params.seed, "top_genes": params.top_genes,
        "items_per_epoch": n_items, "init": str(init) if init else None, "variant_options": vars(params.variant_options),
    }
    return _save(outdir, model, cfg, meta, history)
