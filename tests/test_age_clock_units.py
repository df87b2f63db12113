"""age_clock units: labels, splits, gene rules, binning against scgpt, statistics on a hand-made table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import mannwhitneyu
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score
from statsmodels.stats.multitest import multipletests

from txrepro.errors import InputError
from txrepro.studies.age_clock.binning import bin_rows, edit_bin
from txrepro.studies.age_clock.config import ARTICLE, REPOSITORY, protocol_config
from txrepro.studies.age_clock.data import age_groups, donor_split, given_split, qc_gene_mask, read_deg_genes, read_gene_list, select_genes
from txrepro.studies.age_clock.evaluate import classification_metrics
from txrepro.studies.age_clock.statistics import ANTI, NONE, PRO, CallRule, gene_summary, read_reference, run_statistics
from txrepro.paths import assets_dir

# --- protocols ----------------------------------------------------------------------------------


def test_protocols_carry_the_published_settings():
    r, a = REPOSITORY, ARTICLE
    assert (r.n_genes, r.n_bins, r.max_seq_len, r.lr, r.epochs, r.dropout, r.batch_size) == (3000, 51, 3001, 1e-4, 10, 0.4, 128)
    assert (r.perturb_mode, r.n_runs, r.cells_per_tissue, r.effect_threshold, r.model) == ("append", 4, 100, 0.2, "finetune_cls")
    assert (a.gene_source, a.model, a.epochs, a.batch_size, a.optimizer, a.weight_decay) == ("age_genes_869", "frozen_avgpool_mlp", 20, 256, "adamw", 1e-7)
    assert (a.head_layers, a.head_width, a.dropout, a.class_weighted, a.min_donors_per_group) == (5, 1024, 0.4, True, 3)
    assert (a.perturb_mode, a.oe_value, a.cells_per_group, a.n_runs, a.stability) == ("replace", "tissue_max", 150, 10, "significant")
    assert protocol_config("repository", overrides={"perturb_mode": "replace"}).perturb_mode == "replace"
    with pytest.raises(InputError, match="age_protocol"):
        protocol_config("paper")


# --- labels, splits, genes ----------------------------------------------------------------------


def test_age_encodings():
    years = pd.Series([19, 20, 59, 60, 100, 101])
    assert age_groups(years, "x.h5ad", "age").tolist() == [None, "mid", "mid", "old", "old", None]
    names = pd.Series(["mid3", "Old", "old_12", "youth1", "supold2", "mid-age"])
    assert age_groups(names, "x.h5ad", "age").tolist() == ["mid", "old", "old", None, None, "mid"]
    with pytest.raises(InputError, match=r"x.h5ad: obs\['age'\].*'adult'"):
        age_groups(pd.Series(["mid", "adult"]), "x.h5ad", "age")
    with pytest.raises(InputError, match="0/1 class ids"):
        age_groups(pd.Series([0, 1, 1, 0]), "x.h5ad", "age")


def _obs(n_donors: int = 4, cells: int = 3) -> pd.DataFrame:
    rows = []
    for tissue in ("Lung", "Skin"):
        for group in ("mid", "old"):
            for d in range(n_donors):
                rows += [{"tissue": tissue, "age_group": group, "donor": f"{tissue}{group}{d}"}] * cells
    return pd.DataFrame(rows, index=[f"c{i}" for i in range(len(rows))])


def test_donor_split_keeps_donors_whole_and_carves_validation():
    obs = _obs()
    cfg = protocol_config("repository", overrides={"test_donor_fraction": 0.25, "val_fraction": 0.2})
    split = donor_split(obs, cfg, "x.h5ad")
    sides = obs.assign(s=split.replace("val", "train")).groupby("donor")["s"].nunique()
    assert (sides == 1).all()
    test = obs[split == "test"]
    assert set(test.groupby(["tissue", "age_group"])["donor"].nunique()) == {1}
    assert (split == "val").sum() > 0
    assert (donor_split(obs, cfg, "x.h5ad") == split).all()  # seeded
    no_val = donor_split(obs, protocol_config("repository", overrides={"select_on_test": True}), "x.h5ad")
    assert not (no_val == "val").any()
    with pytest.raises(InputError, match="at least 2 mid-age donors"):
        donor_split(_obs(n_donors=1), cfg, "x.h5ad")


def test_given_split_refuses_a_donor_on_both_sides():
    obs = _obs()
    ok = pd.Series(np.where(obs["donor"].str.endswith("0"), "test", "train"), index=obs.index)
    assert (given_split(obs.assign(sp=ok), "sp", REPOSITORY, "x.h5ad") != "test").sum() == (ok == "train").sum()
    leak = ok.copy()
    leak.iloc[0] = "train" if leak.iloc[0] == "test" else "test"
    with pytest.raises(InputError, match="in both train and test"):
        given_split(obs.assign(sp=leak), "sp", REPOSITORY, "x.h5ad")


def test_mito_ribo_haemo_rules():
    genes = ["MT-CO1", "mt-Nd1", "RPL13", "RPS4X", "RPL36AL", "RPLP0", "RPSA", "HBB", "HBA1", "RPS6KA1", "HBEGF", "HBP1", "TP53", "MTOR"]
    assert qc_gene_mask(genes).tolist() == [True, True, True, True, True, True, True, True, True, False, False, False, False, False]


def test_bundled_ageanno_tables_and_selection():
    degs = read_deg_genes(assets_dir() / "ageanno_degs.csv")  # not UTF-8 throughout: read as latin-1
    listed = read_gene_list(assets_dir() / "ageanno_age_genes_869.txt")
    assert len(listed) == 869 and set(listed) <= set(degs) and len(degs) == 3048
    raw = pd.read_csv(assets_dir() / "ageanno_degs.csv", encoding="latin-1")
    keep = raw[(raw["group"] == "old vs mid") & (raw["p_val_adj"] < 0.05) & ~raw["isTissuespecific"] & ~raw["isCellTypespecific"]]
    assert set(keep["gene"]) == set(listed)  # the 869 are what the article's rule gives
    cand = listed[:50][::-1]
    art = select_genes(cand, ARTICLE, None)
    assert art == cand  # keeps the data's order
    rep = select_genes(cand, protocol_config("repository", overrides={"n_genes": 10}), None)
    best = [g for g in degs if g in set(cand)][:10]
    assert sorted(rep) == sorted(best) and rep == [g for g in cand if g in set(best)]
    rnd = protocol_config("repository", overrides={"gene_source": "random", "n_genes": 10})
    assert select_genes(cand, rnd, None) == select_genes(cand, rnd, None) and len(select_genes(cand, rnd, None)) == 10


# --- binning --------------------------------------------------------------------------------------


def test_binning_equals_scgpt_and_ignores_normalisation():
    from txrepro.models.torchtext_vocab import import_scgpt

    import_scgpt()
    from scgpt.preprocess import binning

    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(0.6, 3.0, size=(30, 60))).astype(np.float32)
    counts[3] = 0.0  # an empty cell
    for n_bins in (11, 51):
        np.random.seed(7)
        ref = np.stack([binning(r, n_bins) if r.max() > 0 else np.zeros_like(r) for r in counts]).astype(np.uint8)
        ours = bin_rows(sp.csr_matrix(counts), n_bins, seed=7)
        assert np.array_equal(ours, ref) and ours.max() == n_bins - 1
        lognorm = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4)
        assert np.array_equal(bin_rows(lognorm, n_bins, seed=7), ours)


def test_edit_bin_places_values_against_the_cells_edges():
    counts = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], dtype=np.float32)
    bins, edges = bin_rows(counts, 6, seed=0, return_edges=True)
    got = edit_bin(np.array([[0.0, 1.0, 5.5, 10.0, 10_000.0]]), edges, 6)
    assert got.tolist() == [[0, 1, 3, 5, 5]]
    assert edges.shape == (1, 5) and edges[0, -1] == 10.0


# --- statistics: hand-made probability table with exact expected calls ----------------------------


def _table() -> pd.DataFrame:
    """3 runs x 30 cells. Designed: PRO (0.8 vs 0.4), ANTI (0.3 vs 0.6), SMALL (0.52 vs 0.50:
    significant but |log2| < 0.2), NULL (same values), FLIP (like PRO in runs 1-2, null in run 3)."""
    j = np.linspace(-0.01, 0.01, 30)
    rows = []
    for run in (1, 2, 3):
        flip_high = 0.8 + j if run < 3 else 0.5 + j
        flip_low = 0.4 + j if run < 3 else 0.5 + j
        cols = {
            "PRO_high": 0.8 + j, "PRO_low": 0.4 + j,
            "ANTI_high": 0.3 + j, "ANTI_low": 0.6 + j,
            "SMALL_high": 0.52 + j / 10, "SMALL_low": 0.50 + j / 10,
            "NULL_high": 0.5 + j, "NULL_low": 0.5 + j[::-1],
            "FLIP_high": flip_high, "FLIP_low": flip_low,
        }
        rows.append(pd.DataFrame({"run": run, "cell_id": [f"c{i}" for i in range(30)], **cols}))
    return pd.concat(rows, ignore_index=True)


def test_statistics_repository_rule_exact_calls_and_oracles():
    table = _table()
    rule = CallRule("log2_mean_ratio", 0.2, 0.05, "same_call")
    per_run = run_statistics(table, rule)
    genes = ["PRO", "ANTI", "SMALL", "NULL", "FLIP"]
    for run in (1, 2, 3):
        sub = per_run[per_run["run"] == run].set_index("gene").loc[genes]
        t = table[table["run"] == run]
        p = np.array([mannwhitneyu(t[f"{g}_high"], t[f"{g}_low"], alternative="two-sided").pvalue for g in genes])
        assert np.allclose(sub["p_value"], p, rtol=0, atol=0)
        assert np.allclose(sub["p_holm"], multipletests(p, method="holm")[1], rtol=0, atol=0)
        assert np.allclose(sub["effect"], np.log2(t[[f"{g}_high" for g in genes]].mean().to_numpy() / t[[f"{g}_low" for g in genes]].mean().to_numpy()))
        expected = [PRO, ANTI, NONE, NONE, PRO if run < 3 else NONE]
        assert sub["call"].tolist() == expected, run
    assert per_run.set_index(["run", "gene"]).loc[(1, "SMALL"), "significant"]  # significant, but below the 0.2 threshold
    summary = gene_summary(per_run, rule).set_index("gene")
    assert summary.loc[genes, "call"].tolist() == [PRO, ANTI, NONE, NONE, PRO]
    assert summary.loc[genes, "stability"].tolist() == [1.0, 1.0, 1.0, 1.0, pytest.approx(2 / 3)]


def test_statistics_article_rule_ratio_and_significance_stability():
    rule = CallRule("ko_oe_ratio", 0.0, 0.05, "significant")
    per_run = run_statistics(_table(), rule)
    first = per_run[per_run["run"] == 1].set_index("gene")
    assert first.loc["PRO", "effect"] == pytest.approx(0.4 / 0.8)  # P(old|KO) / P(old|OE)
    assert first.loc[["PRO", "ANTI", "SMALL", "NULL"], "call"].tolist() == [PRO, ANTI, PRO, NONE]  # no effect threshold
    summary = gene_summary(per_run, rule).set_index("gene")
    assert summary.loc["FLIP", "stability"] == pytest.approx(2 / 3) and summary.loc["NULL", "stability"] == 0.0
    assert summary.loc["FLIP", "call"] == PRO


def test_reference_tables_mark_known_and_novel(tmp_path):
    tsv = tmp_path / "open_genes.tsv"
    tsv.write_text("hgnc\tconfidence_level\nPRO\thighest\nNULL\tmedium\n")
    lst = tmp_path / "genage.txt"
    lst.write_text("# GenAge symbols\nANTI\n")
    ref = read_reference([tsv, lst])
    rule = CallRule()
    summary = gene_summary(run_statistics(_table(), rule), rule, ref).set_index("gene")
    assert summary.loc["PRO", "reference_confidence"] == "highest" and summary.loc["ANTI", "reference_confidence"] == "listed"
    assert summary.loc["FLIP", "reference_confidence"] == "Not found" and summary.loc["FLIP", "novel"]
    assert not summary.loc["PRO", "novel"] and not summary.loc["SMALL", "novel"]  # SMALL has no call


def test_classification_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    m = classification_metrics(y, p)
    called = (p >= 0.5).astype(int)
    assert m == {
        "accuracy": accuracy_score(y, called),
        "precision": precision_score(y, called),
        "recall": recall_score(y, called),
        "roc_auc": roc_auc_score(y, p),
    }
    assert np.isnan(classification_metrics(np.ones(5), np.full(5, 0.9))["roc_auc"])
