"""Latent-space rankings: latent norm per well and metabolite, distance to the DMSO centre.

As the original `scorer.py` and `latent.py`: s = ||z||_2 per well, aggregated per metabolite (mean,
s.d., n) and sorted descending; mu = mean latent of the control wells; Euclidean ||z - mu|| and
cosine 1 - cos(z, mu) per well. The original's option of a cluster-restricted centre (only DMSO
wells of one cluster, e.g. C6) was never reached because run_pipeline.py did not pass clusters;
here it is `dmso_cluster`.

Added: a signed direction. The paper says distances "distinguish activation vs inhibition" but
gives no rule; we project each metabolite's displacement from the centre on the first principal
axis of all metabolite displacements, oriented so that it increases with the predicted activation
score. Activators and inhibitors then fall on opposite sides of 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from txrepro.errors import InputError
from txrepro.studies.drugseq.data import DrugseqData


def latent_norm_scores(latent: np.ndarray, data: DrugseqData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per well ||z||_2, and per metabolite mean/sd/n sorted by mean descending (sd with ddof 1, as pandas)."""
    wells = pd.DataFrame({"well_id": data.well_id, "meta_id": data.meta_id, "latent_score": np.linalg.norm(latent.astype(np.float64), axis=1)})
    per_meta = (wells.groupby("meta_id", sort=True)["latent_score"].agg(["mean", "std", "count"])
                .rename(columns={"mean": "latent_score_mean", "std": "latent_score_sd", "count": "n_wells"})
                .sort_values("latent_score_mean", ascending=False, kind="stable").reset_index())
    return wells, per_meta


def control_mask(data: DrugseqData, control: str, dmso_cluster: str | None) -> np.ndarray:
    mask = data.meta_id == control
    if dmso_cluster:
        if data.cluster is None:
            raise InputError("cluster_id.csv", "cluster ids", f"a cluster file for --dmso-cluster {dmso_cluster}", "no cluster ids in the input")
        mask &= data.cluster == dmso_cluster
        if not mask.any():
            found = sorted(set(data.cluster[data.meta_id == control]))
            raise InputError("cluster_id.csv", "cluster ids", f"{control} wells in cluster '{dmso_cluster}'", f"{control} wells in clusters {found}")
    return mask


def distances_to_control(latent: np.ndarray, data: DrugseqData, centre_mask: np.ndarray, activation_pred: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Per-well Euclidean and cosine distance to the control centre, and the signed direction.

    Returns the table, the centre and the unit direction axis.
    """
    z = latent.astype(np.float64)
    mu = z[centre_mask].mean(axis=0)
    diff = z - mu
    euclid = np.linalg.norm(diff, axis=1)
    denom = np.linalg.norm(z, axis=1) * np.linalg.norm(mu)
    cosine = 1.0 - (z @ mu) / np.where(denom > 0, denom, np.nan)
    axis = activation_axis(diff, data.meta_id, activation_pred)
    table = pd.DataFrame({
        "well_id": data.well_id,
        "meta_id": data.meta_id,
        "in_control_centre": centre_mask,
        "euclidean_distance": euclid,
        "cosine_distance": cosine,
        "direction_projection": diff @ axis,
    })
    return table, mu, axis


def activation_axis(diff: np.ndarray, meta_id: np.ndarray, activation_pred: np.ndarray) -> np.ndarray:
    """First principal axis of per-metabolite mean displacements, pointing towards higher predicted activation."""
    frame = pd.DataFrame(diff)
    centroids = frame.groupby(meta_id, sort=True).mean().to_numpy()
    _, _, vt = np.linalg.svd(centroids, full_matrices=False)  # uncentred: displacements from the control centre
    axis = vt[0]
    proj = diff @ axis
    if np.corrcoef(proj, activation_pred)[0, 1] < 0:
        axis = -axis
    return axis


def rank_metabolites(distances: pd.DataFrame, control: str) -> pd.DataFrame:
    """Metabolites by mean Euclidean distance to the control centre, descending, with the control's own spread.

    `beyond_control_p95` flags metabolites whose mean distance exceeds the 95th percentile of the
    control wells' own distances: a scale-free way to read the ranking.
    """
    g = distances.groupby("meta_id", sort=True)
    table = pd.DataFrame({
        "euclidean_mean": g["euclidean_distance"].mean(),
        "euclidean_sd": g["euclidean_distance"].std(),
        "cosine_mean": g["cosine_distance"].mean(),
        "direction_mean": g["direction_projection"].mean(),
        "n_wells": g.size(),
    })
    p95 = float(np.percentile(distances.loc[distances["meta_id"] == control, "euclidean_distance"], 95))
    table["beyond_control_p95"] = table["euclidean_mean"] > p95
    table["direction"] = np.where(table["direction_mean"] >= 0, "activating", "inhibiting")
    table.loc[table.index == control, "direction"] = "control"
    table = table.sort_values("euclidean_mean", ascending=False, kind="stable").reset_index(names="meta_id")
    table.insert(1, "rank", np.arange(1, len(table) + 1))
    table.attrs["control_p95"] = p95
    return table
