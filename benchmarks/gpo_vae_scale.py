#!/usr/bin/env python3
"""gpo_vae cost on CPU: training epoch time and peak memory at fixture size and at an Adamson-like
size (46k cells x 415 genes, 68 perturbations + 347 extra genes, synthetic), model-ATE time, and
OT control-pairing time versus the number of cells.

Each training size runs in its own subprocess, so its peak resident memory (ru_maxrss) is its own.
OT pairing is timed through our wrapper and through POT directly (the reference implementation)
in the same run, next to a nearest-neighbour pairing (scikit-learn) for scale.

    PYTHONPATH=src .venv/bin/python benchmarks/gpo_vae_scale.py --out benchmarks/out/gpo_vae_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {
    # name: cells, phenotype genes, perturbed genes, extra genes, config
    "fixture": (900, 33, 6, 4, "tiny"),
    "adamson_like": (46236, 415, 68, 347, "adamson"),
}


def synthetic_dataset(n_cells: int, n_genes: int, n_pert: int, n_extra: int, seed: int = 0):
    """PreparedDataset-shaped tensors with NB counts (training cost does not depend on the values)."""
    import torch

    from txrepro.studies.gpo_vae.data import cell_split
    from txrepro.studies.gpo_vae.features import PreparedDataset, SplitTensors

    rng = np.random.default_rng(seed)
    T = n_pert + n_extra
    labels = rng.integers(-1, n_pert, size=n_cells)  # -1 = control
    mu = rng.uniform(0.5, 50, size=n_genes)
    X = rng.negative_binomial(2, 2 / (2 + mu), size=(n_cells, n_genes)).astype(np.float32)
    D = np.zeros((n_cells, T), dtype=np.float32)
    D[labels >= 0, labels[labels >= 0]] = 1
    qc = (rng.random(n_cells) < 0.1).astype(np.float32)
    split = cell_split(n_cells, 0)
    splits = {}
    for s in ("train", "val", "test"):
        pos = np.flatnonzero(split == s)
        Xs = torch.from_numpy(X[pos])
        splits[s] = SplitTensors(
            X=Xs, D=torch.from_numpy(D[pos]), qc=torch.from_numpy(qc[pos]).unsqueeze(1),
            cfX=torch.from_numpy(X[pos][::-1].copy()), deltaX=torch.from_numpy(np.abs(rng.normal(size=(len(pos), T))).astype(np.float32)),
            library=Xs.sum(1, keepdim=True), positions=pos,
        )
    log_train = torch.log(splits["train"].X + 1)
    import anndata as ad
    import pandas as pd

    adata = ad.AnnData(X=np.zeros((1, n_genes), dtype=np.float32), var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    treatments = [f"g{i}" for i in range(T)]
    return PreparedDataset(adata, treatments, n_pert, splits, log_train.mean(0), log_train.std(0).clamp_min(1e-6))


def one_size(name: str, epochs: int, ate_particles: int) -> dict:
    """Runs in a subprocess: train `epochs` epochs (no early stop), then time the model ATE."""
    import torch

    torch.set_num_threads(1)
    from txrepro.studies.gpo_vae.ate import model_ate
    from txrepro.studies.gpo_vae.config import load_config
    from txrepro.studies.gpo_vae.train import train_model

    n_cells, n_genes, n_pert, n_extra, config = SIZES[name]
    t0 = time.perf_counter()
    ds = synthetic_dataset(n_cells, n_genes, n_pert, n_extra)
    build = time.perf_counter() - t0
    cfg = load_config(config)
    cfg.train.max_epochs = epochs
    cfg.train.patience = epochs + 1
    cpu0 = time.process_time()
    net, result, history = train_model(ds, cfg, seed=0)
    train_cpu = time.process_time() - cpu0
    dosages = torch.eye(n_pert + n_extra)[:n_pert]
    t0 = time.perf_counter()
    model_ate(net, dosages, n_particles=ate_particles, batch_particles=min(ate_particles, cfg.evaluate.ate_batch_particles), seed=0)
    ate_s = time.perf_counter() - t0
    return {
        "size": name, "cells": n_cells, "genes": n_genes, "treatments": n_pert + n_extra, "config": config,
        "parameters": result.n_parameters, "epochs": result.epochs_run, "train_batches_per_epoch": -(-len(ds.splits["train"]) // cfg.train.batch_size),
        "seconds_per_epoch": result.seconds / result.epochs_run, "cpu_seconds_per_epoch": train_cpu / result.epochs_run,
        "ate_particles": ate_particles, "ate_seconds": ate_s, "ate_seconds_per_2500_particles": ate_s * 2500 / ate_particles,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "dataset_build_seconds": build,
    }


def ot_timings(sizes: list[tuple[int, int]], n_genes: int = 68, repeats: int = 3) -> list[dict]:
    import ot
    from sklearn.neighbors import NearestNeighbors

    from txrepro.studies.gpo_vae.pairing import sinkhorn_pairing

    rng = np.random.default_rng(0)
    rows = []
    for n_p, n_c in sizes:
        pert = np.log1p(rng.poisson(5.0, size=(n_p, n_genes))).astype(np.float64)
        ctrl = np.log1p(rng.poisson(5.0, size=(n_c, n_genes))).astype(np.float64)
        best = {}
        for label in ("ours", "pot_direct", "nearest_neighbour"):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                if label == "ours":
                    ours = sinkhorn_pairing(pert, ctrl)
                elif label == "pot_direct":
                    plan = ot.sinkhorn(np.full(n_p, 1 / n_p), np.full(n_c, 1 / n_c), ot.dist(pert, ctrl, metric="euclidean") / 100.0, 1.0)
                    direct = plan.argmax(axis=1)
                else:
                    NearestNeighbors(n_neighbors=1).fit(ctrl).kneighbors(pert)
                times.append(time.perf_counter() - t0)
            best[label] = min(times)
        rows.append({"perturbed_cells": n_p, "control_cells": n_c, "genes": n_genes, "ours_s": best["ours"], "pot_direct_s": best["pot_direct"],
                     "ratio_ours_to_pot": best["ours"] / best["pot_direct"], "nearest_neighbour_s": best["nearest_neighbour"],
                     "same_pairs_as_pot": bool((ours == direct).all())})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/gpo_vae_scale.json")
    ap.add_argument("--epochs", type=int, default=1, help="epochs timed per size")
    ap.add_argument("--ate-particles", type=int, default=100, help="particles timed for the model ATE (scaled to 2500)")
    ap.add_argument("--one-size", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_size:
        print(json.dumps(one_size(args.one_size, args.epochs, args.ate_particles)))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", TXREPRO_NO_PROGRESS="1")
    training = []
    for name in SIZES:
        res = subprocess.run([sys.executable, __file__, "--one-size", name, "--epochs", str(args.epochs if name != "fixture" else max(args.epochs, 20)),
                              "--ate-particles", str(args.ate_particles)], capture_output=True, text=True, env=env, check=True)
        training.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(training[-1]))
    ot_rows = ot_timings([(100, 500), (200, 1000), (400, 2000), (800, 4000), (1600, 8000)])
    for r in ot_rows:
        print(json.dumps(r))
    out = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
           "training": training, "ot_pairing": ot_rows, "command": " ".join(sys.argv)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
