"""Personal sequences: the vectorised builder against hand-built sequences and the per-item construction."""

from __future__ import annotations

import numpy as np
import pysam
import pytest

from sage_net_helpers import write_fasta, write_vcf
from txrepro.studies.sage_net.genome import GenotypeReader, Reference, decode
from txrepro.studies.sage_net.per_item import personal_haplotypes
from txrepro.studies.sage_net.sequences import GeneWindow, build_haplotypes, reference_sequence
from txrepro.studies.sage_net.variants import query_gene

# 0-based:  0-9 ACGTACGTAC | 10-19 GATTACAGAT | 20-29 CCGGAATTCC | 30-39 TTGGCCAAGG
SEQ = "ACGTACGTACGATTACAGATCCGGAATTCCTTGGCCAAGG"
SAMPLES = ["s1", "s2", "s3"]
ROWS = [
    ("1", 13, "T", "C", ["1|0", "0|0", "1/0"]),  # SNV; s3 unphased
    ("1", 16, "C", "CGG", ["1|0", "0|0", ".|."]),  # insertion; s3 missing
    ("1", 21, "CCG", "C", ["0|1", "0|0", "0|0"]),  # deletion spanning the TSS (0-based 20)
    ("1", 22, "C", "A", ["0|1", "0|0", "1|0"]),  # SNV inside the deletion: skipped on s1's second haplotype
    ("1", 26, "A", "G,T", ["0|2", "1|1", "0|0"]),  # multi-allelic
]
L, TSS = 20, 20

# Written by hand (see the comments): window [10, 30) = GATTACAGATCCGGAATTCC
EXPECTED = {
    ("window_start", "+"): {
        # hap0: T>C at 12, C>CGG at 15, keep the first 20 bases; hap1: CCG>C at 20, A>T at 25, pad N
        "s1": ("GACTACGGAGATCCGGAATT", "GATTACAGATCGATTTCCNN"),
        "s2": ("GATTACAGATCCGGAGTTCC", "GATTACAGATCCGGAGTTCC"),
        "s3": ("GACTACAGATCAGGAATTCC", "GATTACAGATCCGGAATTCC"),
    },
    ("window_start", "-"): {
        # reverse complement of the kept prefix, N padding at the end
        "s1": ("AATTCCGGATCTCCGTAGTC", "GGAAATCGATCTGTAATCNN"),
        "s2": ("GGAACTCCGGATCTGTAATC", "GGAACTCCGGATCTGTAATC"),
        "s3": ("GGAATTCCTGATCTGTAGTC", "GGAATTCCGGATCTGTAATC"),
    },
    ("tss", "+"): {
        # re-centred on the TSS base: hap0 gains 2 bases upstream, hap1's deletion pulls in downstream reference
        "s1": ("CTACGGAGATCCGGAATTCC", "GATTACAGATCGATTTCCTT"),
        "s2": ("GATTACAGATCCGGAGTTCC", "GATTACAGATCCGGAGTTCC"),
        "s3": ("GACTACAGATCAGGAATTCC", "GATTACAGATCCGGAATTCC"),
    },
    ("tss", "-"): {
        "s1": ("GGAATTCCGGATCTCCGTAG", "AAGGAAATCGATCTGTAATC"),
        "s2": ("GGAACTCCGGATCTGTAATC", "GGAACTCCGGATCTGTAATC"),
        "s3": ("GGAATTCCTGATCTGTAGTC", "GGAATTCCGGATCTGTAATC"),
    },
}


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    d = tmp_path_factory.mktemp("hand")
    fasta = write_fasta(d / "ref.fa", {"chr1": SEQ})
    vcf = write_vcf(d / "v.vcf.gz", {"1": len(SEQ)}, SAMPLES, ROWS)
    return fasta, vcf


def _vectorised(fasta, vcf, anchor, strand, tss=TSS, length=L):
    ref = Reference(fasta)
    gw = GeneWindow("g", "chr1", tss, strand, length, anchor, len(SEQ))
    codes = ref.fetch("chr1", *gw.region)
    gv, qc = query_gene(GenotypeReader(vcf, SAMPLES), "1", gw.region, gw.window, codes)
    out = build_haplotypes(codes, gw, gv, np.arange(len(SAMPLES)))
    return gw, codes, gv, qc, {s: (decode(out[i, 0]), decode(out[i, 1])) for i, s in enumerate(SAMPLES)}


@pytest.mark.parametrize("anchor,strand", list(EXPECTED))
def test_vectorised_matches_hand_built(hand, anchor, strand):
    _, _, _, _, got = _vectorised(*hand, anchor, strand)
    assert got == EXPECTED[(anchor, strand)]


@pytest.mark.parametrize("anchor,strand", list(EXPECTED))
def test_per_item_matches_hand_built(hand, anchor, strand):
    fasta, vcf = hand
    fa, vf = pysam.FastaFile(str(fasta)), pysam.VariantFile(str(vcf))
    for s in SAMPLES:
        got = personal_haplotypes(fa, vf, fasta_contig="chr1", vcf_contig="1", tss=TSS, strand=strand, sample=s, length=L, anchor=anchor)
        assert got == EXPECTED[(anchor, strand)][s], s


