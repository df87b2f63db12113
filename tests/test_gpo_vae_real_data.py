"""gpo_vae on real single-cell counts, through `txrepro reproduce gpo_vae --profile full`.

Data: scanpy's bundled `10x_pbmc68k_reduced.h5ad` (tests/real_pbmc.py says how the real UMI counts
are recovered exactly): 700 real peripheral blood cells of 10x Genomics' 68k PBMC data set (Zheng et
al. 2017) and 765 real gene symbols, with their odd cases (HLA-DRA, RP11-782C8.1, AC079767.4,
TMBIM4-1 and SNORD3B-2 made unique by an earlier `var_names_make_unique`, one mitochondrial gene
MT-ND3).

What is planted (honestly: PBMCs carry no perturbation): cells are assigned at random to
`non-targeting` controls or to knockdowns of three real genes (HLA-DRA, FTL, VIM); a knockdown keeps
each UMI of its target with probability 0.1 (binomial thinning), and the HLA-DRA knockdown also keeps
each CD74 UMI with probability 0.5 (one planted edge, the MHC-II invariant chain). Everything else
is the real data.

Checks, against computations written here with numpy/scipy (not the study's code):
* prepare's QC metrics on the real counts (UMI count, genes, %MT, %ribosomal);
* the training-mean baseline row of metrics.tsv (a pure function of the data and the split);
* the planted knockdowns in the all-cells reference ATE;
* the whole run (prepare, train with the tiny CPU configuration, evaluate) writes every row.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from scipy.stats import pearsonr

from conftest import run_cli
from real_pbmc import pbmc68k_counts
from txrepro.metrics.table import read_metrics

TARGETS = ("HLA-DRA", "FTL", "VIM")
EDGE = ("HLA-DRA", "CD74")
DATASET = "pbmc68k_planted"


def plant_knockdowns(adata: ad.AnnData, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    labels = np.array(["non-targeting"] * 400 + [g for g in TARGETS for _ in range(100)])
    rng.shuffle(labels)
    X = adata.X.astype(np.int64)
    col = {g: adata.var_names.get_loc(g) for g in (*TARGETS, EDGE[1])}
    for g in TARGETS:
        cells = labels == g
        X[cells, col[g]] = rng.binomial(X[cells, col[g]], 0.1)
    cells = labels == EDGE[0]
    X[cells, col[EDGE[1]]] = rng.binomial(X[cells, col[EDGE[1]]], 0.5)
    out = ad.AnnData(X=sp.csr_matrix(X.astype(np.float32)), obs=pd.DataFrame({"gene": labels}, index=adata.obs_names),
                     var=pd.DataFrame(index=adata.var_names))
    return out


def ate_log2(X: np.ndarray, labels: np.ndarray, perts: list[str], mask: np.ndarray) -> np.ndarray:
    """The published ATE scale by hand: counts per 1e4, log2(x + 1), perturbation mean - control mean."""
    Y = np.log2(X / X.sum(1, keepdims=True) * 1e4 + 1)
    ctrl = Y[(labels == "non-targeting") & mask].mean(0)
    return np.stack([Y[(labels == p) & mask].mean(0) - ctrl for p in perts])


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpo_vae_real")
    data = plant_knockdowns(pbmc68k_counts())
    data.write_h5ad(tmp / "pbmc68k_planted.h5ad")
    params = {"gpo_vae_input": str(tmp / "pbmc68k_planted.h5ad"), "gpo_vae_dataset": DATASET, "gpo_vae_config": "tiny",
              "gpo_vae_max_epochs": 60, "gpo_vae_ate_particles": 200, "gpo_vae_device": "cpu"}
    (tmp / "params.yml").write_text(yaml.safe_dump(params))
    run_cli(["reproduce", "gpo_vae", "--profile", "full", "--params-file", str(tmp / "params.yml"), "--outdir", str(tmp / "out"),
             "--no-report", "--threads", "1"], check=True)
    out = tmp / "out" / "gpo_vae"
    return {"input": data, "out": out, "prepared": ad.read_h5ad(out / DATASET / "prepared.h5ad"), "metrics": read_metrics(out / "metrics.tsv")}


def test_real_gene_names_survive_prepare(real_run):
    names = set(real_run["prepared"].var_names)
    assert {"HLA-DRA", "RP11-782C8.1", "AC079767.4", "TMBIM4-1", "SNORD3B-2", "MT-ND3"} <= names
    assert list(real_run["prepared"].uns["gpo_vae"]["treatments"][:3]) == sorted(TARGETS)


def test_qc_metrics_on_real_counts_match_a_hand_computation(real_run):
    p = real_run["prepared"]
    X = p.X.toarray().astype(np.float64)
    names = p.var_names
    total = X.sum(1)
    np.testing.assert_allclose(p.obs["UMI_count"].to_numpy(), total)
    np.testing.assert_array_equal(p.obs["ngenes"].to_numpy(), (X > 0).sum(1))
    mt = names.str.startswith("MT-")
    ribo = names.str.startswith(("RPS", "RPL"))
    assert mt.sum() == 1 and ribo.sum() == 4  # MT-ND3; RPL39, RPS24, RPL36AL, RPS27L
    np.testing.assert_allclose(p.obs["pct_counts_mt"].to_numpy(), 100 * X[:, mt].sum(1) / total, rtol=1e-5)
    np.testing.assert_allclose(p.obs["pct_counts_ribo"].to_numpy(), 100 * X[:, ribo].sum(1) / total, rtol=1e-5)


def test_training_mean_baseline_equals_a_hand_computation(real_run):
    p = real_run["prepared"]
    X = p.X.toarray().astype(np.float64)
    labels = p.obs["T"].astype(str).to_numpy()
    split = p.obs["split"].astype(str).to_numpy()
    perts = sorted(TARGETS)
    ref = ate_log2(X, labels, perts, split == "test")
    base = ate_log2(X, labels, perts, split == "train")
    m = real_run["metrics"].set_index(["dataset", "model", "split", "metric"])["value"]
    assert m[(DATASET, "train_mean_baseline", "test_cells", "ATE_pearson")] == pytest.approx(pearsonr(ref.ravel(), base.ravel())[0], abs=1e-6)
    # the planted knockdowns are the largest effects of the all-cells reference, and the edge is there
    ref_all = ate_log2(X, labels, perts, np.ones(len(labels), bool))
    for i, g in enumerate(perts):
        assert int(np.argmin(ref_all[i])) == p.var_names.get_loc(g), g
    assert ref_all[perts.index(EDGE[0]), p.var_names.get_loc(EDGE[1])] < -0.5


def test_the_full_run_writes_every_row_on_real_data(real_run):
    """The trained model's numbers are finite and every metric is written. Whether the tiny CPU model
    recovers the planted knockdowns is not asserted: it does not (docs/studies/gpo_vae.md, "Real data")."""
    df = real_run["metrics"]
    ours = df[df["dataset"] == DATASET]
    skipped = ours["notes"].str.startswith("not computed")
    # no reference networks in this test; no planted edge between two perturbed genes, so none predicted
    assert set(ours[skipped]["metric"]) <= {"precision_pool", "recall_pool", "mean_wasserstein"}
    assert np.isfinite(ours[~skipped]["value"]).all() and (~skipped).sum() >= 25
    model = pd.read_csv(real_run["out"] / DATASET / "ate" / "model.tsv", sep="\t", index_col=0)
    assert list(model.index) == sorted(TARGETS) and model.shape[1] == real_run["prepared"].n_vars
    # the paper's datasets were not given: their published numbers say so, they are not an error
    paper = df[df["dataset"].isin(["replogle_rpe1", "replogle_k562", "adamson"])]
    assert len(paper) == 24 and (paper["notes"] == "not computed: data not provided").all()
