"""`prepare`: check every input, split individuals and genes, compute z-scores, cache variant matrices.

Everything a user can get wrong is checked before the per-gene VCF queries start; the prepared
folder is written atomically. Layout:

    manifest.json   parameters, inputs, contig maps, QC counts
    genes.tsv       gene_id, chrom, fasta_contig, vcf_contig, contig_length, tss, strand, gene_split, off_contig, n_alleles
    samples.tsv     sample, split (train/val/test, or `all` for an external cohort)
    expression.npz  genes, samples, expr (adjusted), mean/sd of training individuals, z
    variants/       one .npz per gene (variants.py)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_dir, write_json
from txrepro.io.controlled import input_record
from txrepro.io.tables import read_table
from txrepro.runtime import get_logger, progress
from txrepro.studies.sage_net import STUDY
from txrepro.studies.sage_net import config as cfg
from txrepro.studies.sage_net import genome
from txrepro.studies.sage_net.expression import read_expression, zscores
from txrepro.studies.sage_net.sequences import ANCHORS, GeneWindow
from txrepro.studies.sage_net.variants import (
    GeneVariants,
    VariantQC,
    cache_key,
    load_gene_variants,
    query_gene,
    resolve_overlaps,
    save_gene_variants,
)

log = get_logger(__name__)

GENE_ID_COLUMNS = ("gene_id", "ensg", "region_id", "gene")
CHROM_COLUMNS = ("chr", "chrom", "chromosome")
TSS_COLUMNS = ("tss", "pos")


@dataclass
class PrepareParams:
    window: int = 40_000
    anchor: str = "window_start"
    cohort: str = "ROSMAP"
    role: str = "main"  # main: train/val/test individuals; external: every individual is evaluated
    split_seed: int = 17
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_ref_mismatch: float = 0.05
    require_phased: bool = False
    index_vcf: bool = False
    cache_dir: str | None = None

    def check(self) -> None:
        if self.anchor not in ANCHORS:
            raise InputError("--anchor", "anchor", f"one of {', '.join(ANCHORS)}", repr(self.anchor))
        if self.window < 10 or self.window % 2:
            raise InputError("--window", "window", "an even number of bases >= 10", str(self.window))
        if self.role not in ("main", "external"):
            raise InputError("--role", "role", "'main' or 'external'", repr(self.role))
        if not 0 <= self.max_ref_mismatch <= 1:
            raise InputError("--max-ref-mismatch", "fraction", "a number between 0 and 1", str(self.max_ref_mismatch))


@dataclass
class PrepareInputs:
    vcf: Path
    fasta: Path
    genes: Path
    expression: Path
    train_samples: Path | None = None
    val_samples: Path | None = None
    test_samples: Path | None = None
    samples: Path | None = None  # external cohort: the individuals to evaluate (default: VCF and expression overlap)
    train_genes: Path | None = None
    val_genes: Path | None = None
    test_genes: Path | None = None


# --------------------------------------------------------------------------------------------
# readers


def read_id_list(path: Path, what: str) -> list[str]:
    """One id per line (the original's np.loadtxt files); blank lines ignored."""
    if not path.is_file():
        raise InputError(path, what, "an existing file with one id per line", "nothing at this path")
    ids = [ln.strip().split(",")[0] for ln in path.read_text().splitlines() if ln.strip()]
    if not ids:
        raise InputError(path, what, "one id per line", "an empty file")
    dup = pd.Index(ids)[pd.Index(ids).duplicated()]
    if len(dup):
        raise InputError(path, what, "unique ids", f"duplicate {dup[0]!r}")
    return ids


def _pick(df: pd.DataFrame, names: Sequence[str], path: Path, what: str) -> str:
    for n in names:
        if n in df.columns:
            return n
    raise InputError(path, f"column {what}", f"one of {', '.join(names)}", f"columns {', '.join(map(str, df.columns))}")


def read_gene_table(path: Path) -> pd.DataFrame:
    """gene_id, chrom, tss (int), strand ('+'/'-'); accepts the original's column names."""
    df = read_table(path, what="gene table", dtype=str, keep_default_na=False)
    gid = _pick(df, GENE_ID_COLUMNS, path, "gene id")
    chrom = _pick(df, CHROM_COLUMNS, path, "chromosome")
    tss = _pick(df, TSS_COLUMNS, path, "TSS")
    strand = _pick(df, ("strand",), path, "strand")
    out = pd.DataFrame({"gene_id": df[gid].astype(str).str.strip(), "chrom": df[chrom].astype(str).str.strip(), "strand": df[strand].astype(str).str.strip()})
    pos = pd.to_numeric(df[tss], errors="coerce")
    if pos.isna().any() or (pos < 0).any() or (pos % 1 != 0).any():
        i = int(np.flatnonzero((pos.isna() | (pos < 0) | (pos % 1 != 0)).to_numpy())[0])
        raise InputError(path, f"column '{tss}' of gene {out['gene_id'].iloc[i]!r}", "a non-negative integer position", repr(df[tss].iloc[i]))
    out["tss"] = pos.astype(np.int64)
    bad = ~out["strand"].isin(["+", "-"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(path, f"column 'strand' of gene {out['gene_id'].iloc[i]!r}", "'+' or '-'", repr(out["strand"].iloc[i]))
    if out["gene_id"].duplicated().any():
        raise InputError(path, f"column '{gid}'", "unique gene ids", f"duplicate {out['gene_id'][out['gene_id'].duplicated()].iloc[0]!r}")
    return out


# --------------------------------------------------------------------------------------------
# splits


def split_individuals(samples: Sequence[str], seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[str]]:
    """The original's 80/10/10 split (preprocess_data.py), made deterministic.

    The original permuted `list(set(...))`, whose order depends on Python's string hashing, so its
    split cannot be regenerated; we permute the sorted ids with numpy seed `seed` (17 there).
    """
    ordered = np.array(sorted(samples))
    perm = np.random.RandomState(seed).permutation(len(ordered))
    shuffled = ordered[perm]
    n_val = int(len(ordered) * val_fraction)
    n_test = int(len(ordered) * test_fraction)
    n_train = len(ordered) - n_val - n_test
    return {"train": list(shuffled[:n_train]), "val": list(shuffled[n_train : n_train + n_val]), "test": list(shuffled[n_train + n_val :])}


def chromosome_split(chrom: str) -> str:
    bare = genome.bare_chromosome(chrom)
    if bare in cfg.TRAIN_CHROMOSOMES:
        return "train"
    if bare in cfg.VAL_CHROMOSOMES:
        return "val"
    if bare in cfg.TEST_CHROMOSOMES:
        return "test"
    return "unused"


# --------------------------------------------------------------------------------------------
# prepare


def prepare(inputs: PrepareInputs, outdir: Path, params: PrepareParams) -> Path:
    """Check the inputs, then write the prepared folder (atomically)."""
    params.check()
    outdir = Path(outdir)
    ref = genome.Reference(inputs.fasta)
    vcf_path = Path(inputs.vcf)
    try:
        genome.check_vcf(vcf_path)
    except InputError:
        if not params.index_vcf or not vcf_path.is_file():
            raise
        import tempfile

        with tempfile.TemporaryDirectory(prefix=".sage_net_index.", dir=outdir.parent if outdir.parent.exists() else None) as index_dir:
            indexed = genome.index_vcf(vcf_path, Path(index_dir) / Path(genome._indexed_name(vcf_path)).name)
            log.warning("VCF was not bgzip+tabix: working on an indexed copy (keep one with `sage_net.py index-vcf`)")
            return _prepare(inputs, indexed, ref, outdir, params)
    return _prepare(inputs, vcf_path, ref, outdir, params)


def _prepare(inputs: PrepareInputs, vcf_path: Path, ref: genome.Reference, outdir: Path, params: PrepareParams) -> Path:
    qc_notes: dict[str, object] = {}
    genome.require_gt(vcf_path)
    vcf_samples = genome.vcf_samples(vcf_path)
    vcf_contigs = genome.vcf_contigs(vcf_path)
    genes = read_gene_table(Path(inputs.genes))
    expr = read_expression(inputs.expression)

    # samples: present in both the VCF and the expression table
    in_vcf = set(vcf_samples)
    expr_not_vcf = [s for s in expr.columns if s not in in_vcf]
    if expr_not_vcf:
        log.warning("%d of %d expression samples are not in the VCF (e.g. %s): left out", len(expr_not_vcf), expr.shape[1], expr_not_vcf[0])
    qc_notes["expression_samples_not_in_vcf"] = len(expr_not_vcf)
    usable = [s for s in expr.columns if s in in_vcf]
    if not usable:
        raise InputError(inputs.expression, "sample columns", f"sample ids that appear in the VCF {vcf_path.name}", f"none of {expr.shape[1]} (VCF ids look like {vcf_samples[:2]})")
    splits = _individual_splits(inputs, params, usable, set(expr.columns), in_vcf)
    _check_split_sizes(splits, inputs, params, len(usable))
    sample_order = [s for split in ("train", "val", "test", "all") for s in splits.get(split, [])]

    # genes: expression rows, FASTA contigs, VCF contigs, TSS inside the contig
    table, expressed = genes, expr.index
    genes = _resolve_genes(genes, expr, ref, vcf_contigs, inputs, vcf_path, qc_notes)
    genes["gene_split"] = _gene_splits(genes, inputs)
    for split_name in ("train", "val", "test"):
        log.info("genes in the %s split: %d", split_name, int((genes["gene_split"] == split_name).sum()))

    # expression restricted and ordered; z-scores from the training individuals
    expr = expr.loc[genes["gene_id"], sample_order]
    train_idx = np.arange(len(splits.get("train", []))) if params.role == "main" else np.arange(len(sample_order))
    mean, sd, z = zscores(expr.to_numpy(), train_idx)
    flat = ~(sd > 0)
    if flat.any():
        log.warning("%d genes have no expression variance among training individuals: left out", int(flat.sum()))
        qc_notes["genes_without_variance"] = int(flat.sum())
        keep = ~flat
        genes, expr, mean, sd, z = genes[keep].reset_index(drop=True), expr[keep], mean[keep], sd[keep], z[keep]
    if genes.empty:
        raise InputError(inputs.expression, "expression values", "genes that vary among training individuals", "none")
    if params.role == "main" and not (genes["gene_split"] == "train").any():
        _explain_no_training_genes(table, expressed, ref, vcf_contigs, inputs, vcf_path)

    # --- long work: one VCF query per gene ----------------------------------------------------
    with atomic_dir(outdir) as tmp:
        (tmp / "variants").mkdir()
        qc = VariantQC()
        n_alleles = []
        reader = genome.GenotypeReader(vcf_path, sample_order)
        cache = Path(params.cache_dir) if params.cache_dir else None
        for g in progress(genes.itertuples(index=False), desc="sage_net prepare: variant matrices", total=len(genes)):
            gw = GeneWindow(g.gene_id, g.fasta_contig, int(g.tss), g.strand, params.window, params.anchor, int(g.contig_length))
            gv, gqc = _gene_variants(reader, vcf_path, ref, gw, g.vcf_contig, cache)
            gqc.overlap_skipped, gqc.carried_allele_copies = _count_overlaps(gv)
            qc.add(gqc)
            n_alleles.append(gv.n)
            key = cache_key(vcf_path, Path(inputs.fasta), sample_order, g.vcf_contig or "", gw.region, gw.window)
            save_gene_variants(tmp / "variants" / f"{g.gene_id}.npz", gv, gqc, key)
            _check_ref_mismatch(qc, vcf_path, params.max_ref_mismatch, final=False)
            if params.require_phased and qc.unphased_het_calls:
                raise InputError(vcf_path, "FORMAT/GT phasing", "phased genotypes (a|b) for every heterozygous call (--require-phased)", f"unphased heterozygous calls in the window of {g.gene_id}")
        reader.close()
        _check_ref_mismatch(qc, vcf_path, params.max_ref_mismatch, final=True)
        train_rows = (genes["gene_split"] == "train").to_numpy()
        if params.role == "main" and not np.asarray(n_alleles)[train_rows].any():
            raise InputError(
                vcf_path.name, "variants", f"at least one variant in the {params.window}-bp windows of the {int(train_rows.sum())} training genes (same genome build and region as the gene table?)",
                f"none (e.g. gene {genes.loc[train_rows, 'gene_id'].iloc[0]!r} on {genes.loc[train_rows, 'vcf_contig'].iloc[0]})",
            )
        _log_qc(qc, qc_notes)
        genes["n_alleles"] = n_alleles
        genes["off_contig"] = [GeneWindow(g.gene_id, g.fasta_contig, int(g.tss), g.strand, params.window, params.anchor, int(g.contig_length)).off_contig for g in genes.itertuples(index=False)]
        if genes["off_contig"].any():
            log.warning(
                "%d of %d gene windows run off their contig end (e.g. %s): %s", int(genes["off_contig"].sum()), len(genes), genes.loc[genes["off_contig"], "gene_id"].iloc[0],
                "clipped and padded with N at the end, as the original" if params.anchor == "window_start" else "padded with N, TSS kept centred",
            )
        qc_notes["off_contig_windows"] = int(genes["off_contig"].sum())
        genes.to_csv(tmp / "genes.tsv", sep="\t", index=False)
        pd.DataFrame({"sample": sample_order, "split": [sp for sp in ("train", "val", "test", "all") for _ in splits.get(sp, [])]}).to_csv(tmp / "samples.tsv", sep="\t", index=False)
        with open(tmp / "expression.npz", "wb") as fh:
            np.savez(fh, genes=np.array(genes["gene_id"], dtype=str), samples=np.array(sample_order, dtype=str), expr=expr.to_numpy(), mean=mean, sd=sd, z=z)
        write_json(
            tmp / "manifest.json",
            {
                "params": asdict(params),
                "inputs": _input_records(inputs, vcf_path),
                "fasta": {"name": Path(inputs.fasta).name, "contigs": {c: ref.lengths[c] for c in sorted(set(genes["fasta_contig"]))}},
                "qc": qc.as_dict() | qc_notes,
                "n_genes": int(len(genes)),
                "n_samples": {k: len(v) for k, v in splits.items()},
            },
        )
    ref.close()
    return outdir


# individual-level inputs (txrepro.io.controlled): recorded by file name and checksum, never by path
CONTROLLED_INPUTS = ("vcf", "expression", "train_samples", "val_samples", "test_samples", "samples")


def _input_records(inputs: PrepareInputs, vcf_path: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in asdict(inputs).items():
        if value is not None:
            out[key] = input_record(value, study=STUDY) if key in CONTROLLED_INPUTS else str(value)
    if Path(vcf_path) != Path(inputs.vcf):
        out["vcf_used"] = "a bgzip + tabix copy of the VCF made for this run (removed)"
    return out


def _individual_splits(inputs: PrepareInputs, params: PrepareParams, usable: list[str], in_expr: set[str], in_vcf: set[str]) -> dict[str, list[str]]:
    if params.role == "external":
        if inputs.samples is not None:
            ids = read_id_list(Path(inputs.samples), "sample list")
            _require_present(ids, Path(inputs.samples), in_expr, in_vcf)
            return {"all": ids}
        return {"all": usable}
    given = {k: getattr(inputs, f"{k}_samples") for k in ("train", "val", "test")}
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise InputError(f"--{missing[0]}-samples", "sample lists", "all three of --train-samples, --val-samples, --test-samples (or none, for a seeded split)", f"only {', '.join(k for k, v in given.items() if v is not None)}")
        splits = {k: read_id_list(Path(v), f"{k} sample list") for k, v in given.items()}
        seen: dict[str, str] = {}
        for k, ids in splits.items():
            _require_present(ids, Path(given[k]), in_expr, in_vcf)
            for s in ids:
                if s in seen:
                    raise InputError(given[k], f"sample {s!r}", "each individual in one split only", f"also in the {seen[s]} list")
                seen[s] = k
        return splits
    splits = split_individuals(usable, params.split_seed, params.val_fraction, params.test_fraction)
    log.info("individuals split with seed %d: %s", params.split_seed, {k: len(v) for k, v in splits.items()})
    return splits


MIN_INDIVIDUALS = 3  # per split: per-gene Pearson r across held-out individuals needs 3; training needs a s.d. and a fit


def user_parameter(name: str, role: str = "main") -> str:
    """How a user sets input `name`: the Nextflow/params-file key and the `sage_net.py prepare` option."""
    if role == "external":
        key = {"samples": "external_samples", "vcf": "external_vcf", "expression": "external_expression"}.get(name, name)
        option = name
    else:
        key, option = name, name
    return f"sage_net_{key} (--{option.replace('_', '-')})"


def _check_split_sizes(splits: dict[str, list[str]], inputs: PrepareInputs, params: PrepareParams, n_usable: int) -> None:
    """Refuse, before any long work, splits that can only fail at PrediXcan, training or evaluation."""
    small = {k: len(v) for k, v in splits.items() if len(v) < MIN_INDIVIDUALS}
    if not small:
        return
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    why = f"at least {MIN_INDIVIDUALS} individuals in every split (Pearson r across held-out individuals)"
    if params.role == "external":
        raise InputError(user_parameter("samples", "external"), "individuals", why, f"{sizes} (individuals in both the VCF and the expression table)")
    split = next(iter(small))
    if inputs.train_samples is None:
        lists = ", ".join(user_parameter(f"{k}_samples") for k in ("train", "val", "test"))
        raise InputError(
            "sage_net_split_seed (--split-seed)", "seeded split", f"{why}: give {lists}, or more individuals",
            f"the {1 - params.val_fraction - params.test_fraction:.0%}/{params.val_fraction:.0%}/{params.test_fraction:.0%} split of "
            f"{n_usable} individuals in both the VCF and the expression table gives {sizes}",
        )
    raise InputError(user_parameter(f"{split}_samples"), "individuals", why, f"{sizes} ({Path(getattr(inputs, f'{split}_samples')).name})")


def _explain_no_training_genes(table: pd.DataFrame, expressed: pd.Index, ref: genome.Reference, vcf_contigs: list[str], inputs: PrepareInputs, vcf_path: Path) -> None:
    """No gene left on the training side: say which input removed them, not just that none is left."""
    if inputs.train_genes is not None:
        ids = read_id_list(Path(inputs.train_genes), "train gene list")
        candidates = table[table["gene_id"].isin(ids)]
        if candidates.empty:
            raise InputError(user_parameter("train_genes"), "gene ids", f"ids of the gene table {Path(inputs.genes).name}", f"none of {len(ids)} (e.g. {ids[0]!r})")
        where = f"the {len(candidates)} genes of {user_parameter('train_genes')}"
    else:
        candidates = table[table["chrom"].map(chromosome_split) == "train"]
        if candidates.empty:
            chroms = sorted(set(table["chrom"]), key=lambda c: (len(c), c))
            raise InputError(
                user_parameter("genes"), "chromosomes",
                f"genes on the training chromosomes {cfg.TRAIN_CHROMOSOMES[0]}-{cfg.TRAIN_CHROMOSOMES[-1]} (the paper's chromosome split), "
                f"or gene lists {user_parameter('train_genes')}, {user_parameter('val_genes')}, {user_parameter('test_genes')}",
                f"genes on {', '.join(chroms[:8])} only ({Path(inputs.genes).name})",
            )
        where = f"the {len(candidates)} genes on the training chromosomes {cfg.TRAIN_CHROMOSOMES[0]}-{cfg.TRAIN_CHROMOSOMES[-1]}"
    with_expr = candidates[candidates["gene_id"].isin(expressed)]
    if with_expr.empty:
        raise InputError(Path(inputs.expression).name, "gene ids (first column)", f"expression rows for {where}", f"none (e.g. {candidates['gene_id'].iloc[0]!r} has no row)")
    chroms = sorted(set(with_expr["chrom"]), key=lambda c: (len(c), c))
    if all(genome.map_contig(c, ref.lengths) is None for c in chroms):
        raise InputError(Path(inputs.fasta).name, "contigs", f"the chromosomes of {where} ({', '.join(chroms[:5])}; with or without 'chr')", f"FASTA contigs {list(ref.lengths)[:5]}")
    if all(genome.map_contig(c, vcf_contigs) is None for c in chroms):
        raise InputError(
            vcf_path.name, "contigs", f"genotypes on the chromosomes of {where} ({', '.join(chroms[:5])}; with or without 'chr')",
            f"records on contigs {', '.join(vcf_contigs[:5]) or 'none'}{' ...' if len(vcf_contigs) > 5 else ''} only",
        )
    raise InputError(Path(inputs.expression).name, "expression values", f"variation among training individuals for at least one of {where}", "every one is constant or on a contig missing from the FASTA or VCF")


def _require_present(ids: list[str], path: Path, in_expr: set[str], in_vcf: set[str]) -> None:
    for s in ids:
        if s not in in_vcf:
            raise InputError(path, f"sample {s!r}", "a sample present in the VCF header", "not in the VCF")
        if s not in in_expr:
            raise InputError(path, f"sample {s!r}", "a sample column of the expression table", "not in the expression table")


def _resolve_genes(genes: pd.DataFrame, expr: pd.DataFrame, ref: genome.Reference, vcf_contigs: list[str], inputs: PrepareInputs, vcf_path: Path, notes: dict) -> pd.DataFrame:
    no_expr = ~genes["gene_id"].isin(expr.index)
    if no_expr.all():
        raise InputError(inputs.expression, "gene ids (first column)", f"gene ids of the gene table {Path(inputs.genes).name}", f"none match (table ids look like {list(genes['gene_id'][:2])}, expression ids like {list(expr.index[:2])})")
    if no_expr.any():
        log.warning("%d of %d genes of the gene table have no expression row: left out", int(no_expr.sum()), len(genes))
    notes["genes_without_expression"] = int(no_expr.sum())
    genes = genes[~no_expr].copy()
    fasta_map = genome.map_contigs(sorted(set(genes["chrom"])), ref.lengths)
    unmapped = [c for c, m in fasta_map.items() if m is None]
    if len(unmapped) == len(fasta_map):
        raise InputError(inputs.genes, "chromosome names", f"contigs of the FASTA {Path(inputs.fasta).name} (with or without a 'chr' prefix)", f"{unmapped[:3]}; FASTA has {list(ref.lengths)[:3]}")
    if unmapped:
        log.warning("genes on chromosomes absent from the FASTA (%s) are left out", ", ".join(unmapped))
    vcf_map = genome.map_contigs(sorted(set(genes["chrom"])), vcf_contigs)
    no_vcf = [c for c, m in vcf_map.items() if m is None and fasta_map[c] is not None]
    if len(no_vcf) == len([c for c in fasta_map if fasta_map[c] is not None]):
        raise InputError(vcf_path, "contig names", f"the gene table's chromosomes {sorted(fasta_map)[:3]} (with or without a 'chr' prefix)", f"contigs {vcf_contigs[:3]}")
    if no_vcf:
        log.warning("genes on chromosomes absent from the VCF (%s) are left out", ", ".join(no_vcf))
    renamed = {c: (fasta_map[c], vcf_map[c]) for c in fasta_map if fasta_map[c] and vcf_map[c] and (fasta_map[c] != c or vcf_map[c] != c)}
    if renamed:
        log.info("contig names mapped (gene table -> FASTA, VCF): %s", ", ".join(f"{k}->{a},{b}" for k, (a, b) in list(renamed.items())[:5]))
    genes["fasta_contig"] = genes["chrom"].map(fasta_map)
    genes["vcf_contig"] = genes["chrom"].map(vcf_map)
    dropped = genes["fasta_contig"].isna() | genes["vcf_contig"].isna()
    notes["genes_on_missing_contigs"] = int(dropped.sum())
    genes = genes[~dropped].copy()
    genes["contig_length"] = genes["fasta_contig"].map(ref.lengths).astype(np.int64)
    beyond = genes["tss"] >= genes["contig_length"]
    if beyond.any():
        g = genes[beyond].iloc[0]
        raise InputError(inputs.genes, f"TSS of gene {g.gene_id!r}", f"a position inside {g.fasta_contig} (length {g.contig_length}) of the FASTA (same genome build?)", str(g.tss))
    return genes.reset_index(drop=True)


def _gene_splits(genes: pd.DataFrame, inputs: PrepareInputs) -> pd.Series:
    lists = {k: getattr(inputs, f"{k}_genes") for k in ("train", "val", "test")}
    if all(v is None for v in lists.values()):
        return genes["chrom"].map(chromosome_split)
    split = pd.Series("unused", index=genes.index)
    for k, path in lists.items():
        if path is None:
            continue
        ids = set(read_id_list(Path(path), f"{k} gene list"))
        clash = genes["gene_id"].isin(ids) & (split != "unused")
        if clash.any():
            raise InputError(path, f"gene {genes['gene_id'][clash].iloc[0]!r}", "each gene in one gene list only", "listed twice")
        split[genes["gene_id"].isin(ids)] = k
    return split


def _gene_variants(reader: genome.GenotypeReader, vcf_path: Path, ref: genome.Reference, gw: GeneWindow, vcf_contig: str, cache: Path | None) -> tuple[GeneVariants, VariantQC]:
    rs, re_ = gw.region
    key = cache_key(vcf_path, ref.path, reader.samples, vcf_contig, gw.region, gw.window)
    if cache is not None:
        hit = load_gene_variants(cache / f"{gw.gene_id}.npz", key)
        if hit is not None:
            return hit
    codes = ref.fetch(gw.fasta_contig, rs, re_)
    gv, qc = query_gene(reader, vcf_contig, gw.region, gw.window, codes)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        save_gene_variants(cache / f"{gw.gene_id}.npz", gv, qc, key)
    return gv, qc


def _count_overlaps(gv: GeneVariants) -> tuple[int, int]:
    """(carried insertable alleles skipped for starting inside one already inserted, carried insertable alleles)."""
    ok = gv.insertable()
    n_carried = int(gv.haps[ok].sum())
    if ok.sum() < 2:
        return 0, n_carried
    carried = gv.haps[ok].reshape(int(ok.sum()), -1).astype(bool)
    pos, end = gv.pos[ok], gv.pos[ok] + gv.ref_len[ok]
    return n_carried - int(resolve_overlaps(pos, end, carried).sum()), n_carried


def _check_ref_mismatch(qc: VariantQC, vcf_path: Path, threshold: float, final: bool) -> None:
    """Many REF/FASTA disagreements mean a wrong build or FASTA: stop instead of training on it."""
    checked = qc.ref_checked_alleles
    if checked == 0 or (not final and checked < 200):
        return
    frac = qc.ref_mismatch_alleles / checked
    if frac > threshold:
        raise InputError(
            vcf_path, "REF alleles", f"REF matching the FASTA at >= {1 - threshold:.0%} of sites (same genome build as the FASTA?)",
            f"{qc.ref_mismatch_alleles} of {checked} differ, e.g. {qc.ref_mismatch_examples[0] if qc.ref_mismatch_examples else '?'}",
        )


def _log_qc(qc: VariantQC, notes: dict) -> None:
    counted = [
        ("missing_calls", qc.genotype_calls, "genotype allele calls are missing: read as REF (as the original)"),
        ("unphased_het_calls", qc.het_calls, "heterozygous genotypes are unphased (a/b): alleles taken in written order (as the original)"),
        ("haploid_calls", qc.genotype_calls // 2, "genotypes (records x individuals) are haploid: the allele is used on both haplotypes"),
        ("symbolic_alleles", qc.alt_alleles, "ALT alleles are symbolic (<DEL>, *, ...): not inserted, kept as PrediXcan features"),
        ("ref_mismatch_alleles", qc.ref_checked_alleles, "ALT alleles have a REF that differs from the FASTA: not inserted"),
        ("outside_region_alleles", qc.alt_alleles, "ALT alleles have a REF span leaving the window: not inserted"),
        ("overlap_skipped", qc.carried_allele_copies, "carried ALT alleles (summed over haplotypes) start inside an allele already inserted on that haplotype: skipped"),
    ]
    for key, total, text in counted:
        n = getattr(qc, key)
        if n:
            log.warning("%d of %d %s", n, total, text)
    log.info(
        "variants: %d records, %d ALT alleles (%d multi-allelic records split into one row per ALT, %d indel alleles) in %s",
        qc.records, qc.alt_alleles, qc.multiallelic_records, qc.indel_alleles, "the gene windows",
    )


# --------------------------------------------------------------------------------------------
# reading a prepared folder


class Prepared:
    """A prepared folder: genes, individuals, expression and cached variant matrices."""

    def __init__(self, path: str | os.PathLike[str], fasta: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.is_file():
            raise InputError(self.path, "prepared folder", "the output of `sage_net.py prepare` (manifest.json)", "no manifest.json")
        self.manifest = json.loads(mf.read_text())
        p = self.manifest["params"]
        self.params = PrepareParams(**p)
        self.genes = pd.read_csv(self.path / "genes.tsv", sep="\t", dtype={"gene_id": str, "chrom": str, "fasta_contig": str, "vcf_contig": str})
        self.samples = pd.read_csv(self.path / "samples.tsv", sep="\t", dtype=str)
        with np.load(self.path / "expression.npz") as z:
            self.expr = z["expr"]
            self.mean = z["mean"]
            self.sd = z["sd"]
            self.z = z["z"]
        self.gene_index = {g: i for i, g in enumerate(self.genes["gene_id"])}
        self.fasta_path = Path(fasta) if fasta else Path(self.manifest["inputs"]["fasta"])
        self._ref: genome.Reference | None = None

    # individuals ------------------------------------------------------------------------------
    def split_idx(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.samples["split"].to_numpy() == split)

    @property
    def sample_ids(self) -> list[str]:
        return list(self.samples["sample"])

    @property
    def train_idx(self) -> np.ndarray:
        return self.split_idx("train") if self.params.role == "main" else self.split_idx("all")

    # genes ------------------------------------------------------------------------------------
    def genes_in(self, split: str) -> list[str]:
        return list(self.genes.loc[self.genes["gene_split"] == split, "gene_id"])

    def gene_row(self, gene_id: str) -> pd.Series:
        if gene_id not in self.gene_index:
            raise InputError(self.path, f"gene {gene_id!r}", "a gene of the prepared gene table", "not prepared")
        return self.genes.iloc[self.gene_index[gene_id]]

    def window(self, gene_id: str, length: int | None = None) -> GeneWindow:
        g = self.gene_row(gene_id)
        return GeneWindow(gene_id, g.fasta_contig, int(g.tss), g.strand, length or self.params.window, self.params.anchor, int(g.contig_length))

    def variants(self, gene_id: str) -> GeneVariants:
        return self._variants_cached(gene_id)

    @lru_cache(maxsize=64)  # noqa: B019 - one Prepared per step; bounded
    def _variants_cached(self, gene_id: str) -> GeneVariants:
        hit = load_gene_variants(self.path / "variants" / f"{gene_id}.npz")
        if hit is None:
            raise InputError(self.path / "variants", f"{gene_id}.npz", "a variant matrix written by prepare", "missing")
        return hit[0]

    @property
    def reference(self) -> genome.Reference:
        if self._ref is None:
            self._ref = genome.Reference(self.fasta_path)
            expected = self.manifest["fasta"]["contigs"]
            for contig, length in expected.items():
                if self._ref.lengths.get(contig) != length:
                    raise InputError(self.fasta_path, f"contig {contig}", f"length {length} as in the FASTA used by prepare", str(self._ref.lengths.get(contig, "absent")))
        return self._ref

    def region_codes(self, gw: GeneWindow) -> np.ndarray:
        return self.reference.fetch(gw.fasta_contig, *gw.region)

    def expression_row(self, gene_id: str) -> np.ndarray:
        return self.expr[self.gene_index[gene_id]]

    def qc(self) -> dict:
        return dict(self.manifest.get("qc", {}))
