"""Model inputs per gene (reference + both haplotypes for many individuals) and batched prediction."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from txrepro.studies.sage_net.data import Prepared
from txrepro.studies.sage_net.model import PSageNet, RSageNet, one_hot
from txrepro.studies.sage_net.sequences import build_haplotypes, reference_sequence, usable_variants


@dataclass(frozen=True)
class VariantOptions:
    """The original's `only_snps` and `maf_threshold` (MAF among training individuals; -1: none)."""

    snvs_only: bool = False
    min_maf: float = -1.0


class SequenceProvider:
    """Builds (and keeps up to `max_bytes`) reference and personal codes per gene."""

    def __init__(self, prepared: Prepared, options: VariantOptions = VariantOptions(), max_bytes: int = 1 << 30, maf_prepared: Prepared | None = None) -> None:
        self.prepared = prepared
        self.options = options
        self.max_bytes = max_bytes
        # MAF comes from the main cohort's training individuals even for an external cohort (as the original)
        self.maf_prepared = maf_prepared or prepared
        self._cache: OrderedDict[tuple[str, bytes], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._bytes = 0

    def reference(self, gene: str) -> np.ndarray:
        gw = self.prepared.window(gene)
        return reference_sequence(self.prepared.region_codes(gw), gw)

    def gene(self, gene: str, sample_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reference [L], haplotypes [n, 2, L]) as uint8 codes."""
        key = (gene, np.asarray(sample_idx, np.int64).tobytes())
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        gw = self.prepared.window(gene)
        codes = self.prepared.region_codes(gw)
        gv = self.prepared.variants(gene)
        usable = self._usable(gene, gv)
        value = (reference_sequence(codes, gw), build_haplotypes(codes, gw, gv, sample_idx, usable))
        size = value[1].nbytes
        if size <= self.max_bytes:
            self._cache[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._cache:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old[1].nbytes
        return value

    def _usable(self, gene: str, gv) -> np.ndarray:
        o = self.options
        if o.min_maf < 0:
            return usable_variants(gv, snvs_only=o.snvs_only)
        if self.maf_prepared is self.prepared:
            return usable_variants(gv, snvs_only=o.snvs_only, min_maf=o.min_maf, maf_samples=self.prepared.train_idx)
        main = self.maf_prepared.variants(gene)
        maf = dict(zip(zip(main.pos, main.ref, main.alt), main.maf(self.maf_prepared.train_idx)))
        ok = usable_variants(gv, snvs_only=o.snvs_only)
        return ok & np.array([maf.get((p, r, a), 0.0) > o.min_maf for p, r, a in zip(gv.pos, gv.ref, gv.alt)], dtype=bool)


def to_device(codes: np.ndarray, device: str) -> torch.Tensor:
    return one_hot(torch.from_numpy(np.array(codes, dtype=np.uint8, order="C", copy=True))).to(device)


@torch.no_grad()
def predict_psagenet(model: PSageNet, seqs: SequenceProvider, genes: list[str], sample_idx: np.ndarray, device: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean head [genes], deviation head [genes x individuals])."""
    model.eval()
    n = len(sample_idx)
    means = np.zeros(len(genes))
    devs = np.zeros((len(genes), n))
    for gi, gene in enumerate(genes):
        ref, haps = seqs.gene(gene, sample_idx)
        for s in range(0, n, batch_size):
            h = haps[s : s + batch_size]
            r = np.broadcast_to(ref, (h.shape[0], ref.shape[0]))
            out = model(to_device(r, device), to_device(h[:, 0], device), to_device(h[:, 1], device)).double().cpu().numpy()
            devs[gi, s : s + h.shape[0]] = out[:, 1]
            means[gi] = out[0, 0]
    return means, devs


@torch.no_grad()
def predict_rsagenet(model: RSageNet, seqs: SequenceProvider, genes: list[str], sample_idx: np.ndarray, device: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(reference prediction [genes], personal prediction = mean over haplotypes [genes x individuals])."""
    model.eval()
    n = len(sample_idx)
    ref_pred = np.zeros(len(genes))
    personal = np.zeros((len(genes), n))
    for gi, gene in enumerate(genes):
        ref, haps = seqs.gene(gene, sample_idx)
        ref_pred[gi] = float(model(to_device(ref[None], device)).double().cpu().numpy()[0])
        for s in range(0, n, batch_size):
            h = haps[s : s + batch_size]
            personal[gi, s : s + h.shape[0]] = model.predict_personal(to_device(h[:, 0], device), to_device(h[:, 1], device)).double().cpu().numpy()
    return ref_pred, personal
