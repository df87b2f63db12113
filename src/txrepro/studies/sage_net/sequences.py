"""Personal haplotype sequences of a gene window, built for many individuals at once.

Window conventions (documented in docs/studies/sage_net.md):
* The nominal window is [tss - L/2, tss - L/2 + L) in 0-based half-open coordinates, with `tss`
  used exactly as the gene table gives it (as the original did).
* Indels change a haplotype's length; two ways keep the model input at L bases:
  - `window_start` (the original's rule, default): variants inside the window are inserted, the
    haplotype keeps its first L bases (a net insertion pushes bases off the 3' genomic end) or is
    padded with N at the end (a net deletion). Windows running off a contig are clipped and also
    padded at the end, as the original did.
  - `tss`: the haplotype is re-centred on the TSS base, so a TSS stays at the same offset in every
    individual; flanks are filled from a 10% reference margin beyond the window (N off the contig).
* Minus-strand genes are reverse-complemented (for `window_start`, after truncation and before
  padding, as the original's one-hot encoder did).

Vectorisation: the variant matrix of a gene is reduced to its distinct haplotypes, each haplotype
is written as a list of segments (reference stretches and ALT alleles), and all segments of all
haplotypes are materialised with one `np.repeat` gather. No Python loop runs per individual.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from txrepro.studies.sage_net.genome import COMPLEMENT, N_CODE, encode
from txrepro.studies.sage_net.variants import GeneVariants, resolve_overlaps

ANCHORS = ("window_start", "tss")
_MAX_CELLS = 8_000_000  # haplotypes x region length per chunk (bounds memory at ~100 MB)


@dataclass(frozen=True)
class GeneWindow:
    gene_id: str
    fasta_contig: str
    tss: int
    strand: str
    length: int
    anchor: str
    contig_length: int

    def __post_init__(self) -> None:
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {self.anchor!r}")

    @property
    def minus(self) -> bool:
        return self.strand == "-"

    @property
    def window(self) -> tuple[int, int]:
        start = self.tss - self.length // 2
        return start, start + self.length

    @property
    def margin(self) -> int:
        return 0 if self.anchor == "window_start" else max(100, self.length // 10)

    @property
    def region(self) -> tuple[int, int]:
        """The reference stretch fetched and the variants queried for this gene."""
        w0, w1 = self.window
        if self.anchor == "window_start":
            return max(0, w0), min(self.contig_length, w1)
        return w0 - self.margin, w1 + self.margin

    @property
    def off_contig(self) -> bool:
        w0, w1 = self.window
        return w0 < 0 or w1 > self.contig_length

    def index_in_window(self, pos0: int) -> int:
        """Index of reference position `pos0` in the model input (reference sequence, no indels)."""
        w0, _ = self.window
        rs, _ = self.region
        # window_start clips at the contig start and shifts everything left, as the original did
        offset = pos0 - (rs if self.anchor == "window_start" else w0)
        if self.minus:
            if self.anchor == "window_start":
                n_real = min(self.length, self.region[1] - self.region[0])
                return n_real - 1 - offset
            return self.length - 1 - offset
        return offset


def usable_variants(gv: GeneVariants, *, snvs_only: bool = False, min_maf: float = -1.0, maf_samples: np.ndarray | None = None) -> np.ndarray:
    """Variants that can be inserted: real sequence, REF matches the FASTA, inside the region.

    `snvs_only` and `min_maf` are the original's `only_snps` and `maf_threshold` options
    (MAF from the training individuals, kept when MAF > threshold as the original did).
    """
    ok = gv.insertable().copy()
    if snvs_only:
        ok &= (gv.ref_len == 1) & (gv.alt_len == 1)
    if min_maf >= 0 and gv.n:
        if maf_samples is None:
            raise ValueError("min_maf needs the training individuals (maf_samples)")
        ok &= gv.maf(maf_samples) > min_maf
    return ok


def build_haplotypes(
    region_codes: np.ndarray,
    gw: GeneWindow,
    gv: GeneVariants,
    sample_idx: np.ndarray,
    usable: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 codes [n_samples, 2, L]: both haplotypes of each selected individual.

    `region_codes` is the reference of `gw.region` (N beyond the contig); `sample_idx` indexes
    the samples axis of `gv.haps`.
    """
    sample_idx = np.asarray(sample_idx, dtype=np.int64)
    n_sel = len(sample_idx)
    usable = gv.insertable() if usable is None else usable
    use = np.flatnonzero(usable)
    if use.size == 0 or n_sel == 0:
        ref = _materialise(region_codes, gw, np.zeros((0, 1), bool), use, gv)
        return np.broadcast_to(ref[0], (n_sel, 2, gw.length)).copy()
    carried = gv.haps[use][:, sample_idx, :].reshape(use.size, n_sel * 2).astype(bool)
    keys = np.packbits(carried, axis=0).T  # [haplotypes, bytes]
    unique_keys, inverse = np.unique(keys, axis=0, return_inverse=True)
    unique_carried = np.unpackbits(unique_keys.T, axis=0, count=use.size).astype(bool)
    pos = gv.pos[use]
    end = pos + gv.ref_len[use]
    applied = resolve_overlaps(pos, end, unique_carried)
    out = _materialise(region_codes, gw, applied, use, gv)
    return out[inverse.ravel()].reshape(n_sel, 2, gw.length)


