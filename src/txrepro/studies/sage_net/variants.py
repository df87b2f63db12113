"""Per-gene variant matrices: one VCF query per gene window for all individuals, cached on disk.

The original data loader queried the VCF once per (gene, individual) item and parsed every
record's genotypes again for each individual. Here one cyvcf2 region query per gene yields a
[variants x samples x 2] haplotype matrix (multi-allelic sites split into one row per ALT
allele, as the original's PrediXcan features do), which every later step (personal sequences,
PrediXcan dosages, MAF) reads from an .npz cache.

Real-file conventions are counted, not silently absorbed: missing calls (read as REF, as the
original does), unphased heterozygous calls (alleles taken in the written order, as the
original does), haploid calls, symbolic ALT alleles and REF alleles that disagree with the
FASTA (both kept as PrediXcan features but never inserted into sequences).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path
from txrepro.runtime import get_logger
from txrepro.studies.sage_net.genome import GenotypeReader, encode

log = get_logger(__name__)

# flags (bit mask) of a variant row
SYMBOLIC = 1  # <DEL>, <CN0>, *, breakends: no sequence to insert
REF_MISMATCH = 2  # VCF REF differs from the FASTA at that position
OUTSIDE_REGION = 4  # REF span not inside the fetched region (cannot be inserted)
CACHE_VERSION = 2  # 2: genotype columns in the requested sample order (version 1 kept the VCF header's)


@dataclass
class VariantQC:
    """Counts over all gene windows (a site inside two windows counts twice)."""

    records: int = 0
    alt_alleles: int = 0
    multiallelic_records: int = 0
    indel_alleles: int = 0
    symbolic_alleles: int = 0
    ref_checked_alleles: int = 0
    ref_mismatch_alleles: int = 0
    outside_region_alleles: int = 0
    genotype_calls: int = 0  # allele calls: records x individuals x 2
    missing_calls: int = 0
    het_calls: int = 0  # heterozygous genotypes (two different called alleles)
    unphased_het_calls: int = 0
    haploid_calls: int = 0
    overlap_skipped: int = 0
    carried_allele_copies: int = 0  # insertable ALT alleles carried, summed over haplotypes
    ref_mismatch_examples: list[str] = field(default_factory=list)

    def add(self, other: VariantQC) -> None:
        for f in fields(self):
            if f.name == "ref_mismatch_examples":
                self.ref_mismatch_examples = (self.ref_mismatch_examples + other.ref_mismatch_examples)[:5]
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class GeneVariants:
    """Alt alleles of one gene window, one row per allele, sorted by position."""

    pos: np.ndarray  # int64, 0-based start of REF
    ref: np.ndarray  # str
    alt: np.ndarray  # str
    flags: np.ndarray  # uint8 bit mask (SYMBOLIC, REF_MISMATCH, OUTSIDE_REGION)
    in_window: np.ndarray  # bool: REF span overlaps the nominal window (PrediXcan features)
    haps: np.ndarray  # uint8 [n_alleles, n_samples, 2]: haplotype carries this allele

    @property
    def n(self) -> int:
        return int(self.pos.shape[0])

    @property
    def ref_len(self) -> np.ndarray:
        return np.array([len(r) for r in self.ref], dtype=np.int64)

    @property
    def alt_len(self) -> np.ndarray:
        return np.array([len(a) for a in self.alt], dtype=np.int64)

    def insertable(self) -> np.ndarray:
        return self.flags == 0

    def dosage(self, sample_idx: np.ndarray | None = None) -> np.ndarray:
        """[samples x alleles] alt-allele counts (0/1/2), as the original's PrediXcan features."""
        h = self.haps if sample_idx is None else self.haps[:, sample_idx, :]
        return h.sum(axis=2, dtype=np.int16).T.astype(np.float64)

    def allele_frequency(self, sample_idx: np.ndarray) -> np.ndarray:
        """Alt frequency among `sample_idx` individuals (denominator 2 x n, as the original)."""
        if len(sample_idx) == 0:
            return np.zeros(self.n)
        return self.haps[:, sample_idx, :].sum(axis=(1, 2)) / (2.0 * len(sample_idx))

    def maf(self, sample_idx: np.ndarray) -> np.ndarray:
        f = self.allele_frequency(sample_idx)
        return np.minimum(f, 1.0 - f)

    @classmethod
    def empty(cls, n_samples: int) -> GeneVariants:
        return cls(
            pos=np.zeros(0, np.int64), ref=np.zeros(0, "<U1"), alt=np.zeros(0, "<U1"), flags=np.zeros(0, np.uint8),
            in_window=np.zeros(0, bool), haps=np.zeros((0, n_samples, 2), np.uint8),
        )