def test_reference_window_and_qc_counts(hand):
    gw, codes, gv, qc, _ = _vectorised(*hand, "window_start", "+")
    assert decode(reference_sequence(codes, gw)) == SEQ[10:30]
    assert gv.n == 6  # the multi-allelic site is split into two rows
    assert list(gv.alt) == ["C", "CGG", "C", "A", "G", "T"]
    assert (qc.records, qc.alt_alleles, qc.multiallelic_records, qc.indel_alleles) == (5, 6, 1, 2)
    assert (qc.missing_calls, qc.unphased_het_calls, qc.ref_mismatch_alleles, qc.symbolic_alleles) == (2, 1, 0, 0)
    # dosage of the second ALT of the multi-allelic site: s1 carries it once
    np.testing.assert_array_equal(gv.dosage()[:, 5], [1, 0, 0])


def test_off_contig_window_is_padded(hand):
    fasta, vcf = hand
    fa, vf = pysam.FastaFile(str(fasta)), pysam.VariantFile(str(vcf))
    for anchor, expected in (("window_start", SEQ[0:15] + "N" * 5), ("tss", "N" * 5 + SEQ[0:15])):
        gw, codes, _, _, got = _vectorised(fasta, vcf, anchor, "+", tss=5)
        assert gw.off_contig
        assert decode(reference_sequence(codes, gw)) == expected
        item = personal_haplotypes(fa, vf, fasta_contig="chr1", vcf_contig="1", tss=5, strand="+", sample="s1", length=L, anchor=anchor)
        assert got["s1"] == item


def test_index_in_window_points_at_the_variant(hand):
    for anchor in ("window_start", "tss"):
        for strand in "+-":
            gw, codes, _, _, _ = _vectorised(*hand, anchor, strand)
            ref = decode(reference_sequence(codes, gw))
            i = gw.index_in_window(12)  # the T of the first SNV
            assert ref[i] == ("T" if strand == "+" else "A")


def _random_case(rng, tmp_path, n_samples=12):
    """A random contig with dense SNVs, insertions, deletions (some overlapping) and multi-allelic sites."""
    length = 400
    seq = "".join(rng.choice(list("ACGT"), length))
    rows, pos = [], 5
    while pos < length - 12:
        kind = rng.choice(["snv", "ins", "del", "multi"], p=[0.5, 0.2, 0.2, 0.1])
        ref = seq[pos - 1]
        if kind == "snv":
            alt = rng.choice([b for b in "ACGT" if b != ref])
        elif kind == "ins":
            alt = ref + "".join(rng.choice(list("ACGT"), int(rng.integers(1, 6))))
        elif kind == "del":
            ref = seq[pos - 1 : pos - 1 + int(rng.integers(2, 7))]
            alt = ref[0]
        else:
            alt = ",".join(rng.choice([b for b in "ACGT" if b != ref], 2, replace=False))
        n_alt = alt.count(",") + 1
        gts = [f"{rng.integers(0, n_alt + 1)}|{rng.integers(0, n_alt + 1)}" for _ in range(n_samples)]
        rows.append(("1", pos, ref, alt, gts))
        pos += int(rng.integers(1, 9))  # steps shorter than deletions create overlaps
    samples = [f"r{i}" for i in range(n_samples)]
    fasta = write_fasta(tmp_path / "r.fa", {"chr1": seq})
    vcf = write_vcf(tmp_path / "r.vcf.gz", {"1": length}, samples, rows)
    return fasta, vcf, samples, length


@pytest.mark.parametrize("seed", [1, 2])
def test_vectorised_equals_per_item_on_random_indels(tmp_path, seed):
    rng = np.random.default_rng(seed)
    fasta, vcf, samples, length = _random_case(rng, tmp_path)
    ref = Reference(fasta)
    fa, vf = pysam.FastaFile(str(fasta)), pysam.VariantFile(str(vcf))
    seen_multi = seen_indel = 0
    for anchor in ("window_start", "tss"):
        for strand in "+-":
            for tss, win in ((200, 120), (30, 80), (390, 60)):  # inside, off the start, off the end
                gw = GeneWindow("g", "chr1", tss, strand, win, anchor, length)
                codes = ref.fetch("chr1", *gw.region)
                gv, qc = query_gene(GenotypeReader(vcf, samples), "1", gw.region, gw.window, codes)
                out = build_haplotypes(codes, gw, gv, np.arange(len(samples)))
                for i, s in enumerate(samples):
                    exp = personal_haplotypes(fa, vf, fasta_contig="chr1", vcf_contig="1", tss=tss, strand=strand, sample=s, length=win, anchor=anchor)
                    assert (decode(out[i, 0]), decode(out[i, 1])) == exp, (anchor, strand, tss, s)
                seen_multi += qc.multiallelic_records
                seen_indel += qc.indel_alleles
    assert seen_multi > 0 and seen_indel > 0
