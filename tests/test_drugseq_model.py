"""drugseq model, attention kernel, Grad x Input, best checkpoint and latent distances, against oracles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial import distance
from torch import nn
from torch.profiler import ProfilerActivity, profile

from txrepro.errors import InputError
from txrepro.studies.drugseq.data import DrugseqData
from txrepro.studies.drugseq.importance import grad_x_input, importance_table, target_selector
from txrepro.studies.drugseq.latent import control_mask, distances_to_control, latent_norm_scores, rank_metabolites
from txrepro.studies.drugseq.model import Encoder, GeneTransformerMultiTask, ModelConfig, resolve_attention_dropout
from txrepro.studies.drugseq.train import BestCheckpoint, stratified_split

SMALL = dict(n_genes=24, d_model=16, nhead=2, num_layers=2, dim_feedforward=32, latent_dim=4)


def test_encoder_matches_nn_transformer_encoder():
    """Same state-dict keys as the original's nn.TransformerEncoder (post-norm, ReLU) and the same outputs."""
    torch.manual_seed(0)
    ref = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, 0.1, batch_first=True), 2, enable_nested_tensor=False)
    x = torch.randn(3, 24, 16)
    for attention in ("fused", "explicit"):
        ours = Encoder(ModelConfig(**SMALL, attention=attention))
        assert set(ours.state_dict()) == set(ref.state_dict())
        ours.load_state_dict(ref.state_dict())
        ref.eval(), ours.eval()
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_layers_start_identical_like_nn_transformer_encoder():
    model = GeneTransformerMultiTask(ModelConfig(**SMALL))
    a, b = (dict(layer.named_parameters()) for layer in model.encoder.layers)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_heads_and_shapes():
    model = GeneTransformerMultiTask(ModelConfig(**SMALL)).eval()
    out = model(torch.randn(5, 24))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"scores3": (5, 3), "logit": (5,), "act": (5,), "latent": (5, 4)}


def _attention_kernels(model: nn.Module, x: torch.Tensor) -> set[str]:
    model.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = model(x)
        (out["act"].sum() + out["logit"].sum()).backward()
    return {e.name for e in prof.events() if "attention" in e.name or e.name == "aten::softmax"}


def test_training_step_runs_the_fused_kernel_on_cpu():
    """What actually runs: flash attention forward and backward, never the math kernel or a softmax map."""
    torch.manual_seed(0)
    x = torch.randn(4, 24)
    fused = _attention_kernels(GeneTransformerMultiTask(ModelConfig(**SMALL, attention_dropout=0.0)), x)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in fused
    assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in fused
    assert "aten::_scaled_dot_product_attention_math" not in fused and "aten::softmax" not in fused
    # Why attention dropout is 0 on CPU: with dropout SDPA silently falls back to the math kernel,
    # which is what nn.TransformerEncoderLayer (dropout 0.1) runs in training.
    with_dropout = _attention_kernels(GeneTransformerMultiTask(ModelConfig(**SMALL, attention_dropout=0.1)), x)
    assert "aten::_scaled_dot_product_attention_math" in with_dropout
    assert resolve_attention_dropout("auto", 0.1, "cpu") == 0.0
    assert resolve_attention_dropout("auto", 0.1, "cuda") == 0.1
    assert resolve_attention_dropout(0.05, 0.1, "cpu") == 0.05


def test_fused_and_explicit_attention_agree_with_gradients():
    torch.manual_seed(0)
    fused = GeneTransformerMultiTask(ModelConfig(**SMALL)).eval()
    explicit = GeneTransformerMultiTask(ModelConfig(**SMALL, attention="explicit")).eval()
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(3, 24)
    sel = target_selector("act")
    g_f = grad_x_input(fused, x.numpy(), sel, batch_size=2)
    g_e = grad_x_input(explicit, x.numpy(), sel, batch_size=2)
    np.testing.assert_allclose(g_f, g_e, rtol=1e-4, atol=1e-6)


