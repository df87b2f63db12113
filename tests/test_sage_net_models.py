"""Architectures, metrics and the PrediXcan fit against independent oracles."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from txrepro.studies.sage_net.config import PAPER, TINY, get_config
from txrepro.studies.sage_net.metrics import pearson, per_gene_pearson, per_individual_pearson, summary
from txrepro.studies.sage_net.model import ConvTower, PSageNet, RSageNet, init_from_reference, n_parameters, one_hot
from txrepro.studies.sage_net.predixcan import PrediXcanParams, fit_gene


def test_paper_architecture_size_and_resolution():
    # conv0 4->900 k10, block 900->256 k5, 4 residual blocks 256 k5, pooling 10 five times: 40 kb -> 1
    tower = ConvTower(PAPER)
    assert tower.out_features == 256
    r, p = RSageNet(PAPER), PSageNet(PAPER)
    assert n_parameters(r) == 2_636_597
    assert n_parameters(p) == 2_702_646  # "about 2.7 M parameters"
    assert PAPER.batch_size == 6 and PAPER.max_epochs == 10 and PAPER.learning_rate == 5e-4 and PAPER.lam_diff == PAPER.lam_ref == 1


def test_tiny_forward_shapes_and_one_hot():
    codes = torch.tensor([[0, 1, 2, 3, 4]], dtype=torch.uint8)
    x = one_hot(codes)
    assert x.shape == (1, 4, 5)
    assert torch.equal(x[0, :, 4], torch.full((4,), 0.25))  # N, as the original encoder
    assert torch.equal(x[0, :, :4], torch.eye(4))
    torch.manual_seed(0)
    seq = one_hot(torch.randint(0, 4, (3, TINY.input_len), dtype=torch.uint8))
    assert RSageNet(TINY)(seq).shape == (3,)
    assert PSageNet(TINY)(seq, seq, seq).shape == (3, 2)


def test_init_from_reference_copies_the_tower_only():
    torch.manual_seed(0)
    r = RSageNet(TINY)
    torch.manual_seed(1)
    p = PSageNet(TINY)
    init_from_reference(p, r)
    for (k, a), (_, b) in zip(r.tower.state_dict().items(), p.tower.state_dict().items()):
        assert torch.equal(a, b), k
    assert not torch.equal(r.fc0[0].weight, p.fc0[0].weight)


def test_identical_personal_and_reference_give_a_constant_deviation():
    """The deviation head sees fc0(ref) - fc0(personal): with no variant it cannot tell individuals apart."""
    torch.manual_seed(0)
    m = PSageNet(TINY).eval()
    a = one_hot(torch.randint(0, 4, (1, TINY.input_len), dtype=torch.uint8))
    b = one_hot(torch.randint(0, 4, (1, TINY.input_len), dtype=torch.uint8))
    with torch.no_grad():
        assert torch.allclose(m(a, a, a)[0, 1], m(b, b, b)[0, 1])


def test_get_config_rejects_unknown():
    from txrepro.errors import InputError

    with pytest.raises(InputError, match="one of paper, tiny"):
        get_config("huge")


def test_pearson_against_scipy():
    rng = np.random.default_rng(0)
    pred, obs = rng.normal(size=(5, 30)), rng.normal(size=(5, 30))
    obs[0] += 2 * pred[0]
    expected = [scipy.stats.pearsonr(p, o).statistic for p, o in zip(pred, obs)]
    np.testing.assert_allclose(per_gene_pearson(pred, obs), expected, atol=1e-12)
    np.testing.assert_allclose(per_individual_pearson(pred, obs)[3], scipy.stats.pearsonr(pred[:, 3], obs[:, 3]).statistic, atol=1e-12)
    assert np.isnan(pearson(np.ones(5), np.arange(5)))  # constant prediction: undefined, as the original
    mean, median, n = summary(np.array([0.5, np.nan, 0.1, 0.3]))
    assert (mean, median, n) == (pytest.approx(0.3), pytest.approx(0.3), 3)


def test_predixcan_alpha_is_the_validation_optimum_and_refit_on_train():
    from sklearn.linear_model import ElasticNet, ElasticNetCV
    from sklearn.model_selection import PredefinedSplit

    rng = np.random.default_rng(0)
    n, f = 80, 12
    x = rng.integers(0, 3, (n, f)).astype(float)
    y = 0.8 * x[:, 2] - 0.5 * x[:, 7] + rng.normal(0, 0.7, n)
    tr, va, te = np.arange(56), np.arange(56, 68), np.arange(68, 80)
    alpha, intercept, coef = fit_gene(x, y, tr, va, te, PrediXcanParams())
    # oracle: the same alpha grid (sklearn's, from all individuals as the original), scored by hand on validation
    grid = ElasticNetCV(cv=PredefinedSplit(np.r_[np.full(56, -1), np.zeros(12)]), l1_ratio=0.5).fit(x, y).alphas_
    mse = [np.mean((ElasticNet(alpha=a, l1_ratio=0.5).fit(x[tr], y[tr]).predict(x[va]) - y[va]) ** 2) for a in grid]
    assert alpha == pytest.approx(grid[int(np.argmin(mse))])
    ref = ElasticNet(alpha=alpha, l1_ratio=0.5).fit(x[tr], y[tr])
    np.testing.assert_allclose(coef, ref.coef_)
    assert intercept == pytest.approx(ref.intercept_)
    assert np.argsort(-np.abs(coef))[:2].tolist() == [2, 7]
    # the documented quirk: the grid differs when the test rows are left out of it
    alpha_tv, _, _ = fit_gene(x, y, tr, va, te, PrediXcanParams(alpha_grid="train_val"))
    grid_tv = ElasticNetCV(cv=PredefinedSplit(np.r_[np.full(56, -1), np.zeros(12)]), l1_ratio=0.5).fit(x[:68], y[:68]).alphas_
    assert alpha_tv in grid_tv and grid_tv[0] != pytest.approx(grid[0])


def test_ism_equals_brute_force_mutagenesis():
    from txrepro.studies.sage_net.attribution import ism

    torch.manual_seed(0)
    m = PSageNet(TINY).eval()
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, TINY.input_len).astype(np.uint8)
    personal = ref.copy()
    personal[450] = (ref[450] + 1) % 4
    positions = np.array([449, 450, 451, 700])
    for joint in (True, False):
        _, out = ism(m, ref, personal, positions, "cpu", 5, joint)
        with torch.no_grad():
            for i, p in enumerate(positions):
                for b in range(4):
                    r, q = ref.copy(), personal.copy()
                    q[p] = b
                    if joint:
                        r[p] = b
                    qt = one_hot(torch.from_numpy(q[None]))
                    assert out[i, b] == pytest.approx(float(m(one_hot(torch.from_numpy(r[None])), qt, qt)[0, 1]), abs=1e-6)
