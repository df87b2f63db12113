"""GPO-VAE in plain PyTorch: generative model, guide and loss (studies.md gpo_vae section 2).

Generative model: z_b ~ N(0, I) (n_latent); perturbation latent z_p = D (E ⊙ M) with E ~ N(0, 1) and
the GRN adjacency M ~ Bernoulli(0.3), both T x T over the T treatments (perturbed genes, then the
FC3 extra genes); a QC artefact embedding qc_E. The decoder reads [z_b, z_p, qc term] and gives a
library-size-scaled negative binomial; x_good uses qc term 0, x_bad the artefact embedding.

Guide: q(M) Bernoulli with free logits, sampled by Gumbel-softmax straight-through; q(E | M) from an
MLP on [mask row, one-hot]; q(qc_E) from an MLP on a constant; q(z_b | x, D, E, M, qc) from an MLP on
log-standardised counts plus the latent offsets.

Loss: the plate-reweighted negative ELBO (good/bad reconstruction mix), the counterfactual divergence
between the basal posteriors of the cell and of its counterfactual, the K-hop GRN alignment loss and
the mask sparsity penalty. pyro is not needed: every distribution here is a few lines of torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from txrepro.studies.gpo_vae.config import LossConfig, ModelConfig

MU_EPS = 1e-4  # added to the NB mean, as the original GammaPoisson rate
VAR_EPS = 1e-4  # added to Gaussian variances, as the original encoders


class ResidualMLP(nn.Module):
    """n_layers Linear+LeakyReLU blocks of constant width; every block after the first is residual."""

    def __init__(self, n_input: int, n_hidden: int, n_layers: int) -> None:
        super().__init__()
        dims = [n_input] + [n_hidden] * n_layers
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.LeakyReLU()) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers[0](x)
        for layer in self.layers[1:]:
            x = layer(x) + x
        return x


class GaussianEncoder(nn.Module):
    """Residual MLP with mean and log-variance heads; returns (loc, scale)."""

    def __init__(self, n_input: int, n_output: int, n_hidden: int, n_layers: int) -> None:
        super().__init__()
        self.mlp = ResidualMLP(n_input, n_hidden, n_layers)
        self.mean = nn.Linear(n_hidden, n_output)
        self.log_var = nn.Linear(n_hidden, n_output)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mlp(x)
        return self.mean(h), torch.sqrt(torch.exp(self.log_var(h)) + VAR_EPS)


class LibraryNBDecoder(nn.Module):
    """Normalised mean by softmax, scaled by the library size; one concentration per gene."""

    def __init__(self, n_input: int, n_output: int, n_hidden: int, n_layers: int) -> None:
        super().__init__()
        self.mlp = ResidualMLP(n_input, n_hidden, n_layers)
        self.mean = nn.Linear(n_hidden, n_output)
        self.log_concentration = nn.Parameter(torch.zeros(n_output))

    def forward(self, z: torch.Tensor, library: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = library * torch.softmax(self.mean(self.mlp(z)), dim=-1)
        return mu, torch.exp(self.log_concentration)


def nb_log_prob(x: torch.Tensor, mu: torch.Tensor, concentration: torch.Tensor) -> torch.Tensor:
    """Gamma-Poisson log-likelihood with mean mu + 1e-4 and the given concentration."""
    m = mu + MU_EPS
    c = concentration
    log_c_m = torch.log(c + m)
    return torch.lgamma(x + c) - torch.lgamma(c) - torch.lgamma(x + 1) + c * (torch.log(c) - log_c_m) + x * (torch.log(m) - log_c_m)


def nb_sample(mu: torch.Tensor, concentration: torch.Tensor) -> torch.Tensor:
    """Counts from the Gamma-Poisson: rate ~ Gamma(c, c / m), x ~ Poisson(rate)."""
    m = mu + MU_EPS
    c = concentration.expand_as(m)
    rate = torch.distributions.Gamma(c, c / m).sample()
    return torch.poisson(rate)


def normal_log_prob(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return -((x - loc) ** 2) / (2 * scale**2) - torch.log(scale) - 0.5 * math.log(2 * math.pi)


def bernoulli_log_prob(value: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(value | logits); differentiable in value (straight-through samples)."""
    return value * logits - F.softplus(logits)


def gumbel_bernoulli_st(logits: torch.Tensor, temperature: float, n_particles: int) -> torch.Tensor:
    """Hard 0/1 samples in the forward pass, relaxed Bernoulli gradients in the backward pass."""
    u = torch.rand((n_particles, *logits.shape), dtype=logits.dtype, device=logits.device).clamp(1e-6, 1 - 1e-6)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + (soft - soft.detach())  # exactly 0/1 forward: x - x is exactly 0


