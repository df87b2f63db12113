"""scGPT perturbation rows: scgpt's TransformerGenerator, as its perturbation tutorial uses it.

What comes from scgpt, unchanged: the model (`scgpt.model.TransformerGenerator`), its loss
(`scgpt.loss.masked_mse_loss` over every input gene), and the tutorial's recipe: the pretrained
checkpoint fills only `encoder`, `value_encoder` and `transformer_encoder` (the perturbation
embedding and the expression decoder start fresh), each training cell is a (random control cell,
perturbed cell) pair with a flag on the perturbed gene's token, all genes are input
(`include_zero_gene='all'`, at most `max_seq_len` random genes per training batch), Adam with StepLR
(gamma 0.9 per epoch), gradient clipping at 1.0 and the best epoch by validation loss.

What this module adds (the tutorial gets these from GEARS, which we do not install):

* cells and pairs from the prepared vcc folder: the model's genes are the prepared HVGs plus every
  perturbed gene (GEARS keeps the perturbed genes; `gene_set='all'` uses every gene), restricted to
  the genes in the checkpoint's vocabulary. Missing genes are counted and reported
  (txrepro.models.gene_vocab), never fed as `<pad>` tokens as the tutorial does, and too few stop
  the run;
* prediction from the seeded control cells every vcc model starts from, lifted to all genes
  (genes outside the model's set keep the control cell's value: a predicted effect of 0).

`scgpt_zero_shot` predicts with the checkpoint as loaded (so its decoder is untrained: that is what
"zero-shot" means with this recipe); `scgpt_finetuned` predicts with a `vcc.py scgpt-finetune` folder.
Without a checkpoint both rows run only when `vcc_scgpt_allow_random_init` is set, and say so.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_dir, write_json
from txrepro.runtime import get_logger, progress, resolve_device, seed_everything
from txrepro.studies.vcc.data import Prepared
from txrepro.studies.vcc.models import CellPrediction, PredictionContext, Predictor, cells_from_control_rows
from txrepro.studies.vcc.params import ScGPTParams

log = get_logger(__name__)

# The tutorial's tokens and paddings.
SPECIAL_TOKENS = ("<pad>", "<cls>", "<eoc>")
PAD_TOKEN, PAD_VALUE, PERT_PAD_ID = "<pad>", 0, 0
# Modules the tutorial loads from the pretrained checkpoint (`load_param_prefixs`).
PRETRAINED_PREFIXES = ("encoder.", "value_encoder.", "transformer_encoder.")
GRAD_CLIP = 1.0
TRAIN_INFO = "train_info.json"
LOSS_CSV = "training_log.csv"
GENES_FILE = "genes.json"
RANDOM_INIT_LABEL = "RANDOM INITIALISATION, no pretrained checkpoint (vcc_scgpt_allow_random_init)"


def unavailable_reason(checkpoint: str | Path | None, allow_random_init: bool) -> str | None:
    """Why the scGPT rows cannot run with these params (None when they can)."""
    if checkpoint is None and not allow_random_init:
        return ("no pretrained scGPT checkpoint (vcc_scgpt_checkpoint: a folder with args.json, best_model.pt, vocab.json); "
                "set vcc_scgpt_allow_random_init to run the rows from random initialisation")
    return None


@dataclass
class GeneSet:
    """The genes the scGPT model sees: columns of the prepared matrix and their vocabulary ids."""

    columns: np.ndarray  # indices into the prepared var_names, in vocabulary-mapped order
    genes: list[str]
    vocab_ids: np.ndarray
    n_candidates: int
    unmapped: list[str]

    def position(self, gene: str) -> int | None:
        """Where a perturbed gene sits in the model input (None: not among the model's genes)."""
        try:
            return self.genes.index(gene)
        except ValueError:
            return None

    def report(self) -> dict[str, Any]:
        return {"candidates": self.n_candidates, "in_vocabulary": len(self.genes), "unmapped": len(self.unmapped),
                "fraction_in_vocabulary": round(len(self.genes) / max(self.n_candidates, 1), 6), "unmapped_examples": self.unmapped[:20]}


def candidate_columns(prepared: Prepared, gene_set: str) -> np.ndarray:
    """Prepared-matrix columns the model would use before the vocabulary check."""
    names = prepared.var_names
    if gene_set == "all":
        return np.arange(names.size)
    if gene_set != "hvg":
        raise InputError("params", "vcc_scgpt_gene_set", "'hvg' or 'all'", repr(gene_set))
    from txrepro.studies.vcc.state import hvg_columns

    perturbed = [g for part in ("train", "val", "test") for g in prepared.split[part]]
    extra = names.get_indexer(perturbed)
    return np.unique(np.concatenate([hvg_columns(prepared), extra[extra >= 0]]))


def map_gene_set(prepared: Prepared, vocab: Any, sp: ScGPTParams, source: str | Path) -> GeneSet:
    """Candidate genes mapped to the vocabulary, with the count of misses and the floor enforced."""
    from txrepro.models.gene_vocab import map_genes_to_vocab

    cols = candidate_columns(prepared, sp.gene_set)
    genes = [str(g) for g in prepared.var_names[cols]]
    mapping = map_genes_to_vocab(genes, vocab, min_fraction=sp.min_gene_fraction, source=source, field="prepared var_names")
    keep = mapping.mapped
    missing_targets = [g for g in prepared.split["test"] if g not in set(np.asarray(genes)[keep])]
    if missing_targets:
        log.warning("scGPT: %d test perturbation genes are not model tokens (no perturbation flag possible): %s",
                    len(missing_targets), ", ".join(missing_targets[:10]))
    return GeneSet(cols[keep], list(np.asarray(genes)[keep]), mapping.ids[keep], len(genes), list(mapping.unmapped))


def _build_generator(vocab: Any, arch: dict[str, Any], dropout: float) -> Any:
    """scgpt's TransformerGenerator with PyTorch attention (flash-attn keys are renamed on load),
    fused at inference (models.scgpt_inference)."""
    from txrepro.models.scgpt_inference import fuse_attention
    from txrepro.models.torchtext_vocab import import_scgpt

    scgpt = import_scgpt()
    return fuse_attention(scgpt.model.TransformerGenerator(
        ntoken=len(vocab), d_model=int(arch["embsize"]), nhead=int(arch["nheads"]), d_hid=int(arch["d_hid"]),
        nlayers=int(arch["nlayers"]), nlayers_cls=int(arch.get("n_layers_cls", 3)), n_cls=1, vocab=vocab,
        dropout=dropout, pad_token=PAD_TOKEN, pad_value=PAD_VALUE, pert_pad_id=PERT_PAD_ID,
        use_fast_transformer=False,
    ))


def _arch_of(sp: ScGPTParams) -> dict[str, Any]:
    return {"embsize": sp.embsize, "nheads": sp.nheads, "d_hid": sp.d_hid, "nlayers": sp.nlayers, "n_layers_cls": sp.n_layers_cls}


@dataclass
class Initialised:
    model: Any
    vocab: Any
    args: dict[str, Any]
    genes: GeneSet
    origin: str  # what the weights are: pretrained checkpoint or random initialisation


def initialise(prepared: Prepared, sp: ScGPTParams, *, checkpoint: str | Path | None, allow_random_init: bool,
               verify_checksums: bool, seed: int) -> Initialised:
    """The tutorial's starting model: pretrained encoder + transformer, fresh perturbation/decoder."""
    from txrepro.models.scgpt_checkpoint import load_checkpoint_dir, load_state_accounted, manifest_checksums
    from txrepro.models.torchtext_vocab import import_scgpt

    why = unavailable_reason(checkpoint, allow_random_init)
    if why:
        raise InputError("params", "vcc_scgpt_checkpoint", "a scGPT checkpoint folder", why)
    seed_everything(seed)
    if checkpoint is not None:
        ck = load_checkpoint_dir(checkpoint, checksums=manifest_checksums("vcc") if verify_checksums else None)
        vocab = ck.vocab
        for tok in SPECIAL_TOKENS:  # the tutorial appends missing special tokens
            if tok not in vocab:
                vocab.append_token(tok)
        vocab.set_default_index(vocab[PAD_TOKEN])
        genes = map_gene_set(prepared, vocab, sp, Path(checkpoint) / "vocab.json")
        model = _build_generator(vocab, ck.args, sp.dropout)
        top = lambda keys: sorted({k.split(".", 1)[0] + "." for k in keys})  # noqa: E731
        skip = [p for p in top(ck.state_dict) if p not in PRETRAINED_PREFIXES]
        new = [p for p in top(model.state_dict()) if p not in PRETRAINED_PREFIXES]
        report = load_state_accounted(model, ck.state_dict, source=Path(checkpoint) / "best_model.pt", skip_prefixes=skip, new_prefixes=new)
        origin = f"pretrained scGPT checkpoint {Path(checkpoint).name} ({report.summary()})"
        return Initialised(model, vocab, dict(ck.args), genes, origin)
    scgpt = import_scgpt()
    vocab = scgpt.tokenizer.GeneVocab([str(g) for g in prepared.var_names], specials=list(SPECIAL_TOKENS))
    vocab.set_default_index(vocab[PAD_TOKEN])
    genes = map_gene_set(prepared, vocab, sp, prepared.h5ad)
    args = _arch_of(sp)
    return Initialised(_build_generator(vocab, args, sp.dropout), vocab, args, genes, RANDOM_INIT_LABEL)


def _dense(adata: Any, columns: np.ndarray) -> np.ndarray:
    import scipy.sparse as sp

    x = adata.X[:, columns]
    return (x.toarray() if sp.issparse(x) else np.asarray(x)).astype(np.float32)


def _pairs(prepared: Prepared, perts: list[str], genes: GeneSet, ctrl: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(control values, perturbation flags' position, perturbed values): GEARS pairs every perturbed
    cell with one random control cell."""
    rows = prepared.rows_of(perts)
    target = _dense(rows, genes.columns)
    labels = rows.obs[prepared.pert_col].astype(str).to_numpy()
    pos = np.array([-1 if (p := genes.position(lab)) is None else p for lab in labels], dtype=np.int64)
    basal = ctrl[rng.integers(0, ctrl.shape[0], size=target.shape[0])]
    return basal, pos, target


def _forward(model: Any, genes: GeneSet, basal: Any, pos: Any, columns: Any, device: str) -> Any:
    """mlm_output for a batch on the given input columns (positions into genes)."""
    import torch

    n = basal.shape[0]
    flags = torch.zeros((n, columns.numel()), dtype=torch.long, device=device)
    where = (pos.unsqueeze(1) == columns.unsqueeze(0))  # perturbed gene among the input columns
    flags[where] = 1
    ids = torch.as_tensor(genes.vocab_ids, device=device)[columns].unsqueeze(0).repeat(n, 1)
    values = basal[:, columns]
    mask = torch.zeros_like(values, dtype=torch.bool)
    return model(ids, values, flags, src_key_padding_mask=mask, CLS=False, CCE=False, MVC=False, ECS=False)["mlm_output"]


def _epoch_loss(model: Any, genes: GeneSet, data: tuple[np.ndarray, ...], sp: ScGPTParams, device: str,
                rng: np.random.Generator | None, optimizer: Any = None) -> float:
    """One pass (training when an optimizer is given); mean masked MSE per batch."""
    import torch

    from txrepro.models.torchtext_vocab import import_scgpt

    masked_mse_loss = import_scgpt().loss.masked_mse_loss
    basal, pos, target = data
    order = rng.permutation(basal.shape[0]) if rng is not None else np.arange(basal.shape[0])
    n_genes = len(genes.genes)
    losses = []
    model.train(optimizer is not None)
    for s in range(0, order.size, sp.batch_size):
        idx = order[s : s + sp.batch_size]
        b = torch.from_numpy(basal[idx]).to(device)
        t = torch.from_numpy(target[idx]).to(device)
        p = torch.from_numpy(pos[idx]).to(device)
        cols = torch.arange(n_genes, device=device)
        if optimizer is not None and n_genes > sp.max_seq_len:  # tutorial: a random max_seq_len genes per batch
            cols = torch.from_numpy(np.sort(rng.permutation(n_genes)[: sp.max_seq_len])).to(device)
        with torch.set_grad_enabled(optimizer is not None):
            out = _forward(model, genes, b, p, cols, device)
            tv = t[:, cols]
            loss = masked_mse_loss(out, tv, torch.ones_like(tv, dtype=torch.bool))
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def finetune_scgpt(
    prepared_dir: str | Path,
    outdir: str | Path,
    *,
    params: ScGPTParams = ScGPTParams(),
    checkpoint: str | Path | None = None,
    allow_random_init: bool = False,
    verify_checksums: bool = False,
    seed: int = 42,
    device: str = "auto",
) -> Path:
    """Train on the training perturbations (best epoch by validation loss); writes a checkpoint folder."""
    import pandas as pd
    import torch

    from txrepro.models.scgpt_checkpoint import save_checkpoint_dir

    t0 = time.perf_counter()
    prepared = Prepared(prepared_dir)
    if params.epochs < 1 or params.batch_size < 1:
        raise InputError("params", "vcc_scgpt_epochs / vcc_scgpt_batch_size", "positive integers", f"{params.epochs} / {params.batch_size}")
    if not prepared.split["train"]:
        raise InputError(prepared.folder, "split.json", "at least one training perturbation", "none")
    device = resolve_device(device)
    init = initialise(prepared, params, checkpoint=checkpoint, allow_random_init=allow_random_init, verify_checksums=verify_checksums, seed=seed)
    model = init.model.to(device)
    rng = np.random.default_rng(seed)
    ctrl = _dense(prepared.control_rows(), init.genes.columns)
    train = _pairs(prepared, prepared.split["train"], init.genes, ctrl, rng)
    val = _pairs(prepared, prepared.split["val"], init.genes, ctrl, rng) if prepared.split["val"] else None
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=params.lr_gamma)
    history = []
    best, best_loss, best_epoch, stale = None, float("inf"), 0, 0
    initial = _epoch_loss(model, init.genes, train, params, device, None)
    for epoch in progress(range(1, params.epochs + 1), "vcc scGPT fine-tuning epochs", params.epochs):
        tr = _epoch_loss(model, init.genes, train, params, device, rng, optimizer)
        va = _epoch_loss(model, init.genes, val, params, device, None) if val is not None else tr
        history.append({"epoch": epoch, "train_loss": tr, "val_loss": va, "lr": scheduler.get_last_lr()[0]})
        log.info("scGPT epoch %d: train loss %.4f, validation loss %.4f", epoch, tr, va)
        if va < best_loss:
            best, best_loss, best_epoch, stale = copy.deepcopy(model.state_dict()), va, epoch, 0
        else:
            stale += 1
            if stale >= params.early_stop:
                log.info("scGPT: no better validation loss for %d epochs, stopping", stale)
                break
        scheduler.step()
    assert best is not None
    outdir = Path(outdir)
    with atomic_dir(outdir) as tmp:
        args = {**init.args, "pad_token": PAD_TOKEN, "pad_value": PAD_VALUE, "pert_pad_id": PERT_PAD_ID}
        save_checkpoint_dir(tmp / "checkpoint", best, args, init.vocab)
        pd.DataFrame(history).to_csv(tmp / LOSS_CSV, index=False)
        write_json(tmp / GENES_FILE, {"genes": init.genes.genes, "columns": init.genes.columns.tolist(), **init.genes.report()})
        write_json(tmp / TRAIN_INFO, {
            "model": "scgpt TransformerGenerator (perturbation tutorial recipe)",
            "scgpt_version": _version("scgpt"),
            "origin": init.origin,
            "random_init": checkpoint is None,
            "params": asdict(params),
            "seed": seed,
            "device": device,
            "training_pairs": int(train[0].shape[0]),
            "validation_pairs": int(val[0].shape[0]) if val is not None else 0,
            "initial_train_loss": initial,
            "best_epoch": best_epoch,
            "best_val_loss": best_loss,
            "genes": init.genes.report(),
            "seconds": round(time.perf_counter() - t0, 2),
        })
    log.info("scGPT fine-tuned in %.1f s: train loss %.4f -> %.4f, best epoch %d", time.perf_counter() - t0, initial,
             history[-1]["train_loss"], best_epoch)
    return outdir


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def load_finetuned(folder: str | Path, prepared: Prepared, dropout: float = 0.0) -> tuple[Any, GeneSet, dict[str, Any]]:
    """The fine-tuned model of a `scgpt-finetune` folder, every tensor loaded."""
    from txrepro.models.scgpt_checkpoint import load_checkpoint_dir, load_state_accounted

    d = Path(folder)
    info_file, genes_file = d / TRAIN_INFO, d / GENES_FILE
    for f in (info_file, genes_file):
        if not f.is_file():
            raise InputError(d, f.name, "the output folder of `vcc.py scgpt-finetune`", "missing")
    info = json.loads(info_file.read_text())
    g = json.loads(genes_file.read_text())
    ck = load_checkpoint_dir(d / "checkpoint")
    names = prepared.var_names
    columns = np.asarray(g["columns"], dtype=np.int64)
    if columns.size and (columns.max() >= names.size or list(names[columns]) != g["genes"]):
        raise InputError(genes_file, "genes", "the genes of this prepared folder", "a model trained on other genes")
    ids = np.array([ck.vocab[x] for x in g["genes"]], dtype=np.int64)
    genes = GeneSet(columns, list(g["genes"]), ids, int(g["candidates"]), list(g.get("unmapped_examples", [])))
    model = _build_generator(ck.vocab, ck.args, dropout)
    load_state_accounted(model, ck.state_dict, source=d / "checkpoint" / "best_model.pt")
    return model, genes, info


def _predictor(ctx: PredictionContext, model: Any, genes: GeneSet, info: dict[str, Any]) -> CellPrediction:
    import torch

    device = resolve_device(ctx.device)
    model = model.to(device).eval()
    batch = max(1, ctx.scgpt.batch_size)
    cols = torch.arange(len(genes.genes), device=device)

    def predict_block(i: int, basal: np.ndarray) -> np.ndarray:
        p = genes.position(ctx.test[i])
        out = []
        with torch.no_grad():
            for s in range(0, basal.shape[0], batch):
                b = torch.from_numpy(basal[s : s + batch]).to(device)
                pos = torch.full((b.shape[0],), -1 if p is None else p, dtype=torch.long, device=device)
                out.append(_forward(model, genes, b, pos, cols, device).float().cpu().numpy())
        return np.vstack(out)

    return cells_from_control_rows(ctx, genes.columns, predict_block, info)


def _note(origin: str, genes: GeneSet, extra: str = "") -> str:
    r = genes.report()
    return (f"scgpt {_version('scgpt')} TransformerGenerator, {origin}{extra}; {r['in_vocabulary']}/{r['candidates']} genes in the "
            f"vocabulary ({r['unmapped']} unmapped, kept at control values); other genes kept at the sampled control cells' values (effect 0)")


class ScGPTZeroShot(Predictor):
    """The tutorial's initial model, no training on this data."""

    name = "scgpt_zero_shot"

    def predict(self, ctx: PredictionContext) -> CellPrediction:
        init = initialise(ctx.prepared, ctx.scgpt, checkpoint=ctx.scgpt_checkpoint, allow_random_init=ctx.scgpt_allow_random_init,
                          verify_checksums=ctx.scgpt_verify_checksums, seed=ctx.params.seed)
        note = _note(init.origin, init.genes)
        return _predictor(ctx, init.model, init.genes, {"features": note, "random_init": ctx.scgpt_checkpoint is None,
                                                        "genes": init.genes.report()})


class ScGPTFinetuned(Predictor):
    """The model of a `vcc.py scgpt-finetune` folder (ctx.trained)."""

    name = "scgpt_finetuned"

    def predict(self, ctx: PredictionContext) -> CellPrediction:
        if ctx.trained is None:
            raise InputError("command line", "trained model (--trained; Nextflow passes the training step's folder)", "the output folder of `vcc.py scgpt-finetune` for model scgpt_finetuned", "not given")
        model, genes, info = load_finetuned(ctx.trained, ctx.prepared)
        extra = f", best epoch {info['best_epoch']} (train loss {info['initial_train_loss']:.4g} before fine-tuning)"
        origin = info["origin"] if info.get("random_init") else f"fine-tuned from {info['origin']}"
        note = _note(origin, genes, extra)
        return _predictor(ctx, model, genes, {"features": note, "random_init": bool(info.get("random_init")), "genes": genes.report(),
                                              "train_info": info})


__all__ = ["ScGPTFinetuned", "ScGPTZeroShot", "finetune_scgpt", "unavailable_reason"]
