"""The two published protocols as named configurations sharing one code path.

`repository`: what ifreyk/scgpt-age's scripts run (papers/age_clock.md, studies.md "age_clock").
`article`: the IJMS 2025 article's protocol (studies.md "age_clock: the published article's
protocol"). Sizes for a 2-core CPU come from `scale="tiny"`; everything else is the paper's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from txrepro.errors import InputError

STUDY = "age_clock"
DATASET = "AgeAnno"
PROTOCOLS: tuple[str, ...] = ("repository", "article")
SCALES: tuple[str, ...] = ("full", "tiny")

# Binary task of both protocols. The positive class (label 1, the P(...) every metric, curve and
# perturbation call uses) is old-age; the repository never says which class is positive.
POSITIVE_CLASS = "old"
NEGATIVE_CLASS = "mid"
MID_AGE = (20, 59)
OLD_AGE = (60, 100)

Protocol = Literal["repository", "article"]


@dataclass(frozen=True)
class AgeClockConfig:
    """Every knob of one protocol run; defaults are the repository protocol at full size."""

    protocol: Protocol = "repository"
    seed: int = 0
    # --- genes and tokens
    gene_source: Literal["ageanno_degs", "age_genes_869", "random"] = "ageanno_degs"
    n_genes: int | None = 3000  # None: every listed gene that survives filtering
    min_cell_fraction: float = 0.01  # drop genes detected in fewer cells
    min_vocab_fraction: float = 0.5  # fail when fewer input genes are in the checkpoint vocabulary
    n_bins: int = 51
    max_seq_len: int = 3001
    binning_seed: int = 0  # scgpt-age re-seeds numpy with 0 before every binning call
    # --- split
    test_donor_fraction: float = 0.25
    val_fraction: float = 0.1  # of train cells; the original had no validation split
    min_donors_per_group: int = 1  # article: tissues with < 3 donors per age group left out
    select_on_test: bool = False  # original: best epoch chosen on the test file
    # --- model and training
    model: Literal["finetune_cls", "frozen_avgpool_mlp"] = "finetune_cls"
    epochs: int = 10
    batch_size: int = 128  # the code's value (the README says 10)
    eval_batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw"] = "adam"
    lr_step_gamma: float | None = 0.9  # StepLR per epoch
    grad_clip: float | None = 1.0
    dropout: float = 0.4
    head_layers: int = 5  # article head
    head_width: int = 1024
    class_weighted: bool = False
    shuffle: bool = True  # the original DataLoader did not shuffle
    # --- logistic baseline
    logreg_c: float = 1.0
    # --- perturbation
    perturb_mode: Literal["append", "replace"] = "append"
    oe_value: Literal["10000", "tissue_max"] = "10000"
    perturb_pooling: Literal["trained", "avg-pool"] = "trained"
    n_runs: int = 4
    cells_per_tissue: int = 100  # repository: up to this many test cells per tissue
    cells_per_group: int | None = None  # article: this many mid and this many old cells per tissue
    perturb_batch_size: int | None = None  # sequences per forward pass; None: 32 on CPU (cache-bound), a token budget on CUDA
    # --- statistics
    effect: Literal["log2_mean_ratio", "ko_oe_ratio"] = "log2_mean_ratio"
    effect_threshold: float = 0.2  # |log2(mean_high/mean_low)| beyond this (repository)
    alpha: float = 0.05
    stability: Literal["same_call", "significant"] = "same_call"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InputColumns:
    """Where the h5ad keeps what the study needs (obs/var column names)."""

    age: str = "age"
    tissue: str = "tissue"
    donor: str = "donor"
    cell_id: str | None = None  # None: obs_names
    gene: str | None = None  # None: var_names
    layer: str | None = None  # None: X holds raw counts
    split: str | None = None  # None: donor-level split per tissue


REPOSITORY = AgeClockConfig()

ARTICLE = AgeClockConfig(
    protocol="article",
    gene_source="age_genes_869",
    n_genes=None,
    max_seq_len=1200,  # the whole-human checkpoint's length; 869 genes + <cls> fit
    min_donors_per_group=3,
    model="frozen_avgpool_mlp",
    epochs=20,
    batch_size=256,
    optimizer="adamw",
    weight_decay=1e-7,
    lr_step_gamma=None,
    grad_clip=None,
    class_weighted=True,
    perturb_mode="replace",
    oe_value="tissue_max",
    n_runs=10,
    cells_per_tissue=300,
    cells_per_group=150,
    effect="ko_oe_ratio",
    effect_threshold=0.0,
    stability="significant",
)

# CPU sizes for the fixture (2 cores, seconds): fewer bins, epochs, cells and runs, a larger
# learning rate and a smaller head; same code path. Half the donors are test donors, so the
# unpaired perturbation tests have enough cells per run.
TINY: dict[str, dict[str, Any]] = {
    "repository": {
        "n_bins": 11, "epochs": 6, "lr": 1e-3, "batch_size": 32, "test_donor_fraction": 0.5,
        "n_runs": 2, "cells_per_tissue": 40,
    },
    "article": {
        "n_bins": 11, "epochs": 20, "lr": 1e-3, "batch_size": 64, "head_width": 64, "test_donor_fraction": 0.5,
        "n_runs": 3, "cells_per_group": 16, "cells_per_tissue": 32,
    },
}


def protocol_config(protocol: str, *, scale: str = "full", overrides: Mapping[str, Any] | None = None) -> AgeClockConfig:
    """The named protocol, shrunk for CPU when scale='tiny', then explicit overrides (None = keep)."""
    if protocol not in PROTOCOLS:
        raise InputError("--age_protocol", "age_protocol", f"one of {', '.join(PROTOCOLS)}", repr(protocol))
    if scale not in SCALES:
        raise InputError("--scale", "scale", f"one of {', '.join(SCALES)}", repr(scale))
    cfg = REPOSITORY if protocol == "repository" else ARTICLE
    if scale == "tiny":
        cfg = replace(cfg, **TINY[protocol])
    known = {f.name for f in fields(AgeClockConfig)}
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise InputError("parameters", unknown[0], f"one of {', '.join(sorted(known))}")
    cfg = replace(cfg, **changes)
    if cfg.perturb_mode not in ("append", "replace"):
        raise InputError("--perturb_mode", "perturb_mode", "append or replace", repr(cfg.perturb_mode))
    if not 2 < cfg.n_bins <= 255:
        raise InputError("--n_bins", "n_bins", "an integer from 3 to 255", str(cfg.n_bins))
    return cfg


def config_from_dict(d: Mapping[str, Any]) -> AgeClockConfig:
    """Round-trip of `as_dict` (stored in prepared files and model folders)."""
    known = {f.name for f in fields(AgeClockConfig)}
    return AgeClockConfig(**{k: v for k, v in d.items() if k in known})
