"""Step parameters (no torch import, so the CLI builds its options from them and `--help` stays fast).

Defaults are the original's (studies.md drugseq section 2); the pipeline's `drugseq_<field>`
params and the CLI's `--<field>` options map onto these fields one to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from txrepro.errors import InputError

BestMode = Literal["copy", "original"]
DATASET = "drugseq_tcell"
DEFAULT_CONTROL = "DMSO"


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01  # torch.optim.AdamW's default, which the original kept
    val_fraction: float = 0.2
    seed: int = 614
    lambda_reg: float = 0.2
    use_zscore: bool = False
    d_model: int = 128
    nhead: int = 4
    num_layers: int = 2
    dim_feedforward: int = 512
    dropout: float = 0.1
    attention_dropout: float | str = "auto"  # auto: `dropout` on CUDA, 0 on CPU (model.resolve_attention_dropout)
    latent_dim: int = 32
    attention: str = "fused"
    best_checkpoint: BestMode = "copy"
    device: str = "auto"

    def __post_init__(self) -> None:
        ad = self.attention_dropout
        checks = [
            (self.epochs >= 1, "epochs", "an integer >= 1", self.epochs),
            (self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size),
            (0 < self.val_fraction < 1, "val_fraction", "a number between 0 and 1", self.val_fraction),
            (self.lr > 0, "lr", "a positive number", self.lr),
            (0 <= self.dropout < 1, "dropout", "a number in [0, 1)", self.dropout),
            (ad == "auto" or (_is_number(ad) and 0 <= float(ad) < 1), "attention_dropout", "'auto' or a number in [0, 1)", ad),
            (self.best_checkpoint in ("copy", "original"), "best_checkpoint", "copy or original", self.best_checkpoint),
            (self.attention in ("fused", "explicit"), "attention", "fused or explicit", self.attention),
            (self.nhead >= 1 and self.d_model % self.nhead == 0, "d_model", f"a multiple of nhead ({self.nhead})", self.d_model),
            (self.num_layers >= 1 and self.latent_dim >= 1, "num_layers", "num_layers and latent_dim >= 1", (self.num_layers, self.latent_dim)),
        ]
        for ok, name, expected, found in checks:
            if not ok:
                raise InputError(f"--{name.replace('_', '-')}", name, expected, repr(found))


@dataclass(frozen=True)
class AnalyseParams:
    dataset: str = DATASET
    control: str = DEFAULT_CONTROL
    dmso_cluster: str | None = None
    gradinput_target: str = "act"
    checkpoint: str = "best"
    batch_size: int = 32
    device: str = "auto"
    top_n: int = 25

    def __post_init__(self) -> None:
        if self.checkpoint not in ("best", "last"):
            raise InputError("--checkpoint", "checkpoint", "best or last", repr(self.checkpoint))


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