def k_hop_scores(A: torch.Tensor, hop: int) -> torch.Tensor:
    """S = A + sum_{k=1..hop} A^{k+1} / T^k: the GRN loss's accumulation of multi-hop effects."""
    S = A.clone()
    term = A
    for _ in range(hop):
        term = (term @ A) / A.shape[0]
        S = S + term
    return S


@dataclass
class Globals:
    """Samples and guide parameters of the perturbation-plated variables (particles first)."""

    mask: torch.Tensor  # (p, T, T)
    E: torch.Tensor  # (p, T, T)
    E_loc: torch.Tensor
    E_scale: torch.Tensor
    qc_E: torch.Tensor  # (p, n_qc, L)
    qc_loc: torch.Tensor
    qc_scale: torch.Tensor


class GpoVae(nn.Module):
    """Model and guide parameters together, so one state_dict is one checkpoint."""

    def __init__(self, cfg: ModelConfig, n_genes: int, n_treatments: int, log_mean: torch.Tensor, log_std: torch.Tensor, n_qc: int = 1) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_genes, self.n_treatments, self.n_qc, self.n_latent = n_genes, n_treatments, n_qc, cfg.n_latent
        T, L = n_treatments, cfg.n_latent
        self.mask_logits = nn.Parameter(cfg.mask_init * torch.ones(T, T))
        self.embedding_encoder = GaussianEncoder(2 * T, T, cfg.embedding_encoder_n_hidden, cfg.embedding_encoder_n_layers)
        self.qc_encoder = GaussianEncoder(L, L, cfg.embedding_encoder_n_hidden, cfg.embedding_encoder_n_layers)
        self.basal_encoder = GaussianEncoder(n_genes + T + L, L, cfg.basal_encoder_n_hidden, cfg.basal_encoder_n_layers)
        self.decoder = LibraryNBDecoder(L + T + L, n_genes, cfg.decoder_n_hidden, cfg.decoder_n_layers + 1)
        self.register_buffer("eye", torch.eye(T))
        self.register_buffer("log_mean", log_mean.clone().float())
        self.register_buffer("log_std", log_std.clone().float())
        self.register_buffer("prior_mask_logit", torch.tensor(math.log(cfg.mask_prior / (1 - cfg.mask_prior))))

    # guide -------------------------------------------------------------------------------------
    def logits(self) -> torch.Tensor:
        """q(M) logits with NaN/inf replaced by 0, as the original `sanitize_tensor`."""
        A = self.mask_logits
        return torch.where(torch.isfinite(A), A, torch.zeros_like(A))

    def edge_probabilities(self) -> torch.Tensor:
        return torch.sigmoid(self.logits()).detach()

    def sample_globals(self, n_particles: int) -> Globals:
        mask = gumbel_bernoulli_st(self.logits(), self.cfg.gs_temperature, n_particles)
        onehot = self.eye.unsqueeze(0).expand(n_particles, -1, -1)
        E_loc, E_scale = self.embedding_encoder(torch.cat([mask, onehot], dim=-1))
        E = E_loc + E_scale * torch.randn_like(E_loc)
        qc_in = torch.ones(n_particles, self.n_qc, self.n_latent, device=mask.device)
        qc_loc, qc_scale = self.qc_encoder(qc_in)
        qc_E = qc_loc + qc_scale * torch.randn_like(qc_loc)
        return Globals(mask, E, E_loc, E_scale, qc_E, qc_loc, qc_scale)

    def basal_posterior(self, X: torch.Tensor, D: torch.Tensor, qc: torch.Tensor, g: Globals) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """q(z_b) of the cell and q(z_b) with its QC state flipped (the original's q_z_cf_basal)."""
        p = g.mask.shape[0]
        x = ((torch.log(X + 1) - self.log_mean) / self.log_std).unsqueeze(0).expand(p, -1, -1)
        offset = D @ (g.mask * g.E)
        qc_off = qc @ g.qc_E
        qc_cf_off = (1 - qc) @ g.qc_E
        return self.basal_encoder(torch.cat([x, offset, qc_off], dim=-1)), self.basal_encoder(torch.cat([x, offset, qc_cf_off], dim=-1))

    # generative model --------------------------------------------------------------------------
    def decode(self, z_basal: torch.Tensor, D: torch.Tensor, g: Globals, library: torch.Tensor, bad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """NB mean and concentration of x_good (bad=False) or x_bad (bad=True)."""
        z_p = D @ (g.mask * g.E)
        n = D.shape[-2]
        qc_in = torch.full((n, self.n_qc), 1.0 if bad else 0.0, device=D.device)
        z = torch.cat([z_basal, z_p.expand(z_basal.shape[0], -1, -1), (qc_in @ g.qc_E).expand(z_basal.shape[0], -1, -1)], dim=-1)
        return self.decoder(z, library)


@dataclass
class LossTerms:
    loss: torch.Tensor
    reconstruction: float
    kl_local: float
    kl_plated: float
    cf_divergence: float
    grn: float
    penalty: float


def plate_reweight(indicator: torch.Tensor, counts: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
    """Spread a plated term over the batch: weight 1 / #cells of the condition per cell (SAMS-VAE)."""
    scale = 1.0 / counts
    scale = torch.where(torch.isinf(scale), torch.zeros_like(scale), scale)
    return ((indicator != 0).to(term.dtype) * scale.reshape(1, -1)) @ term


def cf_divergence(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor, mode: str) -> torch.Tensor:
    """Summed over cells and latent dims, averaged over particles.

    'original' keeps the repository's formula, whose squared mean difference is not divided by the
    second variance; 'exact_kl' is KL(N1 || N2).
    """
    lv1, lv2 = 2 * torch.log(s1), 2 * torch.log(s2)
    if mode == "exact_kl":
        per = 0.5 * (lv2 - lv1 + (torch.exp(lv1) + (mu1 - mu2) ** 2) / torch.exp(lv2) - 1)
    else:
        per = -0.5 * (1 + lv1 - lv2 - (mu1 - mu2) ** 2 - torch.exp(lv1 - lv2))
    return per.sum(dim=1).mean(dim=0).sum()


def gpo_vae_loss(
    net: GpoVae,
    cfg: LossConfig,
    batch: dict[str, torch.Tensor],
    D_counts: torch.Tensor,
    qc_counts: torch.Tensor,
    n_particles: int,
) -> LossTerms:
    """The training/validation loss of one mini-batch (studies.md gpo_vae section 2, 'Loss')."""
    X, D, qc, cfX, dX, lib = batch["X"], batch["D"], batch["qc"], batch["cfX"], batch["deltaX"], batch["library"]
    g = net.sample_globals(n_particles)
    (zb_loc, zb_scale), (zcf_loc, zcf_scale) = net.basal_posterior(X, D, qc, g)
    z_basal = zb_loc + zb_scale * torch.randn_like(zb_loc)
    # the counterfactual pass draws its own globals, as the original calls the guide a second time
    g_cf = net.sample_globals(n_particles)
    (cf_loc, cf_scale), _ = net.basal_posterior(cfX, D, 1 - qc, g_cf)

    mu_good, conc = net.decode(z_basal, D, g, lib, bad=False)
    mu_bad, _ = net.decode(z_basal, D, g, lib, bad=True)
    lp_good, lp_bad = nb_log_prob(X, mu_good, conc), nb_log_prob(X, mu_bad, conc)
    alpha = qc.sum() / qc.shape[0] if cfg.alpha is None else torch.tensor(cfg.alpha)
    q = qc.max(dim=1, keepdim=True).values
    recon = (alpha * ((1 - q) * lp_good) + (1 - alpha) * (q * lp_bad)).sum(-1)

    kl_z = (normal_log_prob(z_basal, 0.0, torch.ones_like(z_basal)) - normal_log_prob(z_basal, zb_loc, zb_scale)).sum(-1)
    A = net.logits()
    prior_E = normal_log_prob(g.E, 0.0, torch.full_like(g.E, net.cfg.embedding_prior_scale)) - normal_log_prob(g.E, g.E_loc, g.E_scale)
    prior_M = bernoulli_log_prob(g.mask, net.prior_mask_logit) - bernoulli_log_prob(g.mask, A)
    prior_qc = normal_log_prob(g.qc_E, 0.0, torch.full_like(g.qc_E, net.cfg.embedding_prior_scale)) - normal_log_prob(g.qc_E, g.qc_loc, g.qc_scale)
    plated = (
        plate_reweight(D, D_counts, prior_E).sum(-1)
        + plate_reweight(D, D_counts, prior_M).sum(-1)
        + plate_reweight(qc, qc_counts, prior_qc).sum(-1)
    )
    elbo = recon + kl_z + plated
    loss = -elbo.mean()

    has_cf = cfX.sum(1) != 0
    cf = torch.zeros((), device=X.device)
    if has_cf.any():
        cf = cfg.beta * cf_divergence(cf_loc[:, has_cf], cf_scale[:, has_cf], zcf_loc[:, has_cf], zcf_scale[:, has_cf], cfg.cf_divergence)
    S = k_hop_scores(A, cfg.hop)
    grn = cfg.gloss_coeff * F.l1_loss(D @ S, dX - cfg.fc_criteria)
    penalty = cfg.penalty_coeff * torch.sigmoid(A).abs().sum() / A.shape[0] ** 2
    total = loss + cf + grn + penalty
    return LossTerms(
        total,
        reconstruction=float(-recon.mean().detach()),
        kl_local=float(-kl_z.mean().detach()),
        kl_plated=float(-plated.mean().detach()),
        cf_divergence=float(cf.detach()),
        grn=float(grn.detach()),
        penalty=float(penalty.detach()),
    )