def is_symbolic(alt: str) -> bool:
    if not alt or alt in ("*", ".") or alt.startswith("<") or "[" in alt or "]" in alt:
        return True
    return any(c not in "ACGTNacgtn" for c in alt)


def query_gene(
    reader: GenotypeReader,
    vcf_contig: str,
    region: tuple[int, int],
    window: tuple[int, int],
    region_codes: np.ndarray,
) -> tuple[GeneVariants, VariantQC]:
    """All ALT alleles whose REF overlaps `region` (0-based, half-open), for every sample at once.

    Columns of the haplotype matrix follow `reader.samples` (GenotypeReader maps them to the VCF).
    """
    n_samples = reader.n_samples
    rs, re_ = region
    w0, w1 = window
    qc = VariantQC()
    pos, refs, alts, flags, in_win, haps = [], [], [], [], [], []
    for rec, gt in reader.records(vcf_contig, rs, re_):
        start = int(rec.start)
        ref = str(rec.REF).upper()
        stop = start + len(ref)
        if stop <= rs or start >= re_:
            continue
        qc.records += 1
        alt_list = [str(a) for a in rec.ALT]
        if len(alt_list) > 1:
            qc.multiallelic_records += 1
        # gt: int16 [n, ploidy + 1]: alleles..., phased flag; rows in the requested sample order
        alleles = gt[:, :-1].astype(np.int16)
        phased = gt[:, -1].astype(bool)
        if alleles.shape[1] == 1:  # haploid file (chrY, male chrX)
            qc.haploid_calls += n_samples
            alleles = np.repeat(alleles, 2, axis=1)
        else:
            alleles = alleles[:, :2].copy()
            hap1 = alleles[:, 1] == -2  # cyvcf2's vector-end marker: a haploid call in a diploid file
            if hap1.any():
                qc.haploid_calls += int(hap1.sum())
                alleles[hap1, 1] = alleles[hap1, 0]
        missing = alleles < 0
        qc.genotype_calls += alleles.size
        qc.missing_calls += int(missing.sum())
        het = (alleles[:, 0] != alleles[:, 1]) & ~missing.any(axis=1)
        qc.het_calls += int(het.sum())
        qc.unphased_het_calls += int((het & ~phased).sum())
        inside = start >= rs and stop <= re_
        ref_ok = True
        if inside:
            ref_ok = bool(np.array_equal(encode(ref), region_codes[start - rs : stop - rs]))
        overlaps_window = start < w1 and stop > w0
        for k, alt in enumerate(alt_list, start=1):
            qc.alt_alleles += 1
            f = 0
            if is_symbolic(alt):
                f |= SYMBOLIC
                qc.symbolic_alleles += 1
            elif not inside:
                f |= OUTSIDE_REGION
                qc.outside_region_alleles += 1
            else:
                qc.ref_checked_alleles += 1
                if not ref_ok:
                    f |= REF_MISMATCH
                    qc.ref_mismatch_alleles += 1
                    if len(qc.ref_mismatch_examples) < 5:
                        fasta = "".join("ACGTN"[c] for c in region_codes[start - rs : stop - rs])
                        qc.ref_mismatch_examples.append(f"{vcf_contig}:{start + 1} REF={ref} FASTA={fasta}")
                if len(alt) != len(ref):
                    qc.indel_alleles += 1
            pos.append(start)
            refs.append(ref)
            alts.append(alt.upper() if not f & SYMBOLIC else alt)
            flags.append(f)
            in_win.append(overlaps_window)
            haps.append((alleles == k).astype(np.uint8))
    if not pos:
        return GeneVariants.empty(n_samples), qc
    order = np.argsort(np.asarray(pos), kind="stable")
    gv = GeneVariants(
        pos=np.asarray(pos, np.int64)[order],
        ref=np.asarray(refs)[order],
        alt=np.asarray(alts)[order],
        flags=np.asarray(flags, np.uint8)[order],
        in_window=np.asarray(in_win, bool)[order],
        haps=np.stack(haps)[order],
    )
    return gv, qc