def reference_sequence(region_codes: np.ndarray, gw: GeneWindow) -> np.ndarray:
    """Codes [L] of the reference window, processed like a haplotype without variants."""
    return _materialise(region_codes, gw, np.zeros((0, 1), bool), np.zeros(0, np.int64), GeneVariants.empty(0))[0]


def _materialise(region_codes: np.ndarray, gw: GeneWindow, applied: np.ndarray, use: np.ndarray, gv: GeneVariants) -> np.ndarray:
    """Codes [haplotypes, L] for haplotypes given by `applied` [variants x haplotypes]."""
    n_hap = applied.shape[1]
    if n_hap == 0:
        return np.zeros((0, gw.length), np.uint8)
    if _fill_kernel is not None:  # compiled segment copy: memory-bound, no per-base index arrays
        plan = _plan(region_codes, gw, applied, use, gv)
        out = np.full((n_hap, gw.length), N_CODE, dtype=np.uint8)
        _fill_kernel(plan.buf, plan.seg_src, plan.seg_len, plan.seg_first, plan.n_seg, plan.q0, plan.vlo, plan.vhi, plan.mirror, gw.minus, COMPLEMENT, out)
        return out
    chunk = max(1, _MAX_CELLS // max(1, len(region_codes)))
    return np.concatenate([_fill_numpy(_plan(region_codes, gw, applied[:, i : i + chunk], use, gv), gw) for i in range(0, n_hap, chunk)], axis=0)


@dataclass
class _Plan:
    """Each haplotype as segments of `buf` (reference stretches and ALT alleles) and the part kept.

    Haplotype h is seg_src/seg_len[seg_first[h] : seg_first[h] + n_seg[h]] laid end to end; its
    bases j in [vlo, vhi) go to output column j - q0 (plus strand) or mirror - (j - q0),
    complemented (minus strand).
    """

    buf: np.ndarray
    seg_src: np.ndarray
    seg_len: np.ndarray
    seg_first: np.ndarray
    n_seg: np.ndarray
    hap_len: np.ndarray
    q0: np.ndarray
    vlo: np.ndarray
    vhi: np.ndarray
    mirror: np.ndarray


def _plan(region_codes: np.ndarray, gw: GeneWindow, applied: np.ndarray, use: np.ndarray, gv: GeneVariants) -> _Plan:
    n = len(region_codes)
    L = gw.length
    rs, _ = gw.region
    n_hap = applied.shape[1]
    if use.size:
        alt_codes = [encode(a) for a in gv.alt[use]]
        alt_len = np.array([len(a) for a in alt_codes], dtype=np.int64)
        alt_off = np.concatenate([[0], np.cumsum(alt_len)[:-1]]).astype(np.int64)
        buf = np.concatenate([region_codes, *alt_codes]).astype(np.uint8)
        pos = gv.pos[use] - rs
        ref_len = gv.ref_len[use]
    else:
        alt_len = alt_off = pos = ref_len = np.zeros(0, np.int64)
        buf = np.ascontiguousarray(region_codes, dtype=np.uint8)
    # applied (variant, haplotype) pairs, grouped by haplotype, in position order within each
    h_idx, v_idx = np.nonzero(applied.T)
    n_pairs = h_idx.size
    s = pos[v_idx]
    r = ref_len[v_idx]
    k = alt_len[v_idx]
    d = k - r
    stop = s + r
    m = np.bincount(h_idx, minlength=n_hap).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(m)[:-1]]).astype(np.int64)
    rank = np.arange(n_pairs, dtype=np.int64) - first[h_idx]
    # 2m+1 segments per haplotype: ref, alt, ref, alt, ..., ref
    seg_first = 2 * first + np.arange(n_hap, dtype=np.int64)
    n_seg = 2 * n_pairs + n_hap
    seg_src = np.zeros(n_seg, np.int64)
    seg_len = np.zeros(n_seg, np.int64)
    prev_stop = np.zeros(n_pairs, np.int64)
    if n_pairs:
        prev_stop[1:] = stop[:-1]
        prev_stop[rank == 0] = 0
    ref_seg = seg_first[h_idx] + 2 * rank
    seg_src[ref_seg] = prev_stop
    seg_len[ref_seg] = s - prev_stop
    seg_src[ref_seg + 1] = n + alt_off[v_idx]
    seg_len[ref_seg + 1] = k
    last_stop = np.zeros(n_hap, np.int64)
    has = m > 0
    last_stop[has] = stop[first[has] + m[has] - 1]
    final_seg = seg_first + 2 * m
    seg_src[final_seg] = last_stop
    seg_len[final_seg] = n - last_stop
    hap_len = n + np.bincount(h_idx, weights=d, minlength=n_hap).astype(np.int64)

    if gw.anchor == "tss":
        t = gw.tss - rs
        before = stop <= t
        t_h = t + np.bincount(h_idx[before], weights=d[before], minlength=n_hap).astype(np.int64)
        span = (s <= t) & (t < stop)
        if span.any():
            cum = np.cumsum(d) - d  # exclusive prefix over all pairs
            shift_before = cum - cum[first[h_idx]]
            hs = h_idx[span]
            t_h[hs] = s[span] + shift_before[span] + np.minimum(t - s[span], k[span])
        q0 = t_h - L // 2
        vlo, vhi = np.maximum(0, q0), np.minimum(hap_len, q0 + L)
        mirror = np.full(n_hap, L - 1, dtype=np.int64)
    else:  # keep the first L bases; on the minus strand that kept prefix is reversed before padding
        q0 = np.zeros(n_hap, np.int64)
        vlo, vhi = q0.copy(), np.minimum(hap_len, L)
        mirror = vhi - 1
    return _Plan(buf, seg_src, seg_len, seg_first, 2 * m + 1, hap_len, q0, vlo, vhi, mirror)


