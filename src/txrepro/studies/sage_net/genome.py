"""Reference FASTA and VCF access with the checks real files need.

Real inputs disagree on conventions: `chr1` in the FASTA and `1` in the VCF (ROSMAP vs GTEx),
plain-gzip VCFs that tabix cannot index, VCFs without an index. Each is either handled here
(contig names are mapped) or stopped before any long work with one line naming the file and the
fix (`sage_net.py index-vcf`).
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path
from txrepro.runtime import get_logger

log = get_logger(__name__)

# Base codes used everywhere in the study: A C G T, anything else (N, IUPAC, padding) is 4.
BASES = "ACGTN"
N_CODE = 4
_LOOKUP = np.full(256, N_CODE, dtype=np.uint8)
for _i, _b in enumerate("ACGT"):
    _LOOKUP[ord(_b)] = _i
    _LOOKUP[ord(_b.lower())] = _i
COMPLEMENT = np.array([3, 2, 1, 0, N_CODE], dtype=np.uint8)


def encode(seq: str | bytes) -> np.ndarray:
    """DNA text to uint8 codes (A=0, C=1, G=2, T=3, other=4); soft-masked lower case is upper case."""
    raw = seq.encode("ascii") if isinstance(seq, str) else seq
    return _LOOKUP[np.frombuffer(raw, dtype=np.uint8)]


def decode(codes: np.ndarray) -> str:
    return "".join(BASES[int(c)] for c in np.asarray(codes).ravel())


# --------------------------------------------------------------------------------------------
# contig names


def contig_candidates(name: str) -> list[str]:
    """Spellings of one chromosome across files: '1' <-> 'chr1', 'MT' <-> 'chrM'."""
    name = str(name)
    bare = name[3:] if name.lower().startswith("chr") else name
    out = [name, bare, f"chr{bare}"]
    if bare in ("M", "MT"):
        out += ["MT", "chrM", "M", "chrMT"]
    seen: list[str] = []
    for c in out:
        if c not in seen:
            seen.append(c)
    return seen


def map_contig(name: str, available: Iterable[str]) -> str | None:
    """The spelling of `name` that `available` uses, or None when the file lacks that chromosome."""
    avail = set(available)
    for cand in contig_candidates(name):
        if cand in avail:
            return cand
    return None


def bare_chromosome(name: str) -> str:
    """'chr17' -> '17' (gene splits are defined on bare names, as in the original)."""
    name = str(name)
    return name[3:] if name.lower().startswith("chr") else name


# --------------------------------------------------------------------------------------------
# FASTA


class Reference:
    """A FASTA opened with pysam; fetches fixed windows as codes, padding with N off the contig ends."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import pysam

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, "FASTA", "an existing reference FASTA file", "nothing at this path")
        has_fai = Path(f"{self.path}.fai").is_file()
        if not has_fai and not os.access(self.path.parent, os.W_OK):
            raise InputError(self.path, "FASTA index", "a .fai index beside the FASTA (samtools faidx)", "no .fai and the folder is read-only")
        try:
            self._fa = pysam.FastaFile(str(self.path))
        except (OSError, ValueError) as exc:
            raise InputError(self.path, "FASTA", "a readable FASTA (plain or bgzip with .fai/.gzi)", str(exc).splitlines()[0][:120]) from None
        self.lengths: dict[str, int] = dict(zip(self._fa.references, self._fa.lengths))
        if not self.lengths:
            raise InputError(self.path, "FASTA", "at least one sequence", "no sequences")

    def fetch(self, contig: str, start: int, end: int) -> np.ndarray:
        """Codes of [start, end) (0-based, half-open); positions off the contig are N."""
        length = self.lengths[contig]
        out = np.full(end - start, N_CODE, dtype=np.uint8)
        lo, hi = max(0, start), min(length, end)
        if hi > lo:
            out[lo - start : hi - start] = encode(self._fa.fetch(contig, lo, hi))
        return out

    def close(self) -> None:
        self._fa.close()

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# VCF


