"""Model inputs built from the prepared h5ad: counts, dosages, QC labels, ΔX and counterfactual inputs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from txrepro.errors import InputError
from txrepro.io.anndata import read_h5ad_checked
from txrepro.runtime import get_logger
from txrepro.studies.gpo_vae.data import MATCHED_COLUMN, SPLITS, log_normalised

log = get_logger(__name__)


@dataclass
class SplitTensors:
    X: torch.Tensor  # counts, cells x phenotype genes
    D: torch.Tensor  # dosages, cells x treatments
    qc: torch.Tensor  # total_qc, cells x 1 (1 = fails QC)
    cfX: torch.Tensor  # counterfactual input, cells x phenotype genes (zeros when no QC-failing cell)
    deltaX: torch.Tensor  # |x - x_matched_control| on normalise+log1p, cells x treatments
    library: torch.Tensor  # total counts, cells x 1
    positions: np.ndarray  # rows of the prepared h5ad

    def __len__(self) -> int:
        return int(self.X.shape[0])


@dataclass
class PreparedDataset:
    adata: ad.AnnData
    treatments: list[str]
    n_perturbed: int
    splits: dict[str, SplitTensors]
    log_mean: torch.Tensor
    log_std: torch.Tensor

    @property
    def genes(self) -> list[str]:
        return list(self.adata.var_names)

    @property
    def perturbations(self) -> list[str]:
        return self.treatments[: self.n_perturbed]

    def dosage_counts(self, split: str) -> torch.Tensor:
        """Cells per treatment in a split (the plate reweighting of the ELBO)."""
        return (self.splits[split].D != 0).sum(0).to(torch.float32)

    def qc_counts(self, split: str) -> torch.Tensor:
        return (self.splits[split].qc != 0).sum(0).to(torch.float32)

    def dosage_of(self, perturbation: str) -> torch.Tensor:
        d = torch.zeros(len(self.treatments))
        if perturbation in self.treatments[: self.n_perturbed]:
            d[self.treatments.index(perturbation)] = 1.0
        return d


def dense(X: np.ndarray | sp.spmatrix) -> np.ndarray:
    return np.asarray(X.todense()) if sp.issparse(X) else np.asarray(X)


def dosage_matrix(labels: np.ndarray, treatments: list[str], n_perturbed: int) -> np.ndarray:
    """One-hot over the perturbed genes; the extra (FC3) treatment columns stay zero, as the original."""
    col = {t: i for i, t in enumerate(treatments[:n_perturbed])}
    D = np.zeros((len(labels), len(treatments)), dtype=np.float32)
    rows = np.array([col.get(lab, -1) for lab in labels])
    ok = rows >= 0
    D[np.flatnonzero(ok), rows[ok]] = 1.0
    return D


def counterfactual_inputs(
    X: np.ndarray, labels: np.ndarray, splits: np.ndarray, total_qc: np.ndarray, rng: np.random.Generator, max_cells: int = 50,
) -> np.ndarray:
    """Per cell: the median of up to 50 QC-failing cells of its perturbation and split.

    As `_get_cfX`: the cells are drawn with replacement, the median is torch's lower median, and a
    cell whose group has no QC-failing cell gets zeros (its counterfactual term is then skipped).
    """
    out = np.zeros_like(X, dtype=np.float32)
    for split in SPLITS:
        in_split = splits == split
        for label in sorted(set(labels[in_split])):
            members = np.flatnonzero(in_split & (labels == label))
            failing = np.flatnonzero(in_split & (labels == label) & (total_qc == 1))
            if failing.size == 0:
                continue
            k = min(failing.size, max_cells)
            draws = failing[rng.integers(0, failing.size, size=(members.size, k))]
            mid = (k - 1) // 2
            for start in range(0, members.size, 1024):
                block = X[draws[start : start + 1024]]  # cells x k x genes
                out[members[start : start + 1024]] = np.partition(block, mid, axis=1)[:, mid, :]
    return out


def delta_x(lognorm_treatments: np.ndarray, matched: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.abs(lognorm_treatments - lognorm_treatments[matched])).astype(np.float32)


def load_prepared(path: str | os.PathLike[str], *, seed: int, training_inputs: bool = True) -> PreparedDataset:
    """Read a prepared h5ad and build the tensors of the three splits (cfX draws use `seed`).

    `training_inputs=False` skips ΔX and the counterfactual inputs (evaluation does not use them).
    """
    adata = read_h5ad_checked(path, obs=("T", "split", "total_qc", MATCHED_COLUMN))
    info = adata.uns.get("gpo_vae")
    if not isinstance(info, dict) or "treatments" not in info:
        raise InputError(path, "uns['gpo_vae']", "a file written by `gpo_vae.py prepare`")
    treatments = [str(t) for t in info["treatments"]]
    n_pert = int(info["n_perturbed"])
    X = dense(adata.X).astype(np.float32)
    labels = adata.obs["T"].astype(str).to_numpy()
    splits = adata.obs["split"].astype(str).to_numpy()
    total_qc = adata.obs["total_qc"].astype(int).to_numpy()
    matched = adata.obs[MATCHED_COLUMN].astype(np.int64).to_numpy()
    missing = [t for t in treatments if t not in adata.var_names]
    if missing:
        raise InputError(path, "var_names", "every treatment gene among the phenotype genes", f"missing {missing[:3]}")
    cols = [adata.var_names.get_loc(t) for t in treatments]
    if training_inputs:
        dX = delta_x(log_normalised(X, cols), matched)
        cfX = counterfactual_inputs(X, labels, splits, total_qc, np.random.default_rng(seed))
    else:
        dX = np.zeros((X.shape[0], 0), dtype=np.float32)
        cfX = np.zeros((X.shape[0], 0), dtype=np.float32)
    D = dosage_matrix(labels, treatments, n_pert)
    tensors = {}
    for s in SPLITS:
        pos = np.flatnonzero(splits == s)
        Xs = torch.from_numpy(X[pos])
        tensors[s] = SplitTensors(
            X=Xs,
            D=torch.from_numpy(D[pos]),
            qc=torch.from_numpy(total_qc[pos].astype(np.float32)).unsqueeze(1),
            cfX=torch.from_numpy(cfX[pos]),
            deltaX=torch.from_numpy(dX[pos]),
            library=Xs.sum(1, keepdim=True),
            positions=pos,
        )
    log_train = torch.log(tensors["train"].X + 1)
    log_mean, log_std = log_train.mean(0), log_train.std(0)
    log_std = torch.where(log_std > 0, log_std, torch.ones_like(log_std))  # constant genes: no scaling
    return PreparedDataset(adata, treatments, n_pert, tensors, log_mean, log_std)
