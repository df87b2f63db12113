#!/usr/bin/env python3
"""drugseq: memory and time of one training step, fused attention vs explicit attention maps.

One training step (forward, backward, AdamW step) of the DPF model at the paper's size (d_model
128, 4 heads, 2 layers, FFN 512, dropout 0.1, batch 32) on CPU, for each variant and gene count.
Every measurement runs in its own fresh subprocess, one at a time, so the peak resident set size
(ru_maxrss) belongs to that variant alone; the number reported is the peak minus the RSS just
before the first step (model, optimizer and batch already allocated).

Variants:
  fused     our encoder, F.scaled_dot_product_attention, attention dropout 0 (the CPU default):
            the flash-attention-for-CPU kernel, forward and backward
  explicit  our encoder, softmax(QK^T/sqrt(d))V with the full B x heads x G x G maps (reference)
  original  nn.TransformerEncoder as the original code builds it, in training mode (dropout 0.1 on
            the attention weights, so SDPA falls back to its math kernel)

    PYTHONPATH=src .venv/bin/python benchmarks/drugseq_attention.py --genes 500 1000 2541 \
        --variants fused explicit --steps 3 --out benchmarks/out/drugseq_attention.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil


def worker(variant: str, genes: int, batch: int, steps: int, threads: int) -> dict:
    """One variant at one size, in this (fresh) process."""
    import torch
    from torch import nn

    from txrepro.studies.drugseq.model import GeneTransformerMultiTask, ModelConfig
    from txrepro.studies.drugseq.train import multitask_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if variant == "original":
        model = GeneTransformerMultiTask(ModelConfig(n_genes=genes))
        # Swap in the original's encoder: nn.TransformerEncoder with dropout 0.1 everywhere.
        layer = nn.TransformerEncoderLayer(128, 4, 512, 0.1, batch_first=True)
        model.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    else:
        model = GeneTransformerMultiTask(ModelConfig(n_genes=genes, attention=variant, attention_dropout=0.0))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, genes)
    y3, lab, legacy = torch.randn(batch, 3), (torch.rand(batch) > 0.5).float(), torch.randn(batch)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = multitask_loss(model(x), y3, lab, legacy, 0.2)[0]
        loss.backward()
        opt.step()

    rss_before = psutil.Process().memory_info().rss
    times = []
    for _ in range(steps + 1):  # the first step allocates optimizer state and warms kernels: not timed
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    timed = times[1:] if steps else times
    return {
        "variant": variant, "genes": genes, "batch": batch, "threads": threads, "steps_timed": len(timed),
        "step_s_median": statistics.median(timed), "step_s_all": times,
        "peak_rss_gib": peak / 2**30, "rss_before_step_gib": rss_before / 2**30,
        "step_peak_gib": (peak - rss_before) / 2**30,
        "one_attention_map_gib": batch * 4 * genes * genes * 4 / 2**30,
    }


def run_one(args: argparse.Namespace, variant: str, genes: int, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--variants", variant, "--genes", str(genes), "--batch", str(batch),
           "--steps", str(args.steps), "--threads", str(args.threads)]
    free = psutil.virtual_memory().available / 2**30
    print(f"  {variant:9s} genes {genes:5d} batch {batch:3d} (available memory {free:.1f} GiB, load {os.getloadavg()[0]:.1f}) ...", file=sys.stderr, flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if res.returncode != 0:
        return {"variant": variant, "genes": genes, "batch": batch, "error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["load_avg_1min_before"] = os.getloadavg()[0]
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| variant | genes | batch | step time (s, median) | step peak memory (GiB) | one attention map (GiB) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['genes']} | {r['batch']} | error: {r['error']} | | |")
            continue
        lines.append(f"| {r['variant']} | {r['genes']} | {r['batch']} | {r['step_s_median']:.2f} | {r['step_peak_gib']:.2f} | {r['one_attention_map_gib']:.2f} |")
    by = {(r["variant"], r["genes"], r["batch"]): r for r in rows if "error" not in r}
    ratios = []
    for (v, g, b), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        f = by.get(("fused", g, b))
        if v != "fused" and f:
            ratios.append(f"- {v} / fused at {g} genes, batch {b}: memory x{r['step_peak_gib'] / f['step_peak_gib']:.1f}, time x{r['step_s_median'] / f['step_s_median']:.2f}")
    return "\n".join(lines + [""] + ratios)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["fused", "explicit"], choices=("fused", "explicit", "original"))
    p.add_argument("--genes", nargs="+", type=int, default=[500, 1000, 2541])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one untimed warm-up step")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: a shared machine)")
    p.add_argument("--max-gib", type=float, default=None, help="skip runs whose attention maps alone would exceed this (2 layers x 2 maps)")
    p.add_argument("--out", default="benchmarks/out/drugseq_attention.json")
    p.add_argument("--from-json", nargs="+", default=None, help="print the table of earlier raw outputs instead of measuring")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.from_json:
        rows = [r for f in args.from_json for r in json.loads(Path(f).read_text())["rows"]]
        for r in rows:
            if "step_s_all" in r:
                r["step_s_median"] = statistics.median(r["step_s_all"][1:] or r["step_s_all"])
        print(markdown(rows))
        return 0
    if args.worker:
        print(json.dumps(worker(args.variants[0], args.genes[0], args.batch, args.steps, args.threads)))
        return 0

    import torch

    rows = []
    print(f"drugseq attention benchmark: torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} thread(s)", file=sys.stderr)
    for genes in args.genes:
        for variant in args.variants:
            need = 2 * 2 * args.batch * 4 * genes * genes * 4 / 2**30
            if args.max_gib is not None and variant != "fused" and need > args.max_gib:
                rows.append({"variant": variant, "genes": genes, "batch": args.batch, "error": f"skipped: maps need about {need:.0f} GiB (> --max-gib {args.max_gib})"})
                continue
            rows.append(run_one(args, variant, genes, args.batch))
            print("   ", json.dumps({k: rows[-1].get(k) for k in ("step_s_median", "step_peak_gib", "error")}), file=sys.stderr, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(), "threads": args.threads, "argv": sys.argv}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
