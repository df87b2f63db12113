#!/usr/bin/env python3
"""sage_net benchmark: personal-sequence throughput and p-SAGE-net training speed on CPU.

1. Loader: (gene x individual) items per second of
   * the per-item reference (the original loader's approach: FASTA fetch + VCF region query +
     splicing each carried allele into a string, per item; `per_item.py`), and
   * the vectorised loader (one cyvcf2 query per gene for all individuals, variant matrix,
     segment gather over distinct haplotypes; `variants.py`, `sequences.py`), from a cold start
     (VCF query included) and warm (variant matrix loaded from its .npz cache),
   on the same synthetic 40-kb windows and VCF with 500 phased individuals (SNVs, 1-10 bp indels,
   multi-allelic sites), checked base by base against each other on the measured items.
2. p-SAGE-net training items per second (forward + backward + Adam step) on CPU, tiny and paper
   configurations.

    PYTHONPATH=src .venv/bin/python benchmarks/sage_net_loader.py --out benchmarks/out/sage_net
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def synthetic_inputs(out: Path, *, n_genes: int, n_samples: int, window: int, spacing: int, density: float, seed: int) -> dict:
    import pysam

    rng = np.random.default_rng(seed)
    length = spacing * (n_genes + 1)
    seq = "".join(rng.choice(list("ACGT"), length))
    fasta = out / "bench.fa"
    with fasta.open("w") as fh:
        fh.write(">chr1\n")
        for i in range(0, length, 80):
            fh.write(seq[i : i + 80] + "\n")
    pysam.faidx(str(fasta))
    samples = [f"I{i:04d}" for i in range(n_samples)]
    vcf_plain = out / "bench.vcf"
    n_sites = 0
    with vcf_plain.open("w") as fh:
        fh.write("##fileformat=VCFv4.2\n")
        fh.write(f"##contig=<ID=1,length={length}>\n")
        fh.write('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
        fh.write("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]) + "\n")
        pos = 20
        while pos < length - 20:
            pos += int(rng.geometric(density))
            if pos >= length - 20:
                break
            kind = rng.random()
            ref = seq[pos - 1]
            if kind < 0.06:  # insertion
                alt = ref + "".join(rng.choice(list("ACGT"), int(rng.integers(1, 11))))
            elif kind < 0.12:  # deletion
                ref = seq[pos - 1 : pos + int(rng.integers(1, 11))]
                alt = ref[0]
            elif kind < 0.14:  # multi-allelic SNV
                alt = ",".join(rng.choice([b for b in "ACGT" if b != ref], 2, replace=False))
            else:
                alt = rng.choice([b for b in "ACGT" if b != ref])
            n_alt = alt.count(",") + 1
            freq = min(0.5, rng.beta(0.3, 2.0) + 0.002)
            alleles = (rng.random((n_samples, 2)) < freq) * rng.integers(1, n_alt + 1, (n_samples, 2))
            gts = "\t".join(f"{a}|{b}" for a, b in alleles)
            fh.write(f"1\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t{gts}\n")
            n_sites += 1
    vcf = out / "bench.vcf.gz"
    pysam.tabix_compress(str(vcf_plain), str(vcf), force=True)
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    vcf_plain.unlink()
    tss = [spacing * (i + 1) for i in range(n_genes)]
    return {"fasta": fasta, "vcf": vcf, "samples": samples, "tss": tss, "length": length, "n_sites": n_sites, "window": window}


def bench_loader(inp: dict, out: Path, ref_genes: int, ref_individuals: int) -> dict:
    import pysam

    from txrepro.studies.sage_net.genome import GenotypeReader, Reference, encode
    from txrepro.studies.sage_net.per_item import personal_haplotypes
    from txrepro.studies.sage_net.sequences import GeneWindow, build_haplotypes
    from txrepro.studies.sage_net.variants import cache_key, load_gene_variants, query_gene, save_gene_variants

    samples, window, length = inp["samples"], inp["window"], inp["length"]
    windows = [GeneWindow(f"G{i}", "chr1", t, "+" if i % 2 == 0 else "-", window, "window_start", length) for i, t in enumerate(inp["tss"])]
    n = len(samples)

    # --- vectorised, cold: query + matrix + sequences for all individuals ----------------------
    ref = Reference(inp["fasta"])
    cache = out / "cache"
    cache.mkdir(exist_ok=True)
    vcf = GenotypeReader(inp["vcf"], samples)
    codes_by_gene, t0 = {}, time.perf_counter()
    n_alleles = []
    for gw in windows:
        codes = ref.fetch("chr1", *gw.region)
        gv, qc = query_gene(vcf, "1", gw.region, gw.window, codes)
        save_gene_variants(cache / f"{gw.gene_id}.npz", gv, qc, cache_key(inp["vcf"], inp["fasta"], samples, "1", gw.region, gw.window))
        codes_by_gene[gw.gene_id] = build_haplotypes(codes, gw, gv, np.arange(n))
        n_alleles.append(gv.n)
    cold = time.perf_counter() - t0
    # --- vectorised, warm: cached matrices ------------------------------------------------------
    t0 = time.perf_counter()
    for gw in windows:
        gv, _ = load_gene_variants(cache / f"{gw.gene_id}.npz")
        build_haplotypes(ref.fetch("chr1", *gw.region), gw, gv, np.arange(n))
    warm = time.perf_counter() - t0
    vec_items = len(windows) * n

    # --- per-item reference on a subset, checked against the vectorised output ------------------
    fa, vf = pysam.FastaFile(str(inp["fasta"])), pysam.VariantFile(str(inp["vcf"]))
    subset = [(gw, i) for gw in windows[:ref_genes] for i in range(ref_individuals)]
    t0 = time.perf_counter()
    ref_out = []
    for gw, i in subset:
        a, b = personal_haplotypes(fa, vf, fasta_contig="chr1", vcf_contig="1", tss=gw.tss, strand=gw.strand, sample=samples[i], length=window, anchor="window_start")
        ref_out.append((encode(a), encode(b)))
    per_item = time.perf_counter() - t0
    mismatches = sum(
        int(not (np.array_equal(a, codes_by_gene[gw.gene_id][i, 0]) and np.array_equal(b, codes_by_gene[gw.gene_id][i, 1])))
        for (gw, i), (a, b) in zip(subset, ref_out)
    )
    return {
        "genes": len(windows), "individuals": n, "window_bp": window, "vcf_sites": inp["n_sites"],
        "alleles_per_window_mean": float(np.mean(n_alleles)),
        "vectorised_cold_s": cold, "vectorised_warm_s": warm, "vectorised_items": vec_items,
        "vectorised_cold_items_per_s": vec_items / cold, "vectorised_warm_items_per_s": vec_items / warm,
        "per_item_s": per_item, "per_item_items": len(subset), "per_item_items_per_s": len(subset) / per_item,
        "speedup_cold": (vec_items / cold) / (len(subset) / per_item), "speedup_warm": (vec_items / warm) / (len(subset) / per_item),
        "checked_items": len(subset), "mismatching_items": mismatches,
    }


def bench_training(config: str, batch: int, steps: int) -> dict:
    import torch

    from txrepro.studies.sage_net.config import get_config
    from txrepro.studies.sage_net.model import PSageNet, n_parameters, one_hot

    cfg = get_config(config)
    torch.manual_seed(0)
    model = PSageNet(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    x = [one_hot(torch.randint(0, 4, (batch, cfg.input_len), dtype=torch.uint8)) for _ in range(3)]
    y = torch.randn(batch, 2)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(model(*x), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    return {"config": config, "input_len": cfg.input_len, "parameters": n_parameters(model), "batch": batch, "steps": steps,
            "seconds": dt, "items_per_s": batch * steps / dt, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/sage_net")
    ap.add_argument("--genes", type=int, default=10)
    ap.add_argument("--individuals", type=int, default=500)
    ap.add_argument("--window", type=int, default=40_000)
    ap.add_argument("--density", type=float, default=1 / 120, help="variant sites per bp")
    ap.add_argument("--ref-genes", type=int, default=2, help="genes timed with the per-item reference")
    ap.add_argument("--ref-individuals", type=int, default=100, help="individuals per gene timed with the per-item reference")
    ap.add_argument("--paper-steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inp = synthetic_inputs(out, n_genes=args.genes, n_samples=args.individuals, window=args.window, spacing=args.window + 10_000, density=args.density, seed=0)
    loader = bench_loader(inp, out, args.ref_genes, args.ref_individuals)
    training = [bench_training("tiny", 16, 20), bench_training("paper", 2, args.paper_steps)]
    result = {"loader": loader, "training": training, "cpu_count": os.cpu_count()}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    lo = loader
    print(f"\n| loader | items | seconds | items/s | vs per-item |\n|---|---|---|---|---|")
    print(f"| per-item reference (pysam, strings) | {lo['per_item_items']} | {lo['per_item_s']:.2f} | {lo['per_item_items_per_s']:.1f} | 1x |")
    print(f"| vectorised, cold (VCF query included) | {lo['vectorised_items']} | {lo['vectorised_cold_s']:.2f} | {lo['vectorised_cold_items_per_s']:.0f} | {lo['speedup_cold']:.0f}x |")
    print(f"| vectorised, warm (cached matrices) | {lo['vectorised_items']} | {lo['vectorised_warm_s']:.2f} | {lo['vectorised_warm_items_per_s']:.0f} | {lo['speedup_warm']:.0f}x |")
    for t in training:
        print(f"| p-SAGE-net training, {t['config']} ({t['input_len']} bp, {t['parameters']} parameters), batch {t['batch']} | {t['batch'] * t['steps']} | {t['seconds']:.2f} | {t['items_per_s']:.2f} | |")


if __name__ == "__main__":
    main()