def _fill_numpy(plan: _Plan, gw: GeneWindow) -> np.ndarray:
    """Pure numpy path (no numba): materialise every haplotype, then gather the kept columns."""
    out_start = np.cumsum(plan.seg_len) - plan.seg_len
    total = int(plan.seg_len.sum())
    flat = plan.buf[np.repeat(plan.seg_src - out_start, plan.seg_len) + np.arange(total, dtype=np.int64)]
    hap_start = out_start[plan.seg_first]
    i = np.arange(gw.length, dtype=np.int64)
    j = plan.q0[:, None] + ((plan.mirror[:, None] - i[None, :]) if gw.minus else i[None, :])
    valid = (j >= plan.vlo[:, None]) & (j < plan.vhi[:, None])
    out = np.where(valid, flat[np.where(valid, hap_start[:, None] + j, 0)], N_CODE).astype(np.uint8)
    if gw.minus:
        out = np.where(valid, COMPLEMENT[out], N_CODE).astype(np.uint8)
    return out


def _fill_segments(buf, seg_src, seg_len, seg_first, n_seg, q0, vlo, vhi, mirror, minus, comp, out):  # pragma: no cover - compiled
    """Copy each haplotype's kept bases segment by segment (compiled by numba when available)."""
    for h in range(out.shape[0]):
        j = 0
        lo, hi, off = vlo[h], vhi[h], q0[h]
        for sg in range(seg_first[h], seg_first[h] + n_seg[h]):
            if j >= hi:
                break
            ln = seg_len[sg]
            a = max(j, lo)
            b = min(j + ln, hi)
            src = seg_src[sg] - j
            if minus:
                for t in range(a, b):
                    out[h, mirror[h] - (t - off)] = comp[buf[src + t]]
            else:
                for t in range(a, b):
                    out[h, t - off] = buf[src + t]
            j += ln
    return out


try:  # numba is in the lock file; without it the numpy path gives the same sequences, slower
    from numba import njit

    _fill_kernel = njit(cache=True, nogil=True)(_fill_segments)
except ImportError:  # pragma: no cover
    _fill_kernel = None