def vcf_compression(path: Path) -> str:
    """'bgzf', 'gzip' (plain gzip, which tabix cannot index) or 'plain'."""
    with path.open("rb") as fh:
        head = fh.read(18)
    if head[:2] != b"\x1f\x8b":
        return "plain"
    # BGZF = gzip with the FEXTRA flag and a 'BC' extra subfield (SAM/BAM spec, section 4.1).
    if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC":
        return "bgzf"
    return "gzip"


def vcf_index(path: Path) -> Path | None:
    for suffix in (".tbi", ".csi"):
        idx = Path(f"{path}{suffix}")
        if idx.is_file():
            return idx
    return None


def check_vcf(path: str | os.PathLike[str], *, param: str = "--vcf") -> Path:
    """Stop early, naming the fix, when the VCF cannot be queried by region."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "VCF", "an existing bgzip-compressed, tabix-indexed VCF", "nothing at this path")
    kind = vcf_compression(p)
    fix = f"run `sage_net.py index-vcf --vcf {p} --out {_indexed_name(p)}` and pass that file as {param}"
    if kind == "plain":
        raise InputError(p, "VCF compression", f"a bgzip-compressed VCF with a tabix index ({fix})", "an uncompressed file")
    if kind == "gzip":
        raise InputError(p, "VCF compression", f"bgzip (BGZF) compression, which tabix can index ({fix})", "plain gzip")
    if vcf_index(p) is None:
        raise InputError(p, "VCF index", f"a .tbi or .csi index beside the VCF ({fix}, or add --index-vcf)", "no index")
    return p


def _indexed_name(p: Path) -> str:
    """x.vcf -> x.vcf.gz; x.vcf.gz (plain gzip) -> x.bgz.vcf.gz, so the input is never overwritten."""
    name = p.name
    compressed = name.endswith((".gz", ".bgz"))
    stem = name.rsplit(".", 1)[0] if compressed else name
    stem = stem[:-4] if stem.endswith(".vcf") else stem
    return str(p.with_name(stem + (".bgz.vcf.gz" if compressed else ".vcf.gz")))


def index_vcf(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None) -> Path:
    """bgzip (re-compressing plain gzip) and tabix-index a VCF; returns the indexed file.

    `pysam.tabix_index` compresses plain text itself but refuses plain gzip, which is what most
    download portals serve, so that case is streamed through pysam's BGZF writer first.
    """
    import pysam

    src = Path(src)
    if not src.is_file():
        raise InputError(src, "VCF", "an existing VCF file", "nothing at this path")
    kind = vcf_compression(src)
    dst = Path(dst) if dst else (src if kind == "bgzf" else Path(_indexed_name(src)))
    if not dst.name.endswith(".gz"):
        raise InputError(dst, "output name", "a name ending in .gz (bgzip output)", dst.name)
    if kind == "bgzf":
        if dst.resolve() != src.resolve():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    else:
        opener = gzip.open if kind == "gzip" else open
        with atomic_path(dst) as tmp:
            try:
                with opener(src, "rb") as fin, pysam.BGZFile(str(tmp), "wb") as fout:
                    for chunk in iter(lambda: fin.read(1 << 20), b""):
                        fout.write(chunk)
            except (OSError, EOFError) as exc:
                raise InputError(src, "VCF", "a readable (optionally gzip-compressed) VCF", str(exc)[:120]) from None
    try:
        pysam.tabix_index(str(dst), preset="vcf", force=True)
    except (OSError, ValueError) as exc:
        raise InputError(dst, "VCF", "a VCF sorted by contig and position that tabix can index", str(exc).splitlines()[0][:160]) from None
    log.info("indexed %s (%s input) -> %s.tbi", src, kind, dst)
    return dst


def open_vcf(path: Path):  # -> cyvcf2.VCF
    """cyvcf2 reader of the header and records; genotypes are read through `GenotypeReader` only."""
    import cyvcf2

    try:
        return cyvcf2.VCF(str(path), gts012=False, strict_gt=False, lazy=True)
    except (OSError, Exception) as exc:  # cyvcf2 raises bare Exception for unreadable headers
        raise InputError(path, "VCF", "a readable VCF", str(exc).splitlines()[0][:120]) from None


class GenotypeReader:
    """Region queries of a VCF whose genotype columns follow `samples` in the order given.

    cyvcf2's `set_samples()` restricts a reader to a subset of individuals but keeps the header's
    order: asking for [B, A] gives columns [A, B]. A caller that labels those columns in its own
    order (a seeded split, a shuffled sample list) hands one person's genotypes to another. This
    class is the one place that maps requested samples to VCF columns; every genotype the study
    reads comes out of `records()` already in the requested order.
    """

    def __init__(self, path: str | os.PathLike[str], samples: Sequence[str]) -> None:
        self.path = Path(path)
        self.samples = [str(s) for s in samples]
        if len(set(self.samples)) != len(self.samples):
            dup = next(s for s in self.samples if self.samples.count(s) > 1)
            raise InputError(self.path, "samples", "each requested individual once", f"{dup!r} requested twice")
        self._vcf = open_vcf(self.path)
        header = list(self._vcf.samples)
        if len(set(header)) != len(header):
            dup = next(s for s in header if header.count(s) > 1)
            raise InputError(self.path, "sample columns", "unique sample ids in the #CHROM header line", f"duplicate {dup!r}")
        in_header = set(header)
        missing = [s for s in self.samples if s not in in_header]
        if missing:
            raise InputError(self.path, "samples", "every requested sample in the VCF header", f"{len(missing)} missing, e.g. {missing[0]!r}")
        self._vcf.set_samples(self.samples)
        kept = list(self._vcf.samples)  # header order, whatever order was asked for
        if sorted(kept) != sorted(self.samples):
            raise RuntimeError(f"cyvcf2 kept samples {kept[:3]}... for a request of {self.samples[:3]}...")
        column = {s: i for i, s in enumerate(kept)}
        self.columns = np.array([column[s] for s in self.samples], dtype=np.intp)

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    def records(self, contig: str, start: int, end: int) -> Iterator[tuple[object, np.ndarray]]:
        """(record, genotypes) of records overlapping [start, end) (0-based, half-open).

        genotypes: int16 [n_samples, ploidy + 1] as cyvcf2's `genotype.array()` (allele indices,
        -1 missing, -2 vector end; last column the phased flag), rows in the requested order.
        """
        for rec in self._vcf(f"{contig}:{max(0, start) + 1}-{max(1, end)}"):
            yield rec, rec.genotype.array()[self.columns]

    def close(self) -> None:
        self._vcf.close()

    def __enter__(self) -> GenotypeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def vcf_samples(path: Path) -> list[str]:
    vcf = open_vcf(path)
    try:
        return list(vcf.samples)
    finally:
        vcf.close()


def vcf_contigs(path: Path) -> list[str]:
    """Contigs that hold records (from the tabix/CSI index), not the header's declared ##contig list.

    Real VCFs often declare the whole genome in the header (a GRCh38 header on a chr22-only file);
    a gene on a declared but empty contig would silently get no variants at all.
    """
    import pysam

    try:
        with pysam.VariantFile(str(path)) as vf:
            if vf.index is not None:
                return list(vf.index.keys())
    except (OSError, ValueError):
        pass
    vcf = open_vcf(path)
    try:
        return list(vcf.seqnames)
    finally:
        vcf.close()


def require_gt(path: Path) -> None:
    vcf = open_vcf(path)
    try:
        fields = {h.info().get("ID") for h in vcf.header_iter() if h.type == "FORMAT"}
    finally:
        vcf.close()
    if "GT" not in fields:
        raise InputError(path, "FORMAT/GT", "a GT (genotype) field declared in the header", f"FORMAT fields {sorted(f for f in fields if f)}")


def map_contigs(names: Iterable[str], available: Mapping[str, int] | Iterable[str]) -> dict[str, str | None]:
    avail = list(available)
    return {n: map_contig(n, avail) for n in names}