def resolve_overlaps(pos: np.ndarray, end: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """Which carried variants are applied on each haplotype ([variants x haplotypes] bool).

    A variant whose REF starts inside one already applied on the same haplotype is skipped (the
    original skipped it too: its REF check against the edited sequence failed). Variants are in
    position order; the loop is over variants, vectorised over haplotypes.
    """
    if carried.shape[0] <= 1:
        return carried.astype(bool)
    prev_max_end = np.maximum.accumulate(end)[:-1]
    if not np.any(pos[1:] < prev_max_end):
        return carried.astype(bool)
    applied = np.zeros(carried.shape, dtype=bool)
    reach = np.full(carried.shape[1], np.iinfo(np.int64).min, dtype=np.int64)
    for v in range(carried.shape[0]):
        ok = carried[v].astype(bool) & (pos[v] >= reach)
        applied[v] = ok
        reach = np.where(ok, end[v], reach)
    return applied


# --------------------------------------------------------------------------------------------
# disk cache


def cache_key(vcf: Path, fasta: Path, samples: list[str], vcf_contig: str, region: tuple[int, int], window: tuple[int, int]) -> str:
    """Identity of a cached matrix: the files (path, size, mtime), the samples and the region.

    Paths enter as a hash: the key is stored in every .npz and the VCF's path is controlled-access.
    """
    def ident(p: Path) -> list:
        st = p.stat()
        return [hashlib.sha256(str(p.resolve()).encode()).hexdigest(), st.st_size, st.st_mtime_ns]

    payload = {
        "v": CACHE_VERSION, "vcf": ident(vcf), "fasta": ident(fasta), "contig": vcf_contig, "region": list(region),
        "window": list(window), "samples": hashlib.sha256("\n".join(samples).encode()).hexdigest(),
    }
    return json.dumps(payload, sort_keys=True)


def save_gene_variants(path: Path, gv: GeneVariants, qc: VariantQC, key: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh, pos=gv.pos, ref=gv.ref.astype(str), alt=gv.alt.astype(str), flags=gv.flags, in_window=gv.in_window,
                haps=np.packbits(gv.haps, axis=1) if gv.n else gv.haps, n_samples=np.int64(gv.haps.shape[1]),
                qc=np.array(json.dumps(qc.as_dict())), key=np.array(key),
            )


def load_gene_variants(path: Path, key: str | None = None) -> tuple[GeneVariants, VariantQC] | None:
    """The cached matrix, or None when absent or built from other inputs (`key` differs)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if key is not None and str(z["key"]) != key:
                return None
            n_samples = int(z["n_samples"])
            haps = z["haps"]
            if haps.shape[0]:
                haps = np.unpackbits(haps, axis=1, count=n_samples)
            gv = GeneVariants(pos=z["pos"], ref=z["ref"], alt=z["alt"], flags=z["flags"], in_window=z["in_window"], haps=haps)
            qc = VariantQC(**json.loads(str(z["qc"])))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, "variant cache", "an .npz written by `sage_net.py prepare`", type(exc).__name__) from None
    return gv, qc


__all__ = [
    "GeneVariants", "VariantQC", "query_gene", "resolve_overlaps", "cache_key", "save_gene_variants",
    "load_gene_variants", "SYMBOLIC", "REF_MISMATCH", "OUTSIDE_REGION", "is_symbolic",
]
