"""gpo_vae metrics against independent oracles: ATE metrics, loss pieces, CausalBench tests, reference networks."""

from __future__ import annotations

import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.metrics import precision_score, r2_score, recall_score

from conftest import assert_one_line_error, run_cli
from txrepro.errors import InputError
from txrepro.fixtures.gpo_vae import PERTURBED, gene_id, write_fixture
from txrepro.studies.gpo_vae.ate import ate_metrics, data_ate, perturbseq_scale, top_k_indices
from txrepro.studies.gpo_vae.config import load_config
from txrepro.studies.gpo_vae.data import prepare
from txrepro.studies.gpo_vae.grn import (
    CausalBenchEvaluator,
    map_reference,
    precision_recall,
    predicted_edges,
    read_edge_list,
)
from txrepro.studies.gpo_vae.model import (
    bernoulli_log_prob,
    cf_divergence,
    gumbel_bernoulli_st,
    k_hop_scores,
    nb_log_prob,
    plate_reweight,
)


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("gpo_vae_fx_metrics"))


# --- ATE -----------------------------------------------------------------------------------------


def test_oracle_ate_gives_pearson_one_and_jaccard_one(fixture_files):
    a = ad.read_h5ad(fixture_files["input"])
    ate = data_ate(a.X.toarray(), a.obs["gene"].astype(str).to_numpy(), PERTURBED)
    m = ate_metrics(ate, ate.copy()).values
    assert m["ATE_pearson"] == pytest.approx(1.0) and m["ATE_r2"] == pytest.approx(1.0)
    assert m["ATE_pearson_top20"] == pytest.approx(1.0)
    assert m["jaccard_top20"] == 1.0 and m["jaccard_top50"] == 1.0
    # the planted knockdown is the strongest effect of each perturbation: log2(0.1) on the 1e4 scale
    for i, p in enumerate(PERTURBED):
        assert np.argmin(ate[i]) == a.var_names.get_loc(p)
        assert ate[i, a.var_names.get_loc(p)] == pytest.approx(np.log2(0.1), abs=0.5)


def test_ate_metrics_match_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(7, 60))
    pred = ref + rng.normal(scale=0.8, size=ref.shape)
    m = ate_metrics(ref, pred).values
    assert m["ATE_pearson"] == pytest.approx(stats.pearsonr(ref.ravel(), pred.ravel())[0], abs=1e-12)
    assert m["ATE_r2"] == pytest.approx(r2_score(ref.ravel(), pred.ravel()), abs=1e-12)
    top = np.argsort(-np.abs(ref), axis=1)[:, :20]  # an independent top-20 by full sorting
    xs, ys = np.take_along_axis(ref, top, 1).ravel(), np.take_along_axis(pred, top, 1).ravel()
    assert m["ATE_pearson_top20"] == pytest.approx(stats.pearsonr(xs, ys)[0], abs=1e-12)
    assert m["ATE_r2_top20"] == pytest.approx(r2_score(xs, ys), abs=1e-12)
    for k in (20, 50):
        a = [set(r) for r in np.argsort(-np.abs(ref), axis=1)[:, :k]]
        b = [set(r) for r in np.argsort(-np.abs(pred), axis=1)[:, :k]]
        assert m[f"jaccard_top{k}"] == pytest.approx(np.mean([len(x & y) / len(x | y) for x, y in zip(a, b)]))


def test_top_k_is_capped_at_the_gene_count():
    assert top_k_indices(np.ones((2, 5)), 50).shape == (2, 5)


def test_perturbseq_scale_and_data_ate_by_hand():
    counts = np.array([[1.0, 3.0], [2.0, 2.0], [0.0, 4.0]])
    y = perturbseq_scale(counts)
    assert y[0].tolist() == pytest.approx([np.log2(2501), np.log2(7501)])
    ate = data_ate(counts, np.array(["A", "non-targeting", "non-targeting"]), ["A"])
    ctrl = (y[1] + y[2]) / 2
    assert ate[0].tolist() == pytest.approx((y[0] - ctrl).tolist())
    only_first = data_ate(counts, np.array(["A", "non-targeting", "non-targeting"]), ["A"], np.array([True, True, False]))
    assert only_first[0].tolist() == pytest.approx((y[0] - y[1]).tolist())


# --- loss pieces ---------------------------------------------------------------------------------


def test_k_hop_scores_are_the_damped_matrix_power_series():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(5, 5))
    expected = A + sum(np.linalg.matrix_power(A, k + 1) / 5**k for k in range(1, 4))
    assert k_hop_scores(torch.tensor(A), 3).numpy() == pytest.approx(expected)


