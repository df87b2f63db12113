"""r-SAGE-net and p-SAGE-net in plain PyTorch (the original used Lightning modules).

Architecture (SAGEnet/models.py at 8a74f5ed8e86): a conv block is BatchNorm (on its input) ->
Conv1d ('same' padding) -> ReLU; conv0 (4 -> first_layer_kernel_number, kernel 10), a block to
int_layers_kernel_number channels, AvgPool (ceil mode), then n_conv_blocks - 1 residual blocks each
followed by AvgPool, so 40,000 bp reach length 1 with 5 blocks; flatten -> Linear+ReLU (fc0) ->
h_layers x (Linear, ReLU, Dropout) -> Linear(1). p-SAGE-net runs the shared tower on the reference
and on both haplotypes, averages the haplotype embeddings, and has two heads: `ref_out` (mean
expression, from the reference embedding) and `diff_out` (the individual's deviation, from
fc0(reference) - fc0(personal)). The paper's config has about 2.7 M parameters.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from txrepro.studies.sage_net.config import ModelConfig

# torch warns that 'same' padding with an even kernel (conv0 has 10) copies the input; that is the
# original's layer, so the warning says nothing a user can act on.
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel lengths")

_ONE_HOT = torch.tensor(
    [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float32
)  # N and padding are 0.25 in every channel, as the original's encoder


def one_hot(codes: torch.Tensor) -> torch.Tensor:
    """uint8/long codes [..., L] -> float32 [..., 4, L]."""
    table = _ONE_HOT.to(codes.device)
    return table[codes.long()].transpose(-1, -2).contiguous()


def conv_block(c_in: int, c_out: int, kernel: int, batch_norm: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm1d(c_in) if batch_norm else nn.Identity(),
        nn.Conv1d(c_in, c_out, kernel, padding="same"),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.module(x)


def _pool(cfg: ModelConfig) -> nn.Module:
    if cfg.pooling_type == "avg":
        return nn.AvgPool1d(cfg.pooling_size, ceil_mode=True)
    if cfg.pooling_type == "max":
        return nn.MaxPool1d(cfg.pooling_size, ceil_mode=True)
    raise ValueError(f"pooling_type must be avg or max, got {cfg.pooling_type!r}")


class ConvTower(nn.Module):
    """conv0 + convlayers: the part p-SAGE-net takes from r-SAGE-net at initialisation."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.conv0 = conv_block(4, cfg.first_layer_kernel_number, cfg.first_layer_kernel_size, cfg.batch_norm)
        layers: list[nn.Module] = [
            conv_block(cfg.first_layer_kernel_number, cfg.int_layers_kernel_number, cfg.int_layers_kernel_size, cfg.batch_norm),
            _pool(cfg),
        ]
        length = math.ceil(cfg.input_len / cfg.pooling_size)
        for _ in range(cfg.n_conv_blocks - 1):
            layers += [Residual(conv_block(cfg.int_layers_kernel_number, cfg.int_layers_kernel_number, cfg.int_layers_kernel_size, cfg.batch_norm)), _pool(cfg)]
            length = math.ceil(length / cfg.pooling_size)
        self.convlayers = nn.Sequential(*layers)
        self.out_features = length * cfg.int_layers_kernel_number

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convlayers(self.conv0(x)).flatten(1)


def _hidden(cfg: ModelConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(cfg.h_layers):
        layers += [nn.Linear(cfg.hidden_size, cfg.hidden_size), nn.ReLU(), nn.Dropout(cfg.dropout)]
    return nn.Sequential(*layers)


class RSageNet(nn.Module):
    """Reference-sequence CNN: one sequence -> one expression value."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tower = ConvTower(cfg)
        self.fc0 = nn.Sequential(nn.Linear(self.tower.out_features, cfg.hidden_size), nn.ReLU())
        self.fclayers = _hidden(cfg)
        self.ref_out = nn.Linear(cfg.hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ref_out(self.fclayers(self.fc0(self.tower(x))))[:, 0]

    def predict_personal(self, mat: torch.Tensor, pat: torch.Tensor) -> torch.Tensor:
        """The original's `predict_from_personal`: mean of the two haplotypes' predictions."""
        return (self(mat) + self(pat)) / 2


class PSageNet(nn.Module):
    """Personal-genome model: (reference, maternal, paternal) -> (mean expression, deviation)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tower = ConvTower(cfg)
        self.fc0 = nn.Sequential(nn.Linear(self.tower.out_features, cfg.hidden_size), nn.ReLU())
        self.fclayers = _hidden(cfg)
        self.diff_fclayers = _hidden(cfg)
        self.ref_out = nn.Linear(cfg.hidden_size, 1)
        self.diff_out = nn.Linear(cfg.hidden_size, 1)

    def forward(self, ref: torch.Tensor, mat: torch.Tensor, pat: torch.Tensor) -> torch.Tensor:
        # three tower calls, not one on a stacked batch: BatchNorm statistics then match the original
        ref_x = self.tower(ref)
        personal = (self.tower(mat) + self.tower(pat)) / 2
        ref_h = self.fc0(ref_x)
        diff_h = ref_h - self.fc0(personal)
        mean = self.ref_out(self.fclayers(ref_h))
        diff = self.diff_out(self.diff_fclayers(diff_h))
        return torch.cat([mean, diff], dim=1)


def init_from_reference(p_model: PSageNet, r_model: RSageNet) -> PSageNet:
    """start_from_ref: copy conv0 and the conv layers (not the fully connected ones), as the original."""
    p_model.tower.load_state_dict(r_model.tower.state_dict())
    return p_model


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
