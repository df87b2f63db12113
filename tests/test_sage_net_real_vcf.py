"""sage_net on real public genotypes, through the commands a user runs, checked against pysam.

Data (not made by us): Bioconductor VariantAnnotation's extdata, shipped in the Debian package
r-bioc-variantannotation (unpacked by `scripts/debian_test_data.sh`, which `.ci/run` calls):
* `chr22.vcf.gz`: 1000 Genomes phase 1, 5 individuals (HG00096 ... HG00101), 10,376 phased records
  on 22:50.3-51.0 Mb (hg19), 407 indels.
* `hapmap_exome_chr22.vcf.gz`: 22 HapMap individuals, 1,011 exome records on chr22 (hg19), unphased
  (`0/1`), with missing calls and 40 multi-allelic sites; its header declares every chromosome
  while only 22 holds records.
No package ships the matching hg19 segment, so the FASTA (`chr22`, the hg19 length) carries every
REF allele of both files at its position (they agree: same build) and seeded random bases between
them; the REF check therefore passes by construction. What is checked is what a user's real VCF
exercises: sample lists in shuffled order, `chr22` vs `22`, unphased and missing calls,
multi-allelic sites, indels, a header declaring contigs without records. `sage_net.py prepare`
(main cohort with shuffled train/val/test lists and gene lists; external cohort with a shuffled
`--samples` list) and `sage_net.py predixcan` run as commands; then every individual's two personal
haplotypes are compared base for base with the per-item construction reading that individual by
name with pysam, every variant-matrix entry with pysam's call, and every PrediXcan prediction with
intercept + pysam dosages x weights.tsv. On the code before the sample-order fix: every one of the
12 exome variant matrices was wrong, 195 of 264 (window, individual) haplotype pairs (20 of 22
individuals) and 17 of 22 PrediXcan predictions of a window belonged to other people; 17 of the 18
1000 Genomes pairs (all 3 individuals) did too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pysam
import pytest

from conftest import REPO, assert_one_line_error, run_cli
from sage_net_helpers import pysam_alleles, pysam_dosage
from txrepro.studies.sage_net.data import Prepared
from txrepro.studies.sage_net.genome import decode
from txrepro.studies.sage_net.per_item import personal_haplotypes
from txrepro.studies.sage_net.predict import SequenceProvider

EXTDATA = "usr/lib/R/site-library/VariantAnnotation/extdata"
CANDIDATES = [REPO / ".cache" / "debian" / "r-bioc-variantannotation" / EXTDATA, Path("/") / EXTDATA]
CHR22_HG19 = 51_304_566
WINDOW = 2_000


def _extdata() -> Path:
    for d in CANDIDATES:
        if (d / "chr22.vcf.gz").is_file() and (d / "hapmap_exome_chr22.vcf.gz").is_file():
            return d
    reason = "Debian package r-bioc-variantannotation not unpacked: run `bash scripts/debian_test_data.sh`"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI runs it before the tests)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    src = _extdata()
    tmp = tmp_path_factory.mktemp("real_vcf")
    vcfs = {"kg": src / "chr22.vcf.gz", "exome": src / "hapmap_exome_chr22.vcf.gz"}
    rng = np.random.default_rng(22)
    seq = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, CHR22_HG19)].copy()
    placed = np.zeros(CHR22_HG19, dtype=bool)
    for vcf in vcfs.values():
        with pysam.VariantFile(str(vcf)) as vf:
            for rec in vf:
                ref = np.frombuffer(rec.ref.upper().encode(), dtype=np.uint8)
                span = slice(rec.start, rec.start + len(ref))
                clash = placed[span] & (seq[span] != ref)
                assert not clash.any(), f"REF alleles of the two files disagree at 22:{rec.pos}"
                seq[span], placed[span] = ref, True
    fasta = tmp / "chr22_hg19_refs.fa"
    with fasta.open("wb") as fh:
        fh.write(b">chr22\n")
        fh.write(seq.tobytes())
        fh.write(b"\n")
    pysam.faidx(str(fasta))
    return {"fasta": fasta, "tmp": tmp, **vcfs}


def _windows(vcf: Path, n: int) -> list[int]:
    """TSSs of the `n` non-overlapping WINDOW-bp windows holding the most records (deterministic)."""
    with pysam.VariantFile(str(vcf)) as vf:
        pos = np.array([rec.start for rec in vf])
    counts = [(int(np.sum((pos >= p - WINDOW // 2) & (pos < p + WINDOW // 2))), int(p)) for p in pos]
    chosen: list[int] = []
    for _, p in sorted(counts, key=lambda t: (-t[0], t[1])):
        if all(abs(p - q) >= WINDOW for q in chosen):
            chosen.append(p + 7)  # not exactly on a variant
        if len(chosen) == n:
            break
    return sorted(chosen)


def _genes(tmp: Path, name: str, tss: list[int]) -> tuple[Path, list[str]]:
    ids = [f"W{name}_{t}" for t in tss]  # windows, named by position: not real genes
    table = pd.DataFrame({"gene_id": ids, "chr": "22", "tss": tss, "strand": ["+" if i % 2 == 0 else "-" for i in range(len(ids))]})
    path = tmp / f"{name}_windows.tsv"
    table.to_csv(path, sep="\t", index=False)
    return path, ids


def _write_list(path: Path, ids: list[str]) -> Path:
    path.write_text("\n".join(ids) + "\n")
    return path


def _prepare_cli(out: Path, **args: Path | str) -> None:
    cmd = ["sage_net.py", "prepare", "--out", str(out), "--window", str(WINDOW)]
    for k, v in args.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    run_cli(cmd, check=True)


@pytest.fixture(scope="module")
def exome(data) -> dict:
    """Main cohort: 22 HapMap individuals, shuffled 16/3/3 lists, windows split by gene lists."""
    tmp = data["tmp"] / "exome"
    tmp.mkdir()
    samples = list(pysam.VariantFile(str(data["exome"])).header.samples)
    rng = np.random.default_rng(5)
    order = [samples[i] for i in rng.permutation(len(samples))]
    lists = {"train": order[:16], "val": order[16:19], "test": order[19:]}
    genes, ids = _genes(tmp, "exome", _windows(data["exome"], 12))
    # expression: a planted effect of one common in-window SNV per window (pysam dosage by name) + noise
    expr, planted = {}, {}
    for gid in ids:
        tss = int(gid.split("_")[1])
        sites = pysam_alleles(data["exome"], "22", tss - WINDOW // 2, tss + WINDOW // 2, samples)
        snvs = [(k, np.array([a + b for a, b in v], float)) for k, v in sites.items() if len(k[1]) == len(k[2]) == 1]
        snvs = [(k, d) for k, d in snvs if d[[samples.index(s) for s in lists["train"]]].std() > 0.3]
        key, dose = snvs[0] if snvs else (None, np.zeros(len(samples)))
        planted[gid] = key
        expr[gid] = 5.0 + dose + rng.normal(0, 0.1, len(samples))
    table = pd.DataFrame(expr, index=samples).T[order[::-1]]  # columns in yet another order
    table.index.name = "gene_id"
    table.to_csv(tmp / "expression.csv")
    paths = {"vcf": data["exome"], "fasta": data["fasta"], "genes": genes, "expression": tmp / "expression.csv"}
    for split, members in lists.items():
        paths[f"{split}_samples"] = _write_list(tmp / f"{split}_samples.txt", members)
    # a chr22-only gene table under the default chromosome split has no training gene: one line naming the parameters
    res = run_cli(["sage_net.py", "prepare", "--out", str(tmp / "refused"), "--window", str(WINDOW)]
                  + [a for k, v in paths.items() for a in (f"--{k.replace('_', '-')}", str(v))])
    assert_one_line_error(res, "sage_net_genes (--genes): chromosomes", "sage_net_train_genes (--train-genes)", "genes on 22 only")
    paths["train_genes"] = _write_list(tmp / "train_genes.txt", ids[:8])
    paths["val_genes"] = _write_list(tmp / "val_genes.txt", ids[8:10])
    paths["test_genes"] = _write_list(tmp / "test_genes.txt", ids[10:])
    _prepare_cli(tmp / "prepared", **paths)
    run_cli(["sage_net.py", "predixcan", "--prepared", str(tmp / "prepared"), "--out", str(tmp / "predixcan")], check=True)
    return {"prepared": Prepared(tmp / "prepared"), "predixcan": tmp / "predixcan", "planted": planted, "vcf": data["exome"], "fasta": data["fasta"]}


@pytest.fixture(scope="module")
def kg(data) -> dict:
    """External cohort: three 1000 Genomes individuals, --samples in shuffled order."""
    tmp = data["tmp"] / "kg"
    tmp.mkdir()
    chosen = ["HG00101", "HG00096", "HG00099"]
    genes, ids = _genes(tmp, "kg", _windows(data["kg"], 6))
    rng = np.random.default_rng(7)
    samples = list(pysam.VariantFile(str(data["kg"])).header.samples)
    table = pd.DataFrame(rng.normal(size=(len(ids), len(samples))), index=pd.Index(ids, name="gene_id"), columns=samples[::-1])
    table.to_csv(tmp / "expression.csv")
    _prepare_cli(tmp / "prepared", vcf=data["kg"], fasta=data["fasta"], genes=genes, expression=tmp / "expression.csv",
                 samples=_write_list(tmp / "samples.txt", chosen), role="external", cohort="1000G")
    return {"prepared": Prepared(tmp / "prepared"), "vcf": data["kg"], "fasta": data["fasta"], "samples": chosen}


def _check_cohort(c: dict) -> int:
    """Variant matrices and personal haplotypes of every individual against pysam; returns items checked."""
    p: Prepared = c["prepared"]
    seqs = SequenceProvider(p)
    fa, vf = pysam.FastaFile(str(c["fasta"])), pysam.VariantFile(str(c["vcf"]))
    idx = np.arange(len(p.sample_ids))
    n = 0
    for gene in p.genes["gene_id"]:
        g = p.gene_row(gene)
        gw = p.window(gene)
        gv = p.variants(gene)
        expected = pysam_alleles(c["vcf"], g.vcf_contig, *gw.region, p.sample_ids)
        got: dict = {}
        for i in range(gv.n):
            key = (int(gv.pos[i]), str(gv.ref[i]), str(gv.alt[i]))
            rows = [tuple(map(int, h)) for h in gv.haps[i]]
            got[key] = [tuple(map(int, np.add(a, b))) for a, b in zip(got[key], rows)] if key in got else rows
        assert got == expected, gene
        _, haps = seqs.gene(gene, idx)
        for i, sample in enumerate(p.sample_ids):
            exp = personal_haplotypes(fa, vf, fasta_contig=g.fasta_contig, vcf_contig=g.vcf_contig, tss=int(g.tss), strand=g.strand,
                                      sample=sample, length=WINDOW, anchor="window_start")
            assert (decode(haps[i, 0]), decode(haps[i, 1])) == exp, (gene, sample)
            n += 1
    return n


def test_exome_main_cohort_sequences_and_variants_match_pysam(exome):
    p = exome["prepared"]
    assert sorted(p.samples["split"].value_counts().items()) == [("test", 3), ("train", 16), ("val", 3)]
    assert set(p.genes["vcf_contig"]) == {"22"} and set(p.genes["fasta_contig"]) == {"chr22"}
    qc = p.qc()
    # real-file conventions this file brings (counts over the 12 windows)
    assert qc["unphased_het_calls"] > 0 and qc["unphased_het_calls"] <= qc["het_calls"] < qc["genotype_calls"] // 2
    assert qc["ref_mismatch_alleles"] == 0
    assert _check_cohort(exome) == 12 * 22


def test_exome_predixcan_uses_each_individuals_own_dosages(exome):
    from txrepro.studies.sage_net.predixcan import PrediXcanResult

    p, px = exome["prepared"], PrediXcanResult(exome["predixcan"])
    assert px.samples == p.sample_ids
    fitted = 0
    for gene in px.ranking():
        w = px.weights[px.weights["gene_id"] == gene]
        row = px.table.set_index("gene_id").loc[gene]
        expected = np.full(len(px.samples), float(row["intercept"]))
        for pos, ref, alt, coef in zip(w["pos"], w["ref"], w["alt"], w["coef"]):
            expected += coef * pysam_dosage(exome["vcf"], "22", int(pos), ref, alt, px.samples)
        np.testing.assert_allclose(px.predictions(gene), expected, rtol=1e-9, atol=1e-9, err_msg=gene)
        fitted += 1
    assert fitted >= 8
    # the planted SNV carries the largest weight in most windows (only with genotypes of the right people)
    top_is_planted = []
    for gene, key in exome["planted"].items():
        w = px.weights[px.weights["gene_id"] == gene]
        if key is None or w.empty:
            continue
        top = w.iloc[int(np.argmax(np.abs(w["coef"].to_numpy())))]
        top_is_planted.append((int(top.pos) - 1, top.ref, top.alt) == key)
    assert len(top_is_planted) >= 8 and np.mean(top_is_planted) >= 0.75, top_is_planted


def test_1000_genomes_external_cohort_matches_pysam(kg):
    p = kg["prepared"]
    assert p.sample_ids == kg["samples"] and set(p.samples["split"]) == {"all"}
    qc = p.qc()
    assert qc["unphased_het_calls"] == 0 and qc["indel_alleles"] > 0
    assert _check_cohort(kg) == 6 * 3
    manifest = json.loads((p.path / "manifest.json").read_text())
    assert manifest["inputs"]["vcf"]["file"] == "chr22.vcf.gz" and "site-library" not in json.dumps(manifest["inputs"]["vcf"])
