#!/usr/bin/env python3
"""vcc at scale: peak RSS and wall time of prepare, reference, the cell-mean baseline and evaluate.

Synthetic raw-count h5ad files of N cells x 18,080 genes in the real file's layout (CSR float32
counts, obs target_gene / guide_id / batch / cell_type, 150 perturbations + `non-targeting`
controls at the real file's 17.3 %, a 30-gene test split). Cells are drawn with replacement from a
pool of simulated cells (negative binomial, gene means lognormal with sigma 2 scaled to the real
file's mean gene mean of 3.147, dispersion theta 2, library size lognormal sigma 0.3) and each
perturbation knocks its target down to 20 %. That gives a density of about 0.42 and a mean gene
maximum near the real file's 32; the real 15 GB file at 8 bytes per stored value allows at most
0.47.

Each step runs as its own process (`bin/vcc.py <step>`, exactly what Nextflow runs) and is
measured with os.wait4 (peak resident set size of that process). At the smallest sizes the
in-memory reference implementations run too, in the same way: STATE's `preprocess_train`
(scanpy on the whole matrix), `cell_eval.build_base_mean_adata` and `cell_eval.MetricsEvaluator`
on the full cell matrices.

    nice -n 19 .venv/bin/python benchmarks/vcc_scale.py --sizes 22000 66000 221273 --reference-max 66000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from txrepro.studies.vcc.h5ad_stream import CsrH5adWriter  # noqa: E402

N_GENES = 18_080
N_PERTS = 150
N_TEST = 30
CONTROL_SHARE = 38_176 / 221_273
MEAN_GENE_MEAN = 3.147


def simulate_pool(n: int, n_genes: int, rng: np.random.Generator) -> tuple[sp.csr_matrix, np.ndarray]:
    mu = rng.lognormal(0.0, 2.0, n_genes)
    mu *= MEAN_GENE_MEAN / mu.mean()
    rows = []
    for start in range(0, n, 1000):
        m = min(1000, n - start)
        lib = rng.lognormal(0.0, 0.3, m)[:, None]
        lam = rng.gamma(2.0, mu[None, :] * lib / 2.0)
        rows.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
    return sp.vstack(rows).tocsr(), mu


def write_synthetic(path: Path, n_cells: int, pool: sp.csr_matrix, mu: np.ndarray, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    genes = np.array([f"G{i:05d}" for i in range(pool.shape[1])])
    # targets: 150 genes with mean >= 1 (CRISPRi targets are expressed)
    targets = genes[np.flatnonzero(mu >= 1.0)[:N_PERTS]]
    n_ctrl = int(round(n_cells * CONTROL_SHARE))
    w = rng.lognormal(0.0, 0.5, N_PERTS)
    per = np.floor(w / w.sum() * (n_cells - n_ctrl)).astype(int)
    per[: (n_cells - n_ctrl) - per.sum()] += 1
    labels = np.concatenate([np.repeat("non-targeting", n_ctrl), np.repeat(targets, per)])
    rng.shuffle(labels)
    gidx = {g: i for i, g in enumerate(genes)}
    obs = pd.DataFrame(
        {
            "target_gene": pd.Categorical(labels),
            "guide_id": pd.Categorical([f"{x}_g{rng.integers(1, 3)}" for x in labels]),
            "batch": pd.Categorical(rng.choice([f"b{i}" for i in range(48)], n_cells)),
            "cell_type": pd.Categorical(["H1"] * n_cells),
        },
        index=[f"c{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"gene_id": [f"ENSG{i:011d}" for i in range(len(genes))]}, index=genes)
    with CsrH5adWriter(path, n_cells, len(genes)) as wr:
        for start in range(0, n_cells, 5000):
            lab = labels[start : start + 5000]
            block = pool[rng.integers(0, pool.shape[0], lab.size)].tocsr()
            block.sort_indices()
            for r in np.flatnonzero(lab != "non-targeting"):  # knock the target down to 20 %
                j = gidx[lab[r]]
                lo, hi = block.indptr[r], block.indptr[r + 1]
                k = np.searchsorted(block.indices[lo:hi], j)
                if k < hi - lo and block.indices[lo + k] == j:
                    block.data[lo + k] = rng.binomial(int(block.data[lo + k]), 0.2)
            block.eliminate_zeros()
            wr.append(block)
        wr.finish(obs, var)
    test = sorted(targets[:N_TEST])
    (path.parent / "test_genes.txt").write_text("\n".join(test) + "\n")
    return {"n_cells": n_cells, "n_controls": n_ctrl, "nnz": int(wr.nnz), "density": wr.nnz / (n_cells * len(genes)),
            "file_gb": path.stat().st_size / 1e9}


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[1]) / 1024**2 for line in fh if line.startswith("VmRSS:")), 0.0)
    except OSError:
        return 0.0


def measure(cmd: list[str], log: Path, rss_limit_gb: float) -> dict:
    """Run one step in its own process; wall and CPU seconds and peak RSS from os.wait4.

    The machine is shared: a step whose RSS passes `rss_limit_gb` is killed (and the run stops)
    before the kernel's OOM killer picks a victim.
    """
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO / "src"), "TXREPRO_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"})
        killed = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = _rss_gb(proc.pid)
            if rss > rss_limit_gb and not killed:
                killed = rss
                proc.kill()
            time.sleep(0.5)
    wall = time.perf_counter() - t0
    if killed:
        raise SystemExit(f"{' '.join(cmd[:4])} stopped at {killed:.1f} GB RSS (limit {rss_limit_gb} GB); see {log}")
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({rc}); see {log}")
    # CPU seconds (user + system) next to wall time: on a shared machine wall time includes waiting
    return {"seconds": round(wall, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 2)}


REF_PREPARE = """
import anndata as ad, scanpy as sc, sys
a = ad.read_h5ad(sys.argv[1]); sc.pp.normalize_total(a); sc.pp.log1p(a); sc.pp.highly_variable_genes(a, n_top_genes=2000)
a.obsm["X_hvg"] = a[:, a.var.highly_variable].X.toarray(); a.write_h5ad(sys.argv[2])
"""
REF_BASELINE = """
import anndata as ad, json, pandas as pd, polars as pl, sys
from cell_eval import build_base_mean_adata
s = json.load(open(sys.argv[2])); keep = s["split"]["train"] + s["split"]["val"] + ["non-targeting"]
a = ad.read_h5ad(sys.argv[1]); a = a[a.obs["target_gene"].isin(keep)].copy()
t = pd.read_csv(sys.argv[3], sep="\\t"); t = t[t.split == "test"]
counts = pl.DataFrame({"target_gene": t.perturbation.tolist(), "n_cells": t.n_cells.tolist()})
build_base_mean_adata(a, counts_df=counts, pert_col="target_gene", control_pert="non-targeting").write_h5ad(sys.argv[4])
"""
REF_EVALUATE = """
import anndata as ad, json, sys
from cell_eval import MetricsEvaluator
s = json.load(open(sys.argv[2])); keep = s["split"]["test"] + ["non-targeting"]
real = ad.read_h5ad(sys.argv[1]); real = real[real.obs["target_gene"].isin(keep)].copy()
pred = ad.read_h5ad(sys.argv[3])
ev = MetricsEvaluator(adata_pred=pred, adata_real=real, control_pert="non-targeting", pert_col="target_gene", num_threads=1, outdir=sys.argv[4])
print(ev.compute(profile="vcc", write_csv=False)[1])
"""


STEPS = ("prepare", "reference", "predict_cell_mean", "evaluate_cell_mean")
REF_STEPS = ("ref_state_preprocess_train", "ref_cell_eval_baseline", "ref_cell_eval_evaluate")


def markdown(results: dict) -> str:
    """The tables of benchmarks/README.md from results.json (so no number is typed by hand)."""
    sizes = sorted(results, key=int)
    out = ["| step | cells | seconds | CPU seconds | peak RSS (GB) | s per 1k cells |", "|---|---:|---:|---:|---:|---:|"]
    for step in (*STEPS, *REF_STEPS):
        for n in sizes:
            r = results[n].get(step)
            if r:
                out.append(f"| {step} | {int(n):,} | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} | {r['peak_rss_gb']:.2f} | {r['seconds'] / int(n) * 1000:.2f} |")
    out += ["", "| cells | nnz | density | input GB | total seconds (our 4 steps) | max peak RSS (GB) | commit | cell-eval overlap_at_N / pds_l1 / mae |",
            "|---:|---:|---:|---:|---:|---:|---|---|"]
    for n in sizes:
        r = results[n]
        d = r["data"]
        total = sum(r[s]["seconds"] for s in STEPS if s in r)
        peak = max(r[s]["peak_rss_gb"] for s in STEPS if s in r)
        ev = r.get("eval", {})
        out.append(f"| {int(n):,} | {d['nnz']:,} | {d['density']:.3f} | {d['file_gb']:.1f} | {total:.0f} | {peak:.2f} | {r.get('commit', '')} | "
                   f"{ev.get('overlap_at_N', float('nan')):.4f} / {ev.get('discrimination_score_l1', float('nan')):.4f} / {ev.get('mae', float('nan')):.4f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[22_000, 66_000, 221_273])
    ap.add_argument("--genes", type=int, default=N_GENES)
    ap.add_argument("--pool", type=int, default=8_000, help="simulated cells to draw from")
    ap.add_argument("--reference-max", type=int, default=66_000, help="largest size at which the in-memory references run")
    ap.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "vcc_scale")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--rss-limit-gb", type=float, default=20.0, help="kill a step whose resident memory passes this (shared machine)")
    ap.add_argument("--markdown", action="store_true", help="print the README tables from results.json and exit")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads((args.workdir / "results.json").read_text())))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    py, vcc = sys.executable, str(REPO / "bin" / "vcc.py")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    pool, mu = simulate_pool(args.pool, args.genes, rng)
    print(f"pool of {args.pool} cells simulated in {time.perf_counter() - t0:.0f} s (density {pool.nnz / np.prod(pool.shape):.3f})", flush=True)
    results_file = args.workdir / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for n in args.sizes:
        d = args.workdir / f"n{n}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        t0 = time.perf_counter()
        data = write_synthetic(d / "input.h5ad", n, pool, mu, seed=n)
        data["generate_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"n={n}: {data}", flush=True)
        steps = {
            "prepare": [py, vcc, "prepare", "--input", str(d / "input.h5ad"), "--outdir", str(d / "prepared"), "--test-genes", str(d / "test_genes.txt")],
            "reference": [py, vcc, "reference", "--prepared", str(d / "prepared"), "--outdir", str(d / "reference"), "--threads", "1"],
            "predict_cell_mean": [py, vcc, "predict", "--prepared", str(d / "prepared"), "--model", "cell_mean", "--outdir", str(d / "pred")],
            "evaluate_cell_mean": [py, vcc, "evaluate", "--prepared", str(d / "prepared"), "--reference", str(d / "reference"),
                                   "--predictions", str(d / "pred" / "cell_mean_pred.h5ad"), "--model", "cell_mean", "--outdir", str(d / "eval"), "--threads", "1"],
        }
        # a rerun without the references keeps the reference rows measured before
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        row = {k: v for k, v in results.get(str(n), {}).items() if k.startswith("ref_")} | {"commit": commit, "data": data}
        for name, cmd in steps.items():
            row[name] = measure(cmd, d / f"{name}.log", args.rss_limit_gb)
            print(f"  {name}: {row[name]}", flush=True)
        if n <= args.reference_max:
            refs = {
                "ref_state_preprocess_train": [py, "-c", REF_PREPARE, str(d / "input.h5ad"), str(d / "ref_prepared.h5ad")],
                "ref_cell_eval_baseline": [py, "-c", REF_BASELINE, str(d / "prepared" / "prepared.h5ad"), str(d / "prepared" / "split.json"),
                                           str(d / "prepared" / "split.tsv"), str(d / "ref_baseline.h5ad")],
                "ref_cell_eval_evaluate": [py, "-c", REF_EVALUATE, str(d / "prepared" / "prepared.h5ad"), str(d / "prepared" / "split.json"),
                                           str(d / "ref_baseline.h5ad"), str(d / "ref_ce")],
            }
            for name, cmd in refs.items():
                row[name] = measure(cmd, d / f"{name}.log", args.rss_limit_gb)
                print(f"  {name}: {row[name]}", flush=True)
        row["eval"] = json.loads((d / "eval" / "cell_mean_eval.json").read_text())["cell_eval"]
        results[str(n)] = row
        results_file.write_text(json.dumps(results, indent=2) + "\n")
        if not args.keep:
            shutil.rmtree(d)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
