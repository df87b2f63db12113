"""Per-perturbation features for the regression models.

With the VCC starter set, a perturbation is described by its target gene's ESM2 embedding
(`ESM2_pert_features.pt`, a torch-saved dict gene -> 1-D tensor). Without it we fall back to a
feature computed from the training data only: the target gene's loadings on the top principal
components of the control cells' normalised-log expression. Genes that co-vary in unperturbed
cells tend to sit in one pathway, so similar loadings are a (weak) proxy for similar effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from txrepro.errors import InputError
from txrepro.runtime import get_logger
from txrepro.studies.vcc.data import Prepared

log = get_logger(__name__)

FIELD = "perturbation features (vcc_features / --features)"


@dataclass(frozen=True)
class PerturbationFeatures:
    genes: list[str]
    matrix: np.ndarray  # one row per gene, float64
    source: str  # said in the metrics notes

    def rows(self, genes: list[str]) -> np.ndarray:
        index = {g: i for i, g in enumerate(self.genes)}
        return self.matrix[[index[g] for g in genes]]


def load_embedding_file(path: str | Path, needed: list[str]) -> PerturbationFeatures:
    """Read the ESM2 `.pt` dict; every needed perturbation gene must have a vector."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(p, FIELD, "an existing .pt file (dict gene -> 1-D tensor)", "nothing at this path")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or pickled-object file
        raise InputError(p, FIELD, "a torch-saved dict of gene -> 1-D tensor", type(exc).__name__) from None
    if not isinstance(obj, dict) or not obj:
        raise InputError(p, FIELD, "a non-empty dict of gene -> 1-D tensor", type(obj).__name__)
    missing = [g for g in needed if g not in obj]
    if missing:
        raise InputError(p, FIELD, "a vector for every training and test perturbation gene",
                         f"missing {len(missing)}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    rows = []
    for g in needed:
        v = obj[g]
        arr = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        arr = np.asarray(arr, dtype=np.float64).ravel()
        if rows and arr.size != rows[0].size:
            raise InputError(p, f"{FIELD}['{g}']", f"length {rows[0].size} like the others", f"length {arr.size}")
        if not np.all(np.isfinite(arr)):
            raise InputError(p, f"{FIELD}['{g}']", "finite numbers", "NaN or inf")
        rows.append(arr)
    return PerturbationFeatures(list(needed), np.vstack(rows), f"features: {p.name} ({rows[0].size}-d per target gene)")


def pca_loading_features(prepared: Prepared, needed: list[str], *, n_pcs: int, pca_cells: int, seed: int) -> PerturbationFeatures:
    """Fallback: each target gene's loadings on the top PCs of (a seeded sample of) control cells."""
    from sklearn.decomposition import PCA

    var_index = {g: i for i, g in enumerate(prepared.var_names)}
    missing = [g for g in needed if g not in var_index]
    if missing:
        raise InputError(prepared.h5ad, "var_names", "every perturbation gene among the measured genes (the fallback features are its PCA loadings); or give a features file (vcc_features / --features)",
                         f"missing {', '.join(missing[:5])}")
    ctrl = prepared.control_rows().X
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(ctrl.shape[0], size=min(pca_cells, ctrl.shape[0]), replace=False))
    x = ctrl[take].toarray().astype(np.float64)
    k = max(1, min(n_pcs, x.shape[0] - 1, x.shape[1] - 1))
    pca = PCA(n_components=k, svd_solver="full" if max(x.shape) <= 500 else "randomized", random_state=seed).fit(x)
    loadings = pca.components_.T * np.sqrt(pca.explained_variance_)  # genes x k
    log.info("fallback features: %d-PC loadings from %d control cells", k, x.shape[0])
    return PerturbationFeatures(list(needed), loadings[[var_index[g] for g in needed]],
                                f"features: fallback PCA loadings ({k} PCs of {x.shape[0]} control cells; no ESM2 file given)")


def perturbation_features(prepared: Prepared, needed: list[str], *, path: str | Path | None, n_pcs: int, pca_cells: int, seed: int) -> PerturbationFeatures:
    if path:
        return load_embedding_file(path, needed)
    return pca_loading_features(prepared, needed, n_pcs=n_pcs, pca_cells=pca_cells, seed=seed)
