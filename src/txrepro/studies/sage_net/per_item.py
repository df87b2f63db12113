"""Per-item reference construction of personal sequences (the original loader's approach).

For one (gene, individual): fetch the window from the FASTA, query the VCF region, and splice
each carried ALT allele into a Python string, haplotype by haplotype. It shares no code with
`sequences.py` (pysam instead of cyvcf2, strings instead of arrays) so the tests can check the
vectorised builder base by base against it, and `benchmarks/sage_net_loader.py` measures the
speed-up against it. The pipeline never calls it.

Rules (the same contract as the vectorised builder): missing alleles are REF; symbolic ALTs,
REF alleles that differ from the FASTA, REF spans leaving the fetched region, and variants
starting inside one already applied on the same haplotype are not inserted.
"""

from __future__ import annotations

import pysam

_COMP = str.maketrans("ACGTN", "TGCAN")
_SEQ_CHARS = set("ACGTN")


def _symbolic(alt: str) -> bool:
    return not alt or alt in ("*", ".") or alt.startswith("<") or not set(alt.upper()) <= _SEQ_CHARS


def _region(tss: int, length: int, anchor: str, contig_length: int) -> tuple[int, int, int]:
    w0 = tss - length // 2
    w1 = w0 + length
    if anchor == "window_start":
        return max(0, w0), min(contig_length, w1), w0
    margin = max(100, length // 10)
    return w0 - margin, w1 + margin, w0


def _fetch(fasta: pysam.FastaFile, contig: str, start: int, end: int) -> str:
    length = fasta.get_reference_length(contig)
    left = "N" * max(0, -start)
    right = "N" * max(0, end - length)
    return left + fasta.fetch(contig, max(0, start), min(length, end)).upper() + right


def personal_haplotypes(
    fasta: pysam.FastaFile,
    vcf: pysam.VariantFile,
    *,
    fasta_contig: str,
    vcf_contig: str | None,
    tss: int,
    strand: str,
    sample: str | None,
    length: int,
    anchor: str = "window_start",
) -> tuple[str, str]:
    """The two haplotype strings of `sample` (None: the reference) as the model sees them."""
    contig_length = fasta.get_reference_length(fasta_contig)
    rs, re_, w0 = _region(tss, length, anchor, contig_length)
    ref_text = _fetch(fasta, fasta_contig, rs, re_)
    haps = [ref_text, ref_text]
    shift = [0, 0]
    reach = [-(10**18), -(10**18)]
    t_personal: list[int | None] = [None, None]
    t_shift = [0, 0]
    t = tss - rs
    records = []
    if sample is not None and vcf_contig is not None and vcf_contig in vcf.header.contigs:
        records = sorted(vcf.fetch(vcf_contig, max(0, rs), max(1, re_)), key=lambda rec: rec.pos)
    for rec in records:
        ref = rec.ref.upper()
        start = rec.pos - 1
        stop = start + len(ref)
        if stop <= rs or start >= re_:
            continue
        gt = rec.samples[sample]["GT"]
        if len(gt) == 1:
            gt = (gt[0], gt[0])
        for k in (0, 1):
            allele = gt[k]
            if allele is None or allele == 0:
                continue
            alt = rec.alts[allele - 1]
            if _symbolic(alt) or start < rs or stop > re_:
                continue
            if ref_text[start - rs : stop - rs] != ref:
                continue
            if start < reach[k]:
                continue
            alt = alt.upper()
            at = start - rs + shift[k]
            if stop - rs <= t:
                t_shift[k] += len(alt) - len(ref)
            elif start - rs <= t and t_personal[k] is None:
                t_personal[k] = at + min(t - (start - rs), len(alt))
            haps[k] = haps[k][:at] + alt + haps[k][at + len(ref) :]
            shift[k] += len(alt) - len(ref)
            reach[k] = stop
    out = []
    for k in (0, 1):
        seq = haps[k]
        if anchor == "window_start":
            seq = seq[:length]
            if strand == "-":
                seq = seq.translate(_COMP)[::-1]
            seq = seq + "N" * (length - len(seq))
        else:
            centre = t_personal[k] if t_personal[k] is not None else t + t_shift[k]
            lo = centre - length // 2
            win = "".join(seq[i] if 0 <= i < len(seq) else "N" for i in range(lo, lo + length))
            seq = win.translate(_COMP)[::-1] if strand == "-" else win
        out.append(seq)
    return out[0], out[1]
