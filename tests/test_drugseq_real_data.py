"""drugseq on real UMI counts, through `txrepro reproduce drugseq --profile full`.

Data: real PBMC UMI counts from scanpy's bundled pbmc68k data (tests/real_pbmc.py: 700 cells, 765
real gene symbols such as HLA-DRA, RP11-782C8.1, TMBIM4-1). DRUG-seq wells are low-depth 3' UMI bulk
profiles; no package we can install ships a real DRUG-seq plate (or a real bulk matrix with more
than 8 samples that installs as a wheel), so each well here is the honest stand-in: the summed
counts of 5 real cells of one annotated cell type (pseudo-bulk), 132 wells in all.

What is designed, not measured (PBMCs were not treated with metabolites): the "metabolite" of a well
is its cell type, taken as is, odd characters included (`CD4+/CD25 T Reg`); `CD19+ B` wells are the
`DMSO` controls; the binary label is 1 for myeloid wells (Dendritic, CD14+ Monocyte); the three scores
are z-scored means of real marker genes (myeloid LYZ/CST3/S100A9/FCN1, cytotoxic NKG7/GZMB/GNLY/PRF1,
T-cell CD3D/CD3E/CD2/IL7R). Expression is log2(CPM + 1) per well, in place of the authors' VST.

Checks, against computations written here with numpy/scipy (the study itself uses scikit-learn):
* the prepared matrix equals the CSV as pandas reads it, real gene names and metabolite ids intact;
* the validation R2 per score, ROC-AUC and accuracy of metrics.tsv, from well_predictions_results.csv;
* the metabolite ranking by mean Euclidean distance to the DMSO centre, from the wells' latents.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import rankdata

from conftest import run_cli
from real_pbmc import pbmc68k_counts
from txrepro.metrics.table import read_metrics

CELLS_PER_WELL = 5
CONTROL_TYPE = "CD19+ B"
MYELOID = ("Dendritic", "CD14+ Monocyte")
SCORES = {
    "pseudotime_z": ("LYZ", "CST3", "S100A9", "FCN1"),
    "cytoscore_z": ("NKG7", "GZMB", "GNLY", "PRF1"),
    "Tscore_z": ("CD3D", "CD3E", "CD2", "IL7R"),
}


def pseudo_bulk_plate(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Wells x genes log2(CPM + 1) and the per-well metadata."""
    cells = pbmc68k_counts()
    rng = np.random.default_rng(seed)
    rows, meta = [], []
    for cell_type in sorted(cells.obs["cell_type"].unique()):
        idx = rng.permutation(np.flatnonzero(cells.obs["cell_type"].to_numpy() == cell_type))
        for w in range(len(idx) // CELLS_PER_WELL):
            rows.append(cells.X[idx[w * CELLS_PER_WELL:(w + 1) * CELLS_PER_WELL]].sum(0))
            meta.append({"well_id": f"pb_{len(meta):03d}", "cell_type": cell_type})
    counts = np.asarray(rows, dtype=np.float64)
    expr = pd.DataFrame(np.log2(counts / counts.sum(1, keepdims=True) * 1e6 + 1), columns=cells.var_names)
    meta = pd.DataFrame(meta)
    meta["meta_id"] = np.where(meta["cell_type"] == CONTROL_TYPE, "DMSO", meta["cell_type"])
    meta["label_cls"] = meta["cell_type"].isin(MYELOID).astype(int)
    for name, genes in SCORES.items():
        s = expr[list(genes)].mean(1)
        meta[name] = ((s - s.mean()) / s.std(ddof=0)).to_numpy()
    return expr, meta


def write_csv_set(folder, expr: pd.DataFrame, meta: pd.DataFrame) -> None:
    """The original's layout: expr_mat.csv (header = genes) and one-column CSVs with an `x` header."""
    folder.mkdir()
    expr.to_csv(folder / "expr_mat.csv", index=False, float_format="%.7g")
    meta[list(SCORES)].to_csv(folder / "scores_3_z.csv", index=False)
    for col, name in (("label_cls", "labels_cls.csv"), ("meta_id", "meta_id.csv"), ("well_id", "well_id.csv")):
        meta[[col]].rename(columns={col: "x"}).to_csv(folder / name, index=False)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drugseq_real")
    expr, meta = pseudo_bulk_plate()
    write_csv_set(tmp / "plate", expr, meta)
    params = {"drugseq_data_dir": str(tmp / "plate"), "drugseq_epochs": 3, "drugseq_batch_size": 32, "drugseq_lr": 5e-3,
              "drugseq_d_model": 32, "drugseq_nhead": 4, "drugseq_num_layers": 1, "drugseq_dim_feedforward": 64,
              "drugseq_latent_dim": 8, "drugseq_device": "cpu"}
    (tmp / "params.yml").write_text(yaml.safe_dump(params))
    run_cli(["reproduce", "drugseq", "--profile", "full", "--params-file", str(tmp / "params.yml"), "--outdir", str(tmp / "out"),
             "--no-report", "--threads", "1"], check=True)
    out = tmp / "out" / "drugseq"
    return {"expr": expr, "meta": meta, "plate": tmp / "plate", "out": out, "metrics": read_metrics(out / "metrics.tsv")}


def test_prepared_matrix_is_the_csv_with_real_names(real_run):
    prepared = ad.read_h5ad(real_run["out"] / "prepared.h5ad")
    csv = pd.read_csv(real_run["plate"] / "expr_mat.csv")
    assert list(prepared.var_names) == list(csv.columns) == list(real_run["expr"].columns)
    assert {"HLA-DRA", "RP11-782C8.1", "AC079767.4", "TMBIM4-1"} <= set(prepared.var_names)
    X = prepared.X.toarray() if hasattr(prepared.X, "toarray") else np.asarray(prepared.X)
    np.testing.assert_allclose(X, csv.to_numpy(), rtol=1e-6, atol=1e-6)
    assert list(prepared.obs["meta_id"].astype(str)) == list(real_run["meta"]["meta_id"])
    assert "CD4+/CD25 T Reg" in set(prepared.obs["meta_id"].astype(str))


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    return 1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney form: P(score of a positive > score of a negative), ties counted half."""
    r = rankdata(score)
    n1 = y.sum()
    return (r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1))


def test_validation_metrics_equal_a_hand_computation(real_run):
    pred = pd.read_csv(real_run["out"] / "well_predictions_results.csv")
    val = pred[pred["split"] == "val"]
    assert len(val) == round(0.2 * len(real_run["meta"])) + 1 or len(val) == round(0.2 * len(real_run["meta"]))
    m = real_run["metrics"].set_index(["split", "metric"])["value"]
    for name in SCORES:
        assert m[("val", f"r2_{name}")] == pytest.approx(_r2(val[f"{name}_true"].to_numpy(), val[f"{name}_pred"].to_numpy()), abs=1e-6)
    y = val["label_true"].to_numpy().astype(int)
    assert m[("val", "roc_auc_label")] == pytest.approx(_auc(y, val["label_prob"].to_numpy()), abs=1e-9)
    assert m[("val", "accuracy_label")] == pytest.approx(((val["label_prob"].to_numpy() > 0.5).astype(int) == y).mean())
    # the truths written out are the designed ones, well for well
    truth = real_run["meta"].set_index("well_id")
    for name in SCORES:
        np.testing.assert_allclose(pred[f"{name}_true"].to_numpy(), truth.loc[pred["well_id"], name].to_numpy(), atol=1e-6)


def test_metabolite_ranking_equals_a_hand_computation(real_run):
    pred = pd.read_csv(real_run["out"] / "well_predictions_results.csv")
    z = pred[[c for c in pred.columns if c.startswith("latent_")]].to_numpy(dtype=np.float64)
    meta_id = real_run["meta"].set_index("well_id").loc[pred["well_id"], "meta_id"].to_numpy()
    centre = z[meta_id == "DMSO"].mean(0)
    dist = np.linalg.norm(z - centre, axis=1)
    hand = pd.Series(dist).groupby(meta_id).mean().sort_values(ascending=False, kind="stable")
    ranked = pd.read_csv(real_run["out"] / "metabolite_dmso_distance.csv")
    assert list(ranked["meta_id"]) == list(hand.index)
    np.testing.assert_allclose(ranked["euclidean_mean"].to_numpy(), hand.to_numpy(), rtol=1e-4)