def test_negative_binomial_matches_scipy():
    x = torch.tensor([0.0, 3.0, 17.0, 120.0])
    mu = torch.tensor([2.0, 5.0, 20.0, 100.0], dtype=torch.float64)
    c = torch.tensor([0.7, 1.0, 3.0, 12.0], dtype=torch.float64)
    m = mu.numpy() + 1e-4
    expected = stats.nbinom.logpmf(x.numpy(), c.numpy(), c.numpy() / (c.numpy() + m))
    assert nb_log_prob(x.double(), mu, c).numpy() == pytest.approx(expected, rel=1e-9)


def test_plate_reweighting_spreads_a_global_term_over_its_cells():
    D = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    counts = torch.tensor([2.0, 0.0])  # 2 cells of treatment 0; none of treatment 1 (weight 0, not inf)
    term = torch.tensor([[[4.0, 6.0], [1.0, 1.0]]])  # (particles, treatments, dims)
    out = plate_reweight(D, counts, term)
    assert out[0].tolist() == [[2.0, 3.0], [2.0, 3.0], [0.0, 0.0]]


def test_counterfactual_divergence_exact_and_original():
    mu1, s1 = torch.tensor([[[0.3, -1.0]]]), torch.tensor([[[0.5, 2.0]]])
    mu2, s2 = torch.tensor([[[0.0, 0.5]]]), torch.tensor([[[1.5, 1.0]]])
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu1, s1), torch.distributions.Normal(mu2, s2)).sum()
    assert float(cf_divergence(mu1, s1, mu2, s2, "exact_kl")) == pytest.approx(float(kl), rel=1e-6)
    lv1, lv2 = 2 * torch.log(s1), 2 * torch.log(s2)
    original = (-0.5 * (1 + lv1 - lv2 - (mu1 - mu2) ** 2 - torch.exp(lv1 - lv2))).sum()
    assert float(cf_divergence(mu1, s1, mu2, s2, "original")) == pytest.approx(float(original), rel=1e-6)


def test_gumbel_straight_through_samples_are_binary_with_bernoulli_frequencies():
    torch.manual_seed(0)
    logits = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    s = gumbel_bernoulli_st(logits, 1.0, 20000)
    assert set(torch.unique(s.detach()).tolist()) <= {0.0, 1.0}
    assert s.detach().mean(0).numpy() == pytest.approx(torch.sigmoid(logits).detach().numpy(), abs=0.02)
    s.sum().backward()
    assert (logits.grad > 0).all()  # relaxed gradients reach the logits
    assert float(bernoulli_log_prob(torch.tensor(1.0), torch.tensor(0.0))) == pytest.approx(np.log(0.5))


# --- CausalBench statistics ------------------------------------------------------------------------


def _causal_data(seed=0):
    """Genes a, b, c (perturbed) and x (extra); a -> b is a real effect, c and x are untouched."""
    rng = np.random.default_rng(seed)
    labels = np.array(["non-targeting"] * 150 + ["a"] * 60 + ["b"] * 60 + ["c"] * 60)
    expr = rng.normal(size=(len(labels), 4))
    expr[labels == "a", 1] += 1.5
    return expr, labels, ["a", "b", "c", "x"]


def test_edge_tests_are_mann_whitney_and_wasserstein_on_test_cells():
    expr, labels, genes = _causal_data()
    ev = CausalBenchEvaluator(expr, labels, genes, 3)
    res = ev.test({0: {1, 2}})
    obs, a_cells = expr[labels == "non-targeting"], expr[labels == "a"]
    for child, p, wd in zip((1, 2), res.p_values, res.wasserstein):
        assert p == pytest.approx(stats.mannwhitneyu(obs[:, child], a_cells[:, child]).pvalue)
        assert wd == pytest.approx(stats.wasserstein_distance(obs[:, child], a_cells[:, child]))
    assert res.p_values[0] < 1e-6 and (res.true_positives, res.false_positives) == (1 + (res.p_values[1] < 0.05), res.p_values[1] >= 0.05)


