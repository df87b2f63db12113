#!/usr/bin/env python3
"""Training throughput (cells/s) and peak memory of STATE and scGPT on CPU, one torch thread.

Sizes: the vcc fixture (680 cells x 60 genes) and a VCC-like set (10,000 cells x 2,000 genes, all
HVGs; 50 perturbations with planted block effects). Each training runs in its own process so
its peak RSS (ru_maxrss) is its own; the timing is the whole `state-train` / `scgpt-finetune`
step (data writing, model building and checkpoints included), with the tiny presets.

    PYTHONPATH=src python benchmarks/vcc_models.py [--state-steps 100] [--scgpt-epochs 1]
    PYTHONPATH=src python benchmarks/vcc_models.py --inference   # scGPT prediction forward only

`--inference` times one eval forward of scgpt's TransformerGenerator as the vcc predictor calls it
(all-False padding mask, one perturbed gene flagged) at the tutorial's 1,536 tokens: PyTorch's
encoder against the fused attention the predictor uses (txrepro.models.scgpt_inference).

Cells per second: STATE trains on batch_size x cell_set_len cells per step (steps x 16 x 8 / s);
scGPT on one (control, perturbed) pair per training cell per epoch (pairs x epochs / s).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, resource, torch
torch.set_num_threads(1)
from dataclasses import replace
from txrepro.studies.vcc.params import STATE_PRESETS, SCGPT_PRESETS
kind, prep, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t = time.perf_counter()
if kind == "state":
    from txrepro.studies.vcc.state import train_state
    p = replace(STATE_PRESETS["tiny"], max_steps=n, more_steps_step=max(1, n // 2), val_freq=n)
    train_state(prep, out, params=p, device="cpu")
    cells = n * p.batch_size * p.cell_set_len
else:
    from txrepro.studies.vcc.scgpt_perturb import finetune_scgpt
    p = replace(SCGPT_PRESETS["tiny"], epochs=n)
    finetune_scgpt(prep, out, params=p, allow_random_init=True, device="cpu")
    cells = n * json.load(open(out + "/train_info.json"))["training_pairs"]
sec = time.perf_counter() - t
print(json.dumps({"seconds": sec, "cells": cells, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def vcc_like(path: Path, n_cells: int, n_genes: int, n_perts: int, seed: int = 0) -> Path:
    """Raw counts with the vcc schema: controls plus n_perts targets, each shifting a gene block."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i:05d}" for i in range(n_genes)]
    targets = genes[:n_perts]
    n_ctrl = n_cells // 5
    labels = np.array(["non-targeting"] * n_ctrl + list(rng.choice(targets, n_cells - n_ctrl)))
    mu = rng.lognormal(0.0, 1.0, n_genes)
    mean = np.tile(mu, (n_cells, 1))
    for k, t in enumerate(targets):
        rows = labels == t
        block = rng.choice(n_genes, 20, replace=False)
        mean[np.ix_(rows, block)] *= 3.0 if k % 2 else 0.3
        mean[rows, k] *= 0.2
    counts = sp.csr_matrix(rng.poisson(mean).astype(np.float32))
    obs = pd.DataFrame({"target_gene": pd.Categorical(labels), "guide_id": pd.Categorical([f"{x}_g1" for x in labels]),
                        "batch": pd.Categorical(rng.choice(["b1", "b2"], n_cells))}, index=[f"c{i}" for i in range(n_cells)])
    var = pd.DataFrame({"gene_id": [f"ENSGBENCH{i:06d}" for i in range(n_genes)]}, index=genes)
    ad.AnnData(counts, obs=obs, var=var).write_h5ad(path)
    (path.parent / "test_genes.txt").write_text("\n".join(targets[:5]) + "\n")
    return path


def run(kind: str, prep: Path, out: Path, n: int) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, kind, str(prep), str(out), str(n)], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r["cells_per_s"] = r["cells"] / r["seconds"]
    return r


GENERATOR_SIZES = {"tiny 2 x 2 x 32": (32, 2, 2, 16), "whole-human 12 x 8 x 512": (512, 8, 12, 2)}  # d, heads, layers, batch


def generator_inference(length: int = 1536) -> list[dict]:
    import torch

    from txrepro.models.scgpt_inference import torch_attention
    from txrepro.models.torchtext_vocab import import_scgpt
    from txrepro.studies.vcc.scgpt_perturb import _build_generator

    torch.set_num_threads(1)
    vocab = import_scgpt().tokenizer.GeneVocab([f"G{i:05d}" for i in range(length)], specials=["<pad>", "<cls>", "<eoc>"])
    rows = []
    for name, (d, heads, layers, batch) in GENERATOR_SIZES.items():
        torch.manual_seed(0)
        model = _build_generator(vocab, {"embsize": d, "nheads": heads, "d_hid": d, "nlayers": layers}, dropout=0.2).eval()
        ids = torch.arange(3, 3 + length).repeat(batch, 1)
        values = torch.rand(batch, length) * 3
        flags = torch.zeros(batch, length, dtype=torch.long)
        flags[:, 0] = 1
        kw = dict(src_key_padding_mask=torch.zeros(batch, length, dtype=torch.bool), CLS=False, CCE=False, MVC=False, ECS=False)

        def once() -> tuple[float, torch.Tensor]:
            t = time.perf_counter()
            out = model(ids, values, flags, **kw)["mlm_output"]
            return time.perf_counter() - t, out

        with torch.no_grad():
            with torch_attention(model):
                once()
                t_torch, ref = once()
            once()
            t_fused, out = once()
        rows.append({"model": name, "tokens": length, "batch": batch, "s_per_cell_pytorch": round(t_torch / batch, 4),
                     "s_per_cell_fused": round(t_fused / batch, 4), "speedup": round(t_torch / t_fused, 2),
                     "max_abs_diff": float((out - ref).abs().max())})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state-steps", type=int, default=100)
    ap.add_argument("--scgpt-epochs", type=int, default=1)
    ap.add_argument("--sizes", nargs="+", default=["fixture", "10000x2000"])
    ap.add_argument("--inference", action="store_true", help="only the scGPT prediction forward, PyTorch vs fused attention")
    args = ap.parse_args()
    if args.inference:
        generator_inference()
        return
    from txrepro.fixtures.vcc import write_fixture
    from txrepro.studies.vcc.params import DataParams
    from txrepro.studies.vcc.preprocess import prepare

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in args.sizes:
            d = tmp / size
            if size == "fixture":
                fx = write_fixture(d, seed=0)
                counts, test_genes = fx["input"], fx["test_genes"]
            else:
                n_cells, n_genes = (int(x) for x in size.split("x"))
                d.mkdir()
                counts = vcc_like(d / "counts.h5ad", n_cells, n_genes, 50)
                test_genes = d / "test_genes.txt"
            prepare(counts, d / "prep", dp=DataParams(n_hvg=2000), test_genes_file=test_genes)
            for kind, n in (("state", args.state_steps), ("scgpt", args.scgpt_epochs)):
                r = run(kind, d / "prep", d / f"{kind}_out", n)
                rows.append({"size": size, "model": kind, **{k: round(v, 2) for k, v in r.items()}})
                print(json.dumps(rows[-1]), flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
