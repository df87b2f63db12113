"""perturb: in-silico overexpression and knockdown/knockout of every gene, batched over genes and cells.

The original (perturbation_analysis.py) built two AnnData objects per gene, re-normalised and
re-binned every cell, re-tokenised and ran the model in batches of 32. Here each run's cells are
binned once per arm and every (cell, gene) sequence is an edit of those tokens:

- append (repository, the original): a token for the gene is appended, with 10,000 counts (high)
  or 0 (low); the gene's own token stays. Appending one column changes the cell's bin edges the same
  way whatever the gene is, so the cells are binned once with the extra 10,000-count column and
  once without (a zero is never binned): this equals the original's per-gene re-binning exactly,
  including scgpt's random tie-breaking (same seed, same draw order). When <cls> + genes + the
  appended token exceed max_seq_len, tokens are dropped at random as scgpt's pad_batch does.
- replace (article, and the corrected repository variant): the gene's own value becomes 0 (knockout)
  or the overexpression value (10,000 counts, or the gene's maximum in that tissue). Other genes keep
  their bins; the edited gene's bin is placed against the cell's own bin edges (binning.edit_bin).
  Re-binning the whole cell would move the other genes' edges by at most one order statistic; the
  benchmark reports how far the two differ.

`reference_sweep` is the original approach (AnnData per gene, scgpt's Preprocessor and tokenizer),
kept for the benchmark and the equivalence tests.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path
from txrepro.models.scgpt_inference import torch_attention
from txrepro.runtime import deterministic_torch, get_logger, progress, resolve_device, seed_everything
from txrepro.studies.age_clock.binning import bin_rows, edit_bin
from txrepro.studies.age_clock.config import NEGATIVE_CLASS, POSITIVE_CLASS, AgeClockConfig
from txrepro.studies.age_clock.data import read_prepared
from txrepro.studies.age_clock.model import AgeClassifier, load_classifier
from txrepro.studies.age_clock.train import _autocast, apply_overrides

log = get_logger(__name__)

OE_COUNTS = 10_000.0  # the original's overexpression value
META_COLUMNS = ("run", "cell_id", "tissue", "age_group", "label", "p_old")
CONFIG_ATTR = "age_clock_config"


@dataclass(frozen=True)
class SweepResult:
    """P(old) per cell (rows) and gene (columns) with the gene raised (high) and lowered (low)."""

    p_high: np.ndarray
    p_low: np.ndarray
    p_base: np.ndarray
    n_sequences: int  # (cell, gene, arm) results
    n_forward: int  # sequences that went through the model


def sample_cells(obs: pd.DataFrame, cfg: AgeClockConfig, run: int) -> np.ndarray:
    """Row positions of the test cells perturbed in one run (seeded by the run index, as the original)."""
    rng = np.random.RandomState(cfg.seed + run)
    picked: list[np.ndarray] = []
    for tissue in sorted(obs["tissue"].unique()):
        in_tissue = np.flatnonzero(obs["tissue"].to_numpy() == tissue)
        if cfg.cells_per_group is not None:  # article: equal numbers of mid and old cells
            for group in (NEGATIVE_CLASS, POSITIVE_CLASS):
                pool = in_tissue[obs["age_group"].to_numpy()[in_tissue] == group]
                picked.append(np.sort(rng.choice(pool, min(cfg.cells_per_group, len(pool)), replace=False)))
        else:
            picked.append(np.sort(rng.choice(in_tissue, min(cfg.cells_per_tissue, len(in_tissue)), replace=False)))
    return np.concatenate(picked)


def _truncate(src: torch.Tensor, values: torch.Tensor, max_len: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """scgpt pad_batch's overflow rule: keep <cls> and max_len-1 other tokens chosen at random."""
    n, length = src.shape
    if length <= max_len:
        return src, values
    keys = rng.random((n, length - 1))
    keep = np.sort(np.argsort(keys, axis=1)[:, : max_len - 1], axis=1) + 1
    idx = torch.from_numpy(np.concatenate([np.zeros((n, 1), dtype=np.int64), keep], axis=1))
    return src.gather(1, idx), values.gather(1, idx)


@torch.no_grad()
def _p_old(model: AgeClassifier, src: torch.Tensor, values: torch.Tensor, device: str) -> np.ndarray:
    with _autocast(device):
        z = model.logit_old(src.to(device), values.to(device)).float()
    return torch.sigmoid(z).cpu().numpy().astype(np.float64)


