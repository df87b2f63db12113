"""Average treatment effects on the 'perturbseq' scale and the metrics of the original eval.py.

Scale: each cell normalised to 1e4 counts, then log2(x + 1); ATE = mean over a perturbation's cells
minus mean over control cells. The model ATE uses the same scale on counts sampled from the
generative model with library size 1e4 and the good-QC view, from many particles in batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import pearsonr
from sklearn.metrics import r2_score

from txrepro.runtime import get_logger, progress
from txrepro.studies.gpo_vae.config import CONTROL_LABEL
from txrepro.studies.gpo_vae.model import GpoVae, nb_sample

log = get_logger(__name__)


def perturbseq_scale(counts: np.ndarray) -> np.ndarray:
    """normalise every cell to 1e4 counts, then log2(x + 1)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = np.maximum(counts.sum(axis=1, keepdims=True), 1e-12)
    return np.log2(1e4 * counts / total + 1)


def data_ate(counts: np.ndarray, labels: np.ndarray, perturbations: list[str], mask: np.ndarray | None = None) -> np.ndarray:
    """Perturbations x genes: mean of each perturbation's cells minus the control mean."""
    labels = np.asarray(labels).astype(str)
    keep = np.ones(len(labels), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    Y = perturbseq_scale(counts[keep])
    lab = labels[keep]
    ctrl = Y[lab == CONTROL_LABEL].mean(axis=0)
    return np.stack([Y[lab == p].mean(axis=0) - ctrl for p in perturbations])


@torch.no_grad()
def model_ate(net: GpoVae, dosages: torch.Tensor, *, n_particles: int, batch_particles: int, seed: int, device: str = "cpu") -> np.ndarray:
    """Model ATE of each dosage row against the control (all-zero) dosage.

    For every particle the perturbation-plated variables are drawn from the guide and z_b from the
    prior; one z_b and one set of globals serve the control and all perturbations of that particle
    (common random numbers: the same expectation as independent draws, with less Monte-Carlo noise).
    Counts are sampled from the NB with library size 1e4 and QC = good, then put on the perturbseq
    scale; the ATE is the particle mean of each perturbation minus that of the control.
    """
    torch.manual_seed(seed)
    net = net.eval()
    P = dosages.shape[0]
    D = torch.cat([torch.zeros(1, dosages.shape[1]), dosages], dim=0).to(device)
    lib = torch.full((P + 1, 1), 1e4, device=device)
    sums = torch.zeros(P + 1, net.n_genes, dtype=torch.float64, device=device)
    done = 0
    chunks = list(range(0, n_particles, batch_particles))
    for start in progress(chunks, desc="model ATE particles", total=len(chunks)):
        k = min(batch_particles, n_particles - start)
        g = net.sample_globals(k)
        z = torch.randn(k, 1, net.n_latent, device=device).expand(k, P + 1, net.n_latent)
        mu, conc = net.decode(z, D, g, lib, bad=False)
        x = nb_sample(mu, conc)
        y = torch.log2(1e4 * x / x.sum(-1, keepdim=True).clamp_min(1e-12) + 1)
        sums += y.sum(0).to(torch.float64)
        done += k
    means = (sums / done).cpu().numpy()
    return means[1:] - means[0]


def top_k_indices(ate: np.ndarray, k: int) -> np.ndarray:
    """Each row's k genes with the largest |ATE| (the original's argpartition; k capped at the gene count)."""
    k = min(k, ate.shape[1])
    return np.argpartition(np.abs(ate), ate.shape[1] - k, axis=1)[:, -k:]


def mean_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(a, b)]))


@dataclass(frozen=True)
class AteMetrics:
    values: dict[str, float]
    n_perturbations: int
    n_genes: int


def ate_metrics(reference: np.ndarray, predicted: np.ndarray, top_k: tuple[int, ...] = (20, 50)) -> AteMetrics:
    """ATE_pearson / ATE_r2 over all entries and on each perturbation's top-20 reference genes, and
    the mean Jaccard of the top-k |ATE| gene sets (as `get_ate_metrics` of eval.py)."""
    x, y = reference.ravel(), predicted.ravel()
    out = {"ATE_pearson": float(pearsonr(x, y)[0]), "ATE_r2": float(r2_score(x, y))}
    if 20 in top_k:
        idx = top_k_indices(reference, 20)
        xt = np.take_along_axis(reference, idx, axis=1).ravel()
        yt = np.take_along_axis(predicted, idx, axis=1).ravel()
        out["ATE_pearson_top20"] = float(pearsonr(xt, yt)[0])
        out["ATE_r2_top20"] = float(r2_score(xt, yt))
    for k in top_k:
        out[f"jaccard_top{k}"] = mean_jaccard(top_k_indices(reference, k), top_k_indices(predicted, k))
    return AteMetrics(out, reference.shape[0], reference.shape[1])
