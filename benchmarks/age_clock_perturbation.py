#!/usr/bin/env python3
"""age_clock: perturbation sweep throughput, batched (ours) vs the original approach, same model and cells.

Reference = what scgpt-age's perturbation_analysis.py does per gene and arm: a new AnnData with the
gene appended (or replaced), scgpt's Preprocessor (normalise to 1e4, bin with numpy re-seeded),
scgpt's tokenize_and_pad_batch, TransformerModel.forward with its padding mask in batches of 32.
Ours = txrepro.studies.age_clock.perturb.batched_sweep. Throughput = gene-arms per second (one gene,
one arm, all cells). Agreement is reported next to speed: append must match to float rounding;
replace differs by design (see perturb.py).

    PYTHONPATH=src .venv/bin/python benchmarks/age_clock_perturbation.py --out benchmarks/out/age_clock
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TXREPRO_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402


def _model(vocab, genes_in_vocab, cfg, seed: int):
    """A tiny classifier (the fixture's size) with a random head: throughput does not need training."""
    from txrepro.models.scgpt_checkpoint import ScGPTArchitecture
    from txrepro.studies.age_clock.model import build_classifier

    torch.manual_seed(seed)
    arch = ScGPTArchitecture(d_model=32, nhead=2, d_hid=32, nlayers=2, n_bins=cfg.n_bins)
    model = build_classifier(vocab, arch, cfg)
    return model.eval()


def _time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def case(name: str, counts: sp.csr_matrix, genes: list[str], vocab, cfg, targets: list[int], repeats: int) -> dict:
    from txrepro.studies.age_clock.binning import bin_rows
    from txrepro.studies.age_clock.model import token_batch
    from txrepro.studies.age_clock.perturb import _p_old_original, batched_sweep, reference_sweep

    model = _model(vocab, genes, cfg, seed=0)
    ids = np.array([vocab[g] for g in genes])
    rows = {}
    for mode in ("append", "replace"):
        c = replace(cfg, perturb_mode=mode, max_seq_len=len(genes) + 2)  # no overflow: both sides see the same tokens
        t_ours, ours = _time(lambda: batched_sweep(model, counts, ids, vocab["<cls>"], c, genes=targets), repeats)
        t_ref, ref = _time(lambda: reference_sweep(model, counts, genes, vocab, c, targets=targets), 1)
        arms = 2 * len(targets)
        hi, lo = ours.p_high[:, targets], ours.p_low[:, targets]
        rhi, rlo = ref.p_high[:, targets], ref.p_low[:, targets]
        eff, reff = (hi - lo).mean(0), (rhi - rlo).mean(0)
        # The reference's own forward passes, timed alone: what is left once AnnData, re-binning and
        # tokenising are gone (the part no batching can remove).
        src, vals = token_batch(ids, bin_rows(counts, c.n_bins, seed=0), vocab["<cls>"])
        t_fwd, _ = _time(lambda: [_p_old_original(model, src[i : i + 32], vals[i : i + 32], "cpu") for i in range(0, len(src), 32)], repeats)
        rows[mode] = {
            "reference_forward_share": t_fwd * arms / t_ref,
            "gene_arms_per_s_ours": arms / t_ours,
            "gene_arms_per_s_reference": arms / t_ref,
            "speedup": t_ref / t_ours,
            "seconds_ours": t_ours,
            "seconds_reference": t_ref,
            "forward_passes_ours": ours.n_forward,
            "sequences": ours.n_sequences,
            "max_abs_diff_p": float(max(np.abs(hi - rhi).max(), np.abs(lo - rlo).max())),
            "effect_correlation": float(np.corrcoef(eff, reff)[0, 1]) if len(targets) > 2 else float("nan"),
        }
        print(f"{name:<28} {mode:<8} ours {rows[mode]['gene_arms_per_s_ours']:8.1f} gene-arms/s   reference {rows[mode]['gene_arms_per_s_reference']:7.2f}   "
              f"x{rows[mode]['speedup']:.1f}   max|dP| {rows[mode]['max_abs_diff_p']:.2g}   effect r {rows[mode]['effect_correlation']:.3f}   "
              f"reference forward share {rows[mode]['reference_forward_share']:.0%}", flush=True)
    return {"cells": counts.shape[0], "genes": len(genes), "target_genes": len(targets), "detected_fraction": float((counts > 0).mean()), **rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/out/age_clock")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from txrepro.fixtures.age_clock import make_adata
    from txrepro.models.torchtext_vocab import import_scgpt
    from txrepro.runtime import configure_logging
    from txrepro.studies.age_clock.config import protocol_config

    configure_logging(False)
    scgpt = import_scgpt()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"threads": args.threads, "torch": torch.__version__, "python": sys.version.split()[0], "cases": {}}
    cfg = protocol_config("repository", scale="tiny")

    # 1. The fixture: 40 genes, 96 cells (most genes detected in most cells).
    adata, roles = make_adata(0)
    genes = roles["old"] + roles["young"] + roles["null"]
    vocab = scgpt.tokenizer.GeneVocab(genes, specials=["<pad>", "<cls>", "<eoc>"])
    counts = sp.csr_matrix(adata[:96, genes].X, dtype=np.float32)
    results["cases"]["fixture_40_genes"] = case("fixture (40 genes, 96 cells)", counts, genes, vocab, cfg, list(range(len(genes))), args.repeats)

    # 2. scRNA-like sparsity: 200 genes, ~15% detected, 100 cells, 51 bins; 20 target genes.
    rng = np.random.default_rng(1)
    genes2 = [f"G{i:04d}" for i in range(200)]
    vocab2 = scgpt.tokenizer.GeneVocab(genes2, specials=["<pad>", "<cls>", "<eoc>"])
    mu = np.exp(rng.normal(-2.2, 1.2, 200))
    counts2 = sp.csr_matrix(rng.poisson(rng.gamma(0.5, mu / 0.5, (100, 200))).astype(np.float32))
    cfg51 = replace(cfg, n_bins=51)
    results["cases"]["sparse_200_genes"] = case("sparse (200 genes, 100 cells)", counts2, genes2, vocab2, cfg51, list(range(0, 200, 10)), 1)

    (out / "age_clock_perturbation.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {out / 'age_clock_perturbation.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
