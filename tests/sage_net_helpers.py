"""Small hand-made genomes and VCFs for the sage_net tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pysam

VCF_HEADER = [
    "##fileformat=VCFv4.2",
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
]


def write_fasta(path: Path, contigs: dict[str, str]) -> Path:
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in contigs.items()))
    pysam.faidx(str(path))
    return path


def write_vcf(path: Path, contigs: dict[str, int], samples: list[str], rows: list[tuple], *, index: bool = True) -> Path:
    """rows: (contig, pos1, ref, alt, [GT per sample]); written bgzipped and tabix-indexed."""
    lines = list(VCF_HEADER[:1]) + [f"##contig=<ID={c},length={n}>" for c, n in contigs.items()] + VCF_HEADER[1:]
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]))
    for contig, pos, ref, alt, gts in rows:
        lines.append("\t".join([contig, str(pos), ".", ref, alt, ".", "PASS", ".", "GT", *gts]))
    text = "\n".join(lines) + "\n"
    plain = path.with_suffix("") if path.name.endswith(".gz") else path
    plain.write_text(text)
    if not index:
        return plain
    pysam.tabix_compress(str(plain), str(path), force=True)
    pysam.tabix_index(str(path), preset="vcf", force=True)
    plain.unlink()
    return path


def write_table(path: Path, header: list[str], rows: list[list]) -> Path:
    sep = "\t" if path.suffix == ".tsv" else ","
    path.write_text(sep.join(header) + "\n" + "".join(sep.join(map(str, r)) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------------------
# an independent genotype reader (pysam, by sample name), the oracle of the sample-order tests


def pysam_alleles(vcf: Path, contig: str, start: int, end: int, samples: list[str]) -> dict[tuple[int, str, str], list[tuple[int, int]]]:
    """{(pos0, REF, ALT): [(hap0, hap1) carries ALT, per sample in `samples` order]} for records
    whose REF overlaps [start, end), read by sample NAME with pysam (missing = REF, a haploid call on
    both haplotypes, as the study's rules)."""
    out: dict[tuple[int, str, str], list[tuple[int, int]]] = {}
    with pysam.VariantFile(str(vcf)) as vf:
        for rec in vf.fetch(contig, max(0, start), end):
            if rec.stop <= start or rec.start >= end:
                continue
            for k, alt in enumerate(rec.alts or (), start=1):
                row = []
                for s in samples:
                    gt = rec.samples[s]["GT"] or (None,)
                    gt = tuple(gt) * 2 if len(gt) == 1 else tuple(gt[:2])
                    row.append(tuple(int(a == k) for a in gt))
                key = (int(rec.start), rec.ref.upper(), alt.upper() if not alt.startswith("<") else alt)
                out[key] = [tuple(map(int, np.add(out[key][i], row[i]))) for i in range(len(samples))] if key in out else row
    return out


def pysam_dosage(vcf: Path, contig: str, pos1: int, ref: str, alt: str, samples: list[str]) -> np.ndarray:
    """ALT-allele count of each sample (by name) at one site, pysam."""
    hits = pysam_alleles(vcf, contig, pos1 - 1, pos1, samples)
    row = hits.get((pos1 - 1, ref, alt))
    if row is None:
        return np.zeros(len(samples))
    return np.array([a + b for a, b in row], dtype=float)