def sequence_batch_size(cfg: AgeClockConfig, seq_len: int, device: str) -> int:
    """Sequences per forward pass. On CPU larger batches are slower (measured: 32 beats 128 and 512
    at 42 and 202 tokens); on CUDA fill about 256k tokens per pass."""
    if cfg.perturb_batch_size:
        return int(cfg.perturb_batch_size)
    return 32 if not str(device).startswith("cuda") else max(32, 262_144 // max(seq_len, 1))


@torch.no_grad()
def _p_old_original(model: AgeClassifier, src: torch.Tensor, values: torch.Tensor, device: str) -> np.ndarray:
    """The original's forward: TransformerModel.forward with the padding mask, all outputs computed,
    through PyTorch's encoder as scgpt runs it."""
    src, values = src.to(device), values.to(device)
    mask = src.eq(model.pad_id)
    if model.style == "finetune_cls":
        with torch_attention(model.encoder):
            z = model.encoder(src, values, src_key_padding_mask=mask, CLS=True)["cls_output"].float()
        return torch.softmax(z, dim=1)[:, 1].cpu().numpy().astype(np.float64)
    with torch_attention(model.encoder):
        out = model.encoder._encode(src, values, mask, None)
    keep = (~mask).unsqueeze(-1).to(out.dtype)
    return torch.sigmoid(model.head_logit((out * keep).sum(1) / keep.sum(1))).cpu().numpy().astype(np.float64)


def batched_sweep(
    model: AgeClassifier,
    counts: sp.csr_matrix,
    gene_ids: np.ndarray,
    cls_id: int,
    cfg: AgeClockConfig,
    *,
    oe_values: np.ndarray | None = None,
    device: str = "cpu",
    run: int = 0,
    genes: Sequence[int] | None = None,
) -> SweepResult:
    """Every gene (or the positions in `genes`) perturbed up and down in every cell of `counts`.

    `oe_values` (cells, genes) are the overexpression counts for replace mode (default 10,000).
    """
    model.eval()
    n_cells, n_genes = counts.shape
    targets = np.arange(n_genes) if genes is None else np.asarray(genes)
    rng = np.random.default_rng([cfg.seed, run])
    base_bins = bin_rows(counts, cfg.n_bins, seed=cfg.binning_seed)
    base_src = torch.empty(n_genes + 1, dtype=torch.long)
    base_src[0] = cls_id
    base_src[1:] = torch.from_numpy(gene_ids.astype(np.int64))
    low_vals = torch.zeros((n_cells, n_genes + 1), dtype=torch.float32)
    low_vals[:, 1:] = torch.from_numpy(base_bins.astype(np.float32))
    p_base = _p_old(model, base_src.expand(n_cells, -1).clone(), low_vals, device)
    if cfg.perturb_mode == "append":
        high = sp.hstack([counts, sp.csr_matrix(np.full((n_cells, 1), OE_COUNTS, dtype=np.float32))]).tocsr()
        high_bins = bin_rows(high, cfg.n_bins, seed=cfg.binning_seed)
        high_vals = torch.zeros((n_cells, n_genes + 2), dtype=torch.float32)
        high_vals[:, 1:] = torch.from_numpy(high_bins.astype(np.float32))
        low_app = torch.cat([low_vals, torch.zeros((n_cells, 1))], dim=1)
    else:
        _, edges = bin_rows(counts, cfg.n_bins, seed=cfg.binning_seed, return_edges=True)
        oe = np.full((n_cells, n_genes), OE_COUNTS) if oe_values is None else np.asarray(oe_values, dtype=np.float64)
        oe_bins = torch.from_numpy(edit_bin(oe, edges, cfg.n_bins).astype(np.float32))
    pairs_c = np.repeat(np.arange(n_cells), len(targets))
    pairs_g = np.tile(targets, n_cells)
    out = {"high": np.full((n_cells, n_genes), np.nan), "low": np.full((n_cells, n_genes), np.nan)}
    todo = {"high": np.ones(len(pairs_c), dtype=bool), "low": np.ones(len(pairs_c), dtype=bool)}
    if cfg.perturb_mode == "replace":
        # An edit that leaves the tokens unchanged (knocking out an undetected gene, raising a gene
        # already in its overexpression bin) gives the unperturbed sequence: its P(old) is p_base.
        current = base_bins[pairs_c, pairs_g]
        todo["low"] = current != 0
        todo["high"] = current != oe_bins.numpy()[pairs_c, pairs_g]
        for arm in out:
            out[arm][pairs_c[~todo[arm]], pairs_g[~todo[arm]]] = p_base[pairs_c[~todo[arm]]]
    n_forward = 0
    batch = sequence_batch_size(cfg, n_genes + 2, device)
    for arm in ("high", "low"):
        arm_c, arm_g = pairs_c[todo[arm]], pairs_g[todo[arm]]
        chunks = range(0, len(arm_c), batch)
        for start in progress(chunks, desc=f"age_clock perturb run {run} ({arm})", total=len(chunks)):
            c = torch.from_numpy(arm_c[start : start + batch])
            g = torch.from_numpy(arm_g[start : start + batch])
            k = len(c)
            if cfg.perturb_mode == "append":
                src = torch.cat([base_src.expand(k, -1), torch.from_numpy(gene_ids.astype(np.int64))[g].unsqueeze(1)], dim=1)
                vals = high_vals[c] if arm == "high" else low_app[c]
            else:
                src = base_src.expand(k, -1)
                vals = low_vals[c].clone()
                vals[torch.arange(k), g + 1] = oe_bins[c, g] if arm == "high" else 0.0
            out[arm][c.numpy(), g.numpy()] = _p_old(model, *_truncate(src, vals, cfg.max_seq_len, rng), device)
            n_forward += k
    return SweepResult(out["high"], out["low"], p_base, 2 * len(pairs_c), n_forward)


def reference_sweep(
    model: AgeClassifier,
    counts: sp.csr_matrix,
    genes: Sequence[str],
    vocab: Any,
    cfg: AgeClockConfig,
    *,
    oe_values: np.ndarray | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    targets: Sequence[int] | None = None,
) -> SweepResult:
    """The original approach: per gene and arm, a new AnnData, scgpt's Preprocessor (normalise 1e4,
    bin with numpy re-seeded), scgpt's tokenize_and_pad_batch, forward in batches of 32."""
    import anndata as ad

    from txrepro.models.torchtext_vocab import import_scgpt

    scgpt = import_scgpt()
    from scgpt.preprocess import Preprocessor
    from scgpt.tokenizer import tokenize_and_pad_batch

    model.eval()
    n_cells, n_genes = counts.shape
    dense = counts.toarray().astype(np.float32)
    p_high = np.full((n_cells, n_genes), np.nan)
    p_low = np.full((n_cells, n_genes), np.nan)
    n_seq = 0

    def run_arm(matrix: np.ndarray, names: list[str]) -> np.ndarray:
        with warnings.catch_warnings():  # the appended column repeats a gene name, as in the original
            warnings.filterwarnings("ignore", message="Variable names are not unique")
            adata = ad.AnnData(X=matrix, var=pd.DataFrame(index=pd.Index(names)))
        np.random.seed(cfg.binning_seed)  # scgpt-age re-seeds before binning
        Preprocessor(use_key="X", normalize_total=1e4, result_normed_key="X_normed", log1p=False, binning=cfg.n_bins, result_binned_key="X_binned")(adata)
        ids = np.array([vocab[n] for n in names], dtype=np.int64)
        tok = tokenize_and_pad_batch(
            adata.layers["X_binned"], ids, max_len=cfg.max_seq_len, vocab=vocab, pad_token="<pad>", pad_value=-2, append_cls=True, include_zero_gene=True
        )
        out = [_p_old_original(model, tok["genes"][i : i + batch_size], tok["values"][i : i + batch_size].float(), device) for i in range(0, n_cells, batch_size)]
        return np.concatenate(out)

    names = list(genes)
    p_base = run_arm(dense, names)
    for g in targets if targets is not None else range(n_genes):
        if cfg.perturb_mode == "append":
            hi = np.hstack([dense, np.full((n_cells, 1), OE_COUNTS, dtype=np.float32)])
            lo = np.hstack([dense, np.zeros((n_cells, 1), dtype=np.float32)])
            arm_names = names + [names[g]]
        else:
            hi, lo = dense.copy(), dense.copy()
            hi[:, g] = OE_COUNTS if oe_values is None else oe_values[:, g]
            lo[:, g] = 0.0
            arm_names = names
        p_high[:, g] = run_arm(hi, arm_names)
        p_low[:, g] = run_arm(lo, arm_names)
        n_seq += 2 * n_cells
    return SweepResult(p_high, p_low, p_base, n_seq, n_seq)


def read_perturbation(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, AgeClockConfig]:
    """A perturbation table and the configuration it was computed with."""
    from txrepro.studies.age_clock.config import config_from_dict

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "perturbation table", "a parquet file written by `age_clock.py perturb`", "nothing at this path")
    try:
        table = pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises several types for a non-parquet file
        raise InputError(p, "perturbation table", "a parquet file written by `age_clock.py perturb`", type(exc).__name__) from None
    if CONFIG_ATTR not in table.attrs:
        raise InputError(p, f"metadata '{CONFIG_ATTR}'", "a parquet file written by `age_clock.py perturb`")
    return table, config_from_dict(json.loads(table.attrs[CONFIG_ATTR]))