class LinearHeads(nn.Module):
    """y = x . w (+ b) on every head: Grad x Input must be exactly |w * x|."""

    def __init__(self, w: np.ndarray) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.from_numpy(w))
        self.b = nn.Parameter(torch.tensor(0.7, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = x @ self.w + self.b
        return {"act": y, "logit": -2 * y, "scores3": torch.stack([y, y, y], 1), "latent": torch.stack([y] * 4, 1)}


def test_grad_x_input_on_a_linear_model_is_exactly_abs_w_times_x():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(37, 11)).astype(np.float32)
    w = rng.normal(size=11).astype(np.float32)
    sal = grad_x_input(LinearHeads(w), x, target_selector("act"), batch_size=8)
    np.testing.assert_array_equal(sal, np.abs(w * x).astype(np.float64))
    table = importance_table(sal, [f"g{i}" for i in range(11)])
    oracle = np.abs(w * x).astype(np.float64).mean(axis=0)
    assert table["Gene"].tolist() == [f"g{i}" for i in np.argsort(-oracle, kind="stable")]
    np.testing.assert_array_equal(table["GradInputImportance"].to_numpy(), np.sort(oracle)[::-1])
    # the logit target is -2 y: twice the importance
    np.testing.assert_array_equal(grad_x_input(LinearHeads(w), x, target_selector("logit"), 8), 2 * np.abs(w * x).astype(np.float64))


def test_target_selector():
    out = {"act": torch.tensor([1.0]), "logit": torch.tensor([2.0]), "scores3": torch.tensor([[3.0, 4.0, 5.0]]), "latent": torch.arange(6.0)[None]}
    assert target_selector("scores3[2]")(out).item() == 5.0
    assert target_selector("latent[5]", latent_dim=6)(out).item() == 5.0
    for bad in ("scores3[3]", "latent[6]", "activation", "scores3"):
        with pytest.raises(InputError, match="gradinput"):
            target_selector(bad, latent_dim=6)


def test_best_checkpoint_copies_and_the_original_aliasing_does_not():
    model = nn.Linear(3, 1)
    copy_, alias = BestCheckpoint(), BestCheckpoint(aliasing=True)
    for tracker in (copy_, alias):
        tracker.update(model, 0.5, epoch=1)
    at_best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)  # a later, worse epoch
    for tracker in (copy_, alias):
        assert not tracker.update(model, 0.9, epoch=2)
        assert tracker.epoch == 1
    assert all(torch.equal(copy_.state[k], at_best[k]) for k in at_best)
    assert torch.equal(alias.state["weight"], model.weight)  # the bug: "best" follows the live weights
    assert not torch.equal(alias.state["weight"], at_best["weight"])


def test_stratified_split_matches_sklearn_and_keeps_label_ratio():
    from sklearn.model_selection import StratifiedShuffleSplit

    labels = np.array([1] * 484 + [0] * 284)  # the real label counts
    split = stratified_split(labels, 0.2, 614)
    assert len(split.val) == 154 and len(np.intersect1d(split.train, split.val)) == 0
    assert abs(labels[split.val].mean() - labels.mean()) < 0.01
    _, val = next(StratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=614).split(np.zeros(768), labels))
    np.testing.assert_array_equal(split.val, np.sort(val))


def _toy_data(latent: np.ndarray, meta: list[str], cluster: list[str] | None = None) -> DrugseqData:
    n = len(meta)
    return DrugseqData(np.zeros((n, 2), np.float32), ["a", "b"], np.array([f"w{i}" for i in range(n)]), np.array(meta),
                       np.array([0, 1] * (n // 2)), np.zeros((n, 3), np.float32), None, None if cluster is None else np.array(cluster))


def test_distances_to_control_against_scipy():
    rng = np.random.default_rng(0)
    meta = ["DMSO"] * 6 + ["A"] * 4 + ["B"] * 4 + ["N"] * 4
    z = rng.normal(size=(len(meta), 5))
    z[6:10] += 4.0  # A pushed one way
    z[10:14] -= 4.0  # B the other
    data = _toy_data(z, meta, cluster=["C6"] * 3 + ["C0"] * 3 + ["C0"] * 12)
    act = z.sum(axis=1)  # predicted activation grows along +z
    table, mu, axis = distances_to_control(z, data, control_mask(data, "DMSO", None), act)
    np.testing.assert_allclose(mu, z[:6].mean(axis=0))
    np.testing.assert_allclose(table["euclidean_distance"], [distance.euclidean(r, mu) for r in z])
    np.testing.assert_allclose(table["cosine_distance"], [distance.cosine(r, mu) for r in z])
    ranking = rank_metabolites(table, "DMSO").set_index("meta_id")
    assert set(ranking.index[:2]) == {"A", "B"}
    assert ranking.loc["A", "direction"] == "activating" and ranking.loc["B", "direction"] == "inhibiting"
    # cluster-restricted centre: only the DMSO wells of C6
    table6, mu6, _ = distances_to_control(z, data, control_mask(data, "DMSO", "C6"), act)
    np.testing.assert_allclose(mu6, z[:3].mean(axis=0))
    with pytest.raises(InputError, match="DMSO wells in cluster 'C9'"):
        control_mask(data, "DMSO", "C9")


def test_latent_norm_scores_per_metabolite():
    z = np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [0.0, 2.0]])
    wells, per_meta = latent_norm_scores(z, _toy_data(z, ["DMSO", "DMSO", "M1", "M1"]))
    np.testing.assert_allclose(wells["latent_score"], [5.0, 1.0, 10.0, 2.0])
    expected = pd.DataFrame({"meta_id": ["M1", "DMSO"], "latent_score_mean": [6.0, 3.0], "latent_score_sd": [np.std([10, 2], ddof=1), np.std([5, 1], ddof=1)], "n_wells": [2, 2]})
    pd.testing.assert_frame_equal(per_meta, expected)
