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


FIXTURE_SIZE = {"d_model": 32, "nhead": 2, "d_hid": 32, "nlayers": 2}
README_SIZE = {"d_model": 128, "nhead": 4, "d_hid": 128, "nlayers": 4}  # scgpt-age README's 4 x 4 x 128


def _model(vocab, cfg, seed: int, size: dict[str, int]):
    """A classifier with random weights: throughput does not need training."""
    from txrepro.models.scgpt_checkpoint import ScGPTArchitecture
    from txrepro.studies.age_clock.model import build_classifier

    torch.manual_seed(seed)
    arch = ScGPTArchitecture(n_bins=cfg.n_bins, **size)
    model = build_classifier(vocab, arch, cfg)
    return model.eval()


def _time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def case(name: str, counts: sp.csr_matrix, genes: list[str], vocab, cfg, targets: list[int], repeats: int, size: dict[str, int] = FIXTURE_SIZE) -> dict:
    from txrepro.studies.age_clock.binning import bin_rows
    from txrepro.studies.age_clock.model import token_batch
    from txrepro.studies.age_clock.perturb import _p_old_original, batched_sweep, reference_sweep

    model = _model(vocab, cfg, seed=0, size=size)
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
        print(f"{name:<28} {mode:<8} ours {rows[mode]['gene_arms_per_s_ours']:8.3g} gene-arms/s   reference {rows[mode]['gene_arms_per_s_reference']:8.3g}   "
              f"x{rows[mode]['speedup']:.1f}   max|dP| {rows[mode]['max_abs_diff_p']:.2g}   effect r {rows[mode]['effect_correlation']:.3f}   "
              f"reference forward share {rows[mode]['reference_forward_share']:.0%}", flush=True)
    return {"cells": counts.shape[0], "genes": len(genes), "target_genes": len(targets), "detected_fraction": float((counts > 0).mean()), "model": size, **rows}


def encoder_case(vocab, cfg, size: dict[str, int], n_seq: int, length: int) -> dict:
    """One forward of the encoder at the protocol's length: PyTorch's eval fast path (what scgpt
    runs, the reference) against the fused-attention path the sweep uses, same weights and tokens."""
    from txrepro.models.scgpt_inference import torch_attention

    model = _model(vocab, cfg, seed=0, size=size)
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, len(vocab), (n_seq, length), generator=g)
    vals = torch.randint(0, cfg.n_bins, (n_seq, length), generator=g).float()
    with torch.no_grad():
        with torch_attention(model.encoder):
            t_native, native = _time(lambda: model.encoder._encode(src, vals, None, None), 1)
        t_fused, fused = _time(lambda: model.encoder._encode(src, vals, None, None), 1)
    row = {"model": size, "sequences": n_seq, "tokens": length, "seconds_per_sequence_native": t_native / n_seq,
           "seconds_per_sequence_fused": t_fused / n_seq, "speedup": t_native / t_fused, "max_abs_diff": float((native - fused).abs().max())}
    name = "x".join(str(size[k]) for k in ("nlayers", "nhead", "d_model"))
    print(f"encoder {name:<12} {length} tokens   native {row['seconds_per_sequence_native']:.2f} s/seq   fused {row['seconds_per_sequence_fused']:.2f} s/seq   "
          f"x{row['speedup']:.2f}   max|diff| {row['max_abs_diff']:.2g}", flush=True)
    return row


def _sparse_counts(rng: np.random.Generator, n_cells: int, n_genes: int) -> sp.csr_matrix:
    """scRNA-like counts: gamma-Poisson with log-normal gene means (about 12-15% detected)."""
    mu = np.exp(rng.normal(-2.2, 1.2, n_genes))
    return sp.csr_matrix(rng.poisson(rng.gamma(0.5, mu / 0.5, (n_cells, n_genes))).astype(np.float32))


CASES = ("fixture", "sparse", "protocol_length", "encoder")
WHOLE_HUMAN_SIZE = {"d_model": 512, "nhead": 8, "d_hid": 512, "nlayers": 12}  # the checkpoint that ran


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/out/age_clock")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), help="which cases to run (default: all)")
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
    result_file = out / "age_clock_perturbation.json"
    earlier = json.loads(result_file.read_text())["cases"] if result_file.is_file() else {}
    # Cases not run this time keep their earlier numbers (`--cases` runs a subset).
    results = {"threads": args.threads, "torch": torch.__version__, "python": sys.version.split()[0], "cases": earlier}
    cfg = protocol_config("repository", scale="tiny")

    if "fixture" in args.cases:  # 40 genes, 96 cells (most genes detected in most cells)
        adata, roles = make_adata(0)
        genes = roles["old"] + roles["young"] + roles["null"]
        vocab = scgpt.tokenizer.GeneVocab(genes, specials=["<pad>", "<cls>", "<eoc>"])
        counts = sp.csr_matrix(adata[:96, genes].X, dtype=np.float32)
        results["cases"]["fixture_40_genes"] = case("fixture (40 genes, 96 cells)", counts, genes, vocab, cfg, list(range(len(genes))), args.repeats)
    cfg51 = replace(cfg, n_bins=51)
    if "sparse" in args.cases:  # scRNA-like sparsity: 200 genes, 100 cells, 51 bins; 20 target genes
        genes2 = [f"G{i:04d}" for i in range(200)]
        vocab2 = scgpt.tokenizer.GeneVocab(genes2, specials=["<pad>", "<cls>", "<eoc>"])
        counts2 = _sparse_counts(np.random.default_rng(1), 100, 200)
        results["cases"]["sparse_200_genes"] = case("sparse (200 genes, 100 cells)", counts2, genes2, vocab2, cfg51, list(range(0, 200, 10)), 1)
    if "protocol_length" in args.cases:  # the repository protocol's 3,000 genes (3,001-3,002 tokens), README-size model
        genes3 = [f"G{i:04d}" for i in range(3000)]
        vocab3 = scgpt.tokenizer.GeneVocab(genes3, specials=["<pad>", "<cls>", "<eoc>"])
        counts3 = _sparse_counts(np.random.default_rng(2), 8, 3000)
        results["cases"]["protocol_length_3000_genes"] = case(
            "3,000 genes, 8 cells, 4x4x128", counts3, genes3, vocab3, cfg51, [0, 1500], 1, size=README_SIZE
        )
    if "encoder" in args.cases:  # the forward pass alone at 3,002 tokens: where the time goes
        genes4 = [f"G{i:04d}" for i in range(3002)]
        vocab4 = scgpt.tokenizer.GeneVocab(genes4, specials=["<pad>", "<cls>", "<eoc>"])
        results["cases"]["encoder_3002_tokens"] = {
            "readme_4x4x128": encoder_case(vocab4, cfg51, README_SIZE, 4, 3002),
            "whole_human_12x8x512": encoder_case(vocab4, cfg51, WHOLE_HUMAN_SIZE, 1, 3002),
        }

    result_file.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {result_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