def tissue_max_counts(adata, cells: np.ndarray) -> np.ndarray:
    """Overexpression value of the article: each gene's maximum count in the cell's tissue (all splits)."""
    x = adata.X.tocsr() if sp.issparse(adata.X) else sp.csr_matrix(adata.X)
    tissue = adata.obs["tissue"].to_numpy()
    maxima = {t: np.asarray(x[tissue == t].max(axis=0).todense()).ravel() for t in np.unique(tissue)}
    return np.stack([maxima[t] for t in tissue[cells]])


def perturb(
    prepared: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    overrides: Mapping[str, Any] | None = None,
    device: str = "auto",
) -> Path:
    """All runs of the protocol's sweep -> one wide parquet (the original's gene_results_run*.csv
    columns, run as a column): run, cell_id, tissue, age_group, label, p_old, {gene}_high, {gene}_low."""
    adata, info, pcfg = read_prepared(prepared)
    model, vocab, mcfg, meta = load_classifier(model_dir)
    cfg = apply_overrides(mcfg, {**{k: getattr(pcfg, k) for k in ("binning_seed", "n_bins")}, **(overrides or {})})
    if cfg.n_bins != pcfg.n_bins:
        raise InputError(prepared, "n_bins", f"the model's {pcfg.n_bins} bins", str(cfg.n_bins))
    device = resolve_device(device)
    seed_everything(cfg.seed)
    deterministic_torch()
    model.to(device)
    if cfg.perturb_pooling == "avg-pool" and cfg.model == "finetune_cls":
        model.encoder.cell_emb_style = "avg-pool"  # the original perturbation script's model (a mismatch)
    test = np.flatnonzero(adata.obs["split"].to_numpy() == "test")
    obs_test = adata.obs.iloc[test]
    gene_ids = adata.var["vocab_id"].to_numpy()
    genes = list(adata.var_names)
    frames = []
    for run in range(cfg.n_runs):
        rows = test[sample_cells(obs_test, cfg, run)]
        counts = sp.csr_matrix(adata.X[rows], dtype=np.float32)
        oe = tissue_max_counts(adata, rows) if (cfg.perturb_mode == "replace" and cfg.oe_value == "tissue_max") else None
        res = batched_sweep(model, counts, gene_ids, vocab["<cls>"], cfg, oe_values=oe, device=device, run=run)
        meta_cols = adata.obs.iloc[rows][["cell_id", "tissue", "age_group", "label"]].reset_index(drop=True).astype({"tissue": str, "age_group": str})
        block = pd.DataFrame({f"{g}_high": res.p_high[:, j] for j, g in enumerate(genes)})
        block = pd.concat([block, pd.DataFrame({f"{g}_low": res.p_low[:, j] for j, g in enumerate(genes)})], axis=1)
        frames.append(pd.concat([meta_cols.assign(run=run + 1, p_old=res.p_base), block], axis=1))
        log.info("run %d: %d cells x %d genes x 2 arms (%s mode)", run + 1, len(rows), len(genes), cfg.perturb_mode)
    table = pd.concat(frames, ignore_index=True)
    table = table[list(META_COLUMNS) + [c for c in table.columns if c not in META_COLUMNS]]
    # The effective configuration travels inside the parquet (pandas stores attrs there), so the
    # statistics step needs no other input.
    table.attrs = {CONFIG_ATTR: json.dumps(cfg.as_dict(), sort_keys=True)}
    with atomic_path(out_path) as tmp:
        table.to_parquet(tmp, index=False)
    return Path(out_path)
