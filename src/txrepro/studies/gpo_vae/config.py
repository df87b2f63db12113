"""Settings of a GPO-VAE run: preprocessing, model, loss, training and evaluation.

Defaults are the values of the original code (dmis-lab/GPO-VAE demo YAMLs and function defaults);
the named configurations in `configs/` hold the per-dataset values of the paper (RPE1, K562,
Adamson) and a tiny CPU setting for tests. A user YAML may start from a named one with `base: NAME`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal


from txrepro.errors import InputError
from txrepro.io.mapping import read_mapping

CONFIG_DIR = Path(__file__).parent / "configs"
NAMED_CONFIGS = ("rpe1", "k562", "adamson", "tiny")
# Dataset keys used in metrics (assets/published_metrics.tsv) and the configuration each one uses.
DATASET_CONFIGS = {"replogle_rpe1": "rpe1", "replogle_k562": "k562", "adamson": "adamson"}
CONTROL_LABEL = "non-targeting"


@dataclass
class DataConfig:
    """CausalBench-style preprocessing (studies.md gpo_vae section 1, steps 1-7)."""

    qc_threshold: float = 3.0  # median +- thr * MAD
    strong_min_degs: int = 50  # Anderson-Darling DEG count must exceed this
    strong_max_knockdown: float = -0.3  # 'percent knockdown' must be <= this
    strong_min_cells: int = 25  # 'number of cells (filtered)' must exceed this
    knockdown_percentile: float = 10.0  # keep cells whose target count <= this percentile of controls
    min_cells_per_perturbation: int = 100  # perturbations must have more cells than this
    fc3_min_abs_logfc: float = 3.0
    fc3_max_padj: float = 0.01
    # 'both_sides': |logFC| > 3 and padj < 0.01 (Adamson data module). 'rpe1_original': the RPE1/K562
    # modules' operator precedence, logFC < -3 OR (logFC > 3 AND padj < 0.01).
    fc3_rule: Literal["both_sides", "rpe1_original"] = "both_sides"
    extra_genes_column: str = "FC3"
    # Sheet of an xlsx summary-statistics file; the RPE1/K562 modules hard-code theirs (configs).
    summary_sheet: str | None = None
    split_mode: Literal["cells", "perturbations"] = "cells"  # 'perturbations' is our extension
    split_random_state: int = 0
    ot_epsilon: float = 1.0
    ot_cost_scale: float = 100.0
    cf_max_cells: int = 50
    phenotype_genes: Literal["all", "treatments"] = "all"
    scrublet_chunks: int = 10  # the original ran QC per tenth of every perturbation (GPU memory)
    scrublet_n_prin_comps: int = 30  # scrublet's default; tiny inputs need fewer


@dataclass
class ModelConfig:
    n_latent: int = 100
    decoder_n_layers: int = 1  # the decoder MLP has decoder_n_layers + 1 hidden layers, as the original
    decoder_n_hidden: int = 400
    basal_encoder_n_layers: int = 1
    basal_encoder_n_hidden: int = 400
    embedding_encoder_n_layers: int = 4
    embedding_encoder_n_hidden: int = 400
    mask_prior: float = 0.3
    mask_init: float = 0.0  # initial q(M) logits (0 = probability 0.5)
    embedding_prior_scale: float = 1.0
    gs_temperature: float = 1.0


@dataclass
class LossConfig:
    beta: float = 0.1  # counterfactual divergence weight
    alpha: float | None = None  # None: the batch's QC-failing fraction, as the original
    hop: int = 5
    fc_criteria: float = 0.5
    gloss_coeff: float = 100.0
    penalty_coeff: float = 1.0
    # 'original': the repository's formula (squared mean difference not divided by the variance);
    # 'exact_kl': the Gaussian KL divergence.
    cf_divergence: Literal["original", "exact_kl"] = "original"


@dataclass
class TrainConfig:
    lr: float = 3e-4
    weight_decay: float = 1e-6
    batch_size: int = 512
    n_particles: int = 5
    max_epochs: int = 2000
    patience: int = 30
    gradient_clip_norm: float = 100.0


@dataclass
class EvaluateConfig:
    ate_particles: int = 2500
    ate_batch_particles: int = 100
    ate_qc_pass_only: bool = False  # the local evaluation path (and the third-party reproduction)
    edge_threshold: float = 0.5
    grn_self_loops: bool = False  # the published harness drops self-loops (GAT-GPO-VAE eval.py)
    max_path_length: int = 3
    omission_estimation_size: int = 500
    p_value_threshold: float = 0.05
    top_k: tuple[int, ...] = (20, 50)


@dataclass
class GpoVaeConfig:
    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "train": TrainConfig, "evaluate": EvaluateConfig}


def _apply(cfg: GpoVaeConfig, overrides: dict[str, Any], source: str) -> None:
    for section, values in overrides.items():
        if section in ("base", "name"):
            continue
        if section not in _SECTIONS:
            raise InputError(source, f"section '{section}'", f"one of {', '.join(_SECTIONS)}")
        if not isinstance(values, dict):
            raise InputError(source, f"section '{section}'", "a mapping of settings", type(values).__name__)
        target = getattr(cfg, section)
        known = {f.name: f for f in fields(target)}
        for key, value in values.items():
            if key not in known:
                raise InputError(source, f"{section}.{key}", f"one of {', '.join(known)}")
            if key == "top_k" and value is not None:
                value = tuple(int(v) for v in value)
            setattr(target, key, value)


def load_config(spec: str | Path | None, *, dataset: str | None = None) -> GpoVaeConfig:
    """A named configuration ('rpe1', 'k562', 'adamson', 'tiny'), a YAML file, or None/'auto'.

    'auto' picks the dataset's published configuration (replogle_rpe1 -> rpe1, ...).
    """
    if spec is None or str(spec) == "auto":
        if dataset not in DATASET_CONFIGS:
            raise InputError("--config", "config", f"a named config ({', '.join(NAMED_CONFIGS)}) or a YAML file "
                             f"when the dataset is not one of {', '.join(DATASET_CONFIGS)}", repr(dataset))
        spec = DATASET_CONFIGS[dataset]
    spec = str(spec)
    if spec in NAMED_CONFIGS:
        path = CONFIG_DIR / f"{spec}.yaml"
        name = spec
    else:
        path = Path(spec)
        name = path.stem
        if not path.is_file():
            raise InputError(path, "config", f"a named config ({', '.join(NAMED_CONFIGS)}) or an existing YAML file",
                             "nothing at this path")
    raw = read_mapping(path, "config", "a mapping with sections data/model/loss/train/evaluate")
    cfg = load_config(raw["base"]) if raw.get("base") else GpoVaeConfig()
    cfg.name = str(raw.get("name", name))
    _apply(cfg, raw, str(path))
    return cfg


def config_from_dict(values: dict[str, Any]) -> GpoVaeConfig:
    """Rebuild a configuration saved with `to_dict` (checkpoints carry it)."""
    cfg = GpoVaeConfig(name=values.get("name", "custom"))
    _apply(cfg, {k: v for k, v in values.items() if k != "name"}, "checkpoint config")
    return cfg