def test_false_omission_rates_near_zero_without_hidden_effects():
    expr, labels, genes = _causal_data()
    ev = CausalBenchEvaluator(expr, labels, genes, 3)
    res = ev.evaluate([(0, 1)], max_path_length=3, omission_estimation_size=500, seed=0)
    assert (res.output_graph.true_positives, res.output_graph.false_positives) == (1, 0)
    assert res.n_random_pairs == 12  # 4 x 3 ordered pairs: fewer than 500, all drawn once
    assert res.false_omission_rate == res.random_tests.true_positives / 12
    # a -> b is among the random pairs (the original does not skip predicted pairs): at most it plus chance
    assert res.false_omission_rate <= 2 / 12
    assert res.n_block_pairs == 5 and res.false_omission_rate_block <= 0.2  # a->b excluded from the block draw


def test_predicted_edges_threshold_and_self_loops():
    prob = np.array([[0.9, 0.51, 0.5], [0.2, 0.7, 0.6], [0.6, 0.1, 0.4]])
    assert predicted_edges(prob, 0.5) == [(0, 1), (1, 2), (2, 0)]
    assert predicted_edges(prob, 0.5, self_loops=True) == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0)]
    assert predicted_edges(prob, 0.5, rows=2, cols=2) == [(0, 1)]


# --- reference networks ---------------------------------------------------------------------------


def test_reference_readers_and_precision_recall_by_hand(tmp_path):
    ids = {"A": "ENSG1", "B": "ENSG2", "C": "ENSG3"}
    pkl = tmp_path / "biogrid.pkl"
    pkl.write_bytes(pickle.dumps([("ENSG1", "ENSG2"), ("ENSG2", "ENSG3"), ("ENSG9", "ENSG1")]))
    tsv = tmp_path / "corum.tsv"
    tsv.write_text("source\ttarget\nA\tC\nB\tA\n")
    csv = tmp_path / "string.csv"
    csv.write_text("protein1,protein2,score\nENSG1,ENSG3,900\n")
    refs = {p.stem: map_reference(p, read_edge_list(p), ids) for p in (pkl, tsv, csv)}
    assert refs["biogrid"] == {("ENSG1", "ENSG2"), ("ENSG2", "ENSG3")}  # ENSG9 is not a perturbed gene
    assert refs["corum"] == {("ENSG1", "ENSG3"), ("ENSG2", "ENSG1")}  # symbols mapped to ids
    assert refs["string"] == {("ENSG1", "ENSG3")}
    predicted = {("ENSG1", "ENSG2"), ("ENSG1", "ENSG3"), ("ENSG3", "ENSG2")}
    p, r, hit = precision_recall(predicted, refs["biogrid"])
    assert (p, r, hit) == (1 / 3, 1 / 2, 1)
    union = sorted(predicted | refs["biogrid"])  # the original: sklearn on the union of both edge sets
    y_true = [e in refs["biogrid"] for e in union]
    y_pred = [e in predicted for e in union]
    assert p == pytest.approx(precision_score(y_true, y_pred)) and r == pytest.approx(recall_score(y_true, y_pred))
    assert precision_recall(set(), refs["string"])[:2] == (0.0, 0.0)


def test_reference_with_mismatched_ids_is_an_input_error(tmp_path):
    bad = tmp_path / "regnetwork.tsv"
    bad.write_text("source\ttarget\n5599\t7157\n1017\t5599\n")  # Entrez ids, not Ensembl ids or symbols
    with pytest.raises(InputError, match="none of its 3 ids matches"):
        map_reference(bad, read_edge_list(bad), {"A": "ENSG1"})


def test_pickles_cannot_run_code(tmp_path):
    evil = tmp_path / "string.pkl"
    evil.write_bytes(pickle.dumps(pd.DataFrame({"a": [1]})))  # any non-builtin class is refused
    with pytest.raises(InputError, match="pickle of"):
        read_edge_list(evil)


def test_mismatched_reference_file_stops_evaluate_with_one_line(fixture_files, tmp_path):
    prepared = tmp_path / "prepared.h5ad"
    prepare(fixture_files["input"], prepared, load_config("tiny").data)
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "biogrid.tsv").write_text(f"source\ttarget\n{gene_id('P1')}\t{gene_id('P2')}\n")
    (refs / "corum.tsv").write_text("source\ttarget\nENSMUSG00000000001\tENSMUSG00000000002\n")
    res = run_cli(["gpo_vae.py", "evaluate", "--prepared", str(prepared), "--checkpoint", str(tmp_path / "missing.pt"),
                   "--outdir", str(tmp_path / "ev"), "--reference-networks", str(refs)])
    assert_one_line_error(res, "corum.tsv", "edge ids", "ENSMUSG00000000001")
    assert not (tmp_path / "ev" / "metrics.tsv").exists()
