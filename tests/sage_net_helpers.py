"""Small hand-made genomes and VCFs for the sage_net tests."""

from __future__ import annotations

from pathlib import Path

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
