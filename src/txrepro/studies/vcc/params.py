"""Parameters of the vcc study, shared by the CLI, `reproduce()` and the Nextflow params.

Nextflow params are `vcc_<name>`; `from_params` reads the same keys so one params file serves
both front ends. Values may arrive as strings from a command line, so they are coerced here, in
one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from txrepro.errors import InputError
from txrepro.paths import assets_dir

DATASET = "vcc_h1_crispri"  # the published dataset (assets/published_metrics.tsv)
SPLIT = "test"
# What the published training file looks like (studies.md "vcc" section 1; no checksum is published
# for it, so these, with the bundled 30-gene test split, are how a run recognises it).
PUBLISHED_SHAPE = (221_273, 18_080)
PUBLISHED_PERTURBATIONS = 150
# Labelled alternatives (not in the published table): ridge / random forest on per-perturbation
# features (the ESM2 file or the PCA-loading fallback) instead of the original one-hot design.
FEATURE_MODELS = ("ridge_features", "random_forest_features")
DEFAULT_MODELS = ("cell_mean", "ridge", "random_forest", "state", "state_more_steps", "scgpt_zero_shot", "scgpt_finetuned", *FEATURE_MODELS)
STATE_MODELS = ("state", "state_more_steps")
SCGPT_MODELS = ("scgpt_zero_shot", "scgpt_finetuned")
TEST_GENES_ASSET = "vcc_test_genes.txt"
# Column-name params where '' means "no such column: skip the check" (not "unset").
EMPTY_MEANS_SKIP = ("gene_col", "batch_col", "guide_col")


def option(cli: str, param: str) -> str:
    """How an error names a setting: the step's option and the parameter of a params file / Nextflow."""
    return f"{cli} (parameter {param})"


def default_test_genes_path() -> Path:
    """The published 30-gene test list bundled in assets/ (with its source in the header)."""
    return assets_dir() / TEST_GENES_ASSET


@dataclass(frozen=True)
class DataParams:
    """Column names and preprocessing of the input h5ad (prepare step)."""

    pert_col: str = "target_gene"
    control: str = "non-targeting"
    gene_col: str = "gene_id"
    batch_col: str = "batch"
    guide_col: str = "guide_id"
    n_hvg: int = 2000
    seed: int = 42
    val_fraction: float = 0.2
    chunk_size: int = 10_000


@dataclass(frozen=True)
class ModelParams:
    """Model settings (predict step). Defaults are the project's where it stated them."""

    seed: int = 42
    n_pcs: int = 32  # fallback features: loadings on the top principal components of controls
    pca_cells: int = 5_000  # control cells used for that PCA (seeded subsample)
    ridge_alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)
    rf_trees: int = 100
    rf_components: int = 50  # random forest predicts this many PCs of the training effects


@dataclass(frozen=True)
class StateParams:
    """arc-state ST model (`state_sm` is the project's configuration; `tiny` trains on CPU in seconds).

    One training run serves both published STATE rows: `state` is the model after `max_steps`
    (the first run: 40,000 steps) and `state_more_steps` the same run at `more_steps_step` (the
    fourth run was evaluated at step 10,700 of its schedule; arc-state trains with a constant
    learning rate, so that checkpoint is the model after 10,700 steps).
    """

    config: str = "state_sm"
    hidden_dim: int = 672
    n_layers: int = 4  # Llama blocks
    n_heads: int = 8
    head_dim: int = 84
    intermediate_size: int = 2688
    n_encoder_layers: int = 4  # perturbation encoder MLP
    n_decoder_layers: int = 4  # output projection MLP
    cell_set_len: int = 128
    lr: float = 1e-4
    batch_size: int = 16  # cell sets per step
    max_steps: int = 40_000
    more_steps_step: int = 10_700
    val_freq: int = 2_000
    log_every: int = 50  # steps between logged training losses (Lightning's default)
    grad_clip: float = 10.0
    blur: float = 0.05  # geomloss energy distance
    bidirectional: bool = False  # the project's state_sm used causal attention (studies.md)
    predict_clip: float = 14.0  # `state tx infer` clips predictions to [0, 14]


STATE_PRESETS: dict[str, StateParams] = {
    "state_sm": StateParams(),
    "tiny": StateParams(config="tiny", hidden_dim=32, n_layers=1, n_heads=2, head_dim=16, intermediate_size=64,
                        n_encoder_layers=2, n_decoder_layers=2, cell_set_len=8, lr=1e-3, max_steps=300, more_steps_step=100,
                        val_freq=100, log_every=10),
}


@dataclass(frozen=True)
class ScGPTParams:
    """scGPT perturbation model (TransformerGenerator) as its perturbation tutorial trains it.

    `tutorial` are the tutorial's settings; `tiny` is for the CPU test profile. The architecture
    fields (embsize ... n_layers_cls) only apply without a checkpoint (random initialisation);
    with one, its args.json fixes them. Defaults are scGPT whole-human's.
    """

    config: str = "tutorial"
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-4
    lr_gamma: float = 0.9  # StepLR every epoch
    early_stop: int = 10  # epochs without a better validation loss (the tutorial's early_stop = 10)
    max_seq_len: int = 1536
    dropout: float = 0.2
    gene_set: str = "hvg"  # 'hvg': the prepared HVGs plus every perturbed gene (as GEARS data); 'all'
    min_gene_fraction: float = 0.5  # fail when fewer of those genes are in the vocabulary
    embsize: int = 512
    nheads: int = 8
    d_hid: int = 512
    nlayers: int = 12
    n_layers_cls: int = 3


SCGPT_PRESETS: dict[str, ScGPTParams] = {
    "tutorial": ScGPTParams(),
    "tiny": ScGPTParams(config="tiny", epochs=6, batch_size=32, lr=1e-3, dropout=0.0, embsize=32, nheads=2, d_hid=32, nlayers=2),
}


def preset(presets: dict[str, Any], name: str, param: str, overrides: Mapping[str, Any]) -> Any:
    """A preset by name with individual fields overridden (values coerced to the field types)."""
    if name not in presets:
        raise InputError("params", param, f"one of {', '.join(presets)}", repr(name))
    base = presets[name]
    kw = {}
    for f in fields(base):
        if f.name in overrides and overrides[f.name] is not None and f.name != "config":
            kw[f.name] = _coerce(f"{param.rsplit('_', 1)[0]}_{f.name}", overrides[f.name], type(getattr(base, f.name)))
    return replace(base, **kw)


@dataclass(frozen=True)
class VccRunParams:
    """Everything `reproduce()` needs, read from the `vcc_*` params."""

    input: Path | None = None
    features: Path | None = None
    support_set: Path | None = None
    test_genes: Path | None = None
    input_checksum: str | None = None
    dataset: str | None = None
    models: tuple[str, ...] = DEFAULT_MODELS
    threads: int = 1
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    state: StateParams = field(default_factory=StateParams)
    scgpt: ScGPTParams = field(default_factory=ScGPTParams)
    scgpt_checkpoint: Path | None = None
    scgpt_allow_random_init: bool = False
    scgpt_verify_checksums: bool = False
    device: str = "auto"

    @classmethod
    def from_params(cls, params: Mapping[str, Any], profile: str = "full") -> VccRunParams:
        """`profile` picks defaults: `test` -> the tiny STATE and scGPT settings, and scGPT from random
        initialisation (labelled so) unless a checkpoint is given, so the fixture run has every row."""
        def get(name: str) -> Any:
            v = params.get(f"vcc_{name}")
            return None if v is None or (isinstance(v, str) and v.strip() in ("", "null", "None")) else v

        data_kw: dict[str, Any] = {}
        for f in fields(DataParams):
            raw = params.get(f"vcc_{f.name}")
            if f.name in EMPTY_MEANS_SKIP and isinstance(raw, str) and raw.strip() == "":
                data_kw[f.name] = ""  # documented: an empty column name skips that column's check
                continue
            v = get(f.name)
            if v is not None:
                data_kw[f.name] = _coerce(f"vcc_{f.name}", v, type(getattr(DataParams(), f.name)))
        model_kw: dict[str, Any] = {}
        for f in fields(ModelParams):
            v = get(f.name)
            if v is None:
                continue
            default = getattr(ModelParams(), f.name)
            if isinstance(default, tuple):
                model_kw[f.name] = tuple(_coerce(f"vcc_{f.name}", x, float) for x in _as_list(v))
            else:
                model_kw[f.name] = _coerce(f"vcc_{f.name}", v, type(default))
        if "seed" in data_kw and "seed" not in model_kw:
            model_kw["seed"] = data_kw["seed"]
        models = tuple(_as_list(get("models"))) if get("models") is not None else DEFAULT_MODELS
        return cls(
            input=Path(get("input")) if get("input") else None,
            features=Path(get("features")) if get("features") else None,
            support_set=Path(get("support_set")) if get("support_set") else None,
            test_genes=Path(get("test_genes")) if get("test_genes") else None,
            input_checksum=str(get("input_checksum")) if get("input_checksum") else None,
            dataset=str(get("dataset")).strip() if get("dataset") else None,
            models=models,
            threads=_coerce("vcc_threads", get("threads") or 1, int),
            data=DataParams(**data_kw),
            model=ModelParams(**model_kw),
            state=preset(STATE_PRESETS, str(get("state_config") or ("tiny" if profile == "test" else "state_sm")), "vcc_state_config",
                         {f.name: get(f"state_{f.name}") for f in fields(StateParams)}),
            scgpt=preset(SCGPT_PRESETS, str(get("scgpt_config") or ("tiny" if profile == "test" else "tutorial")), "vcc_scgpt_config",
                         {f.name: get(f"scgpt_{f.name}") for f in fields(ScGPTParams)}),
            scgpt_checkpoint=Path(get("scgpt_checkpoint")) if get("scgpt_checkpoint") else None,
            scgpt_allow_random_init=_coerce("vcc_scgpt_allow_random_init", profile == "test" if get("scgpt_allow_random_init") is None
                                            else get("scgpt_allow_random_init"), bool),
            scgpt_verify_checksums=_coerce("vcc_scgpt_verify_checksums", profile != "test" if get("scgpt_verify_checksums") is None
                                           else get("scgpt_verify_checksums"), bool),
            device=str(params.get("device") or "auto"),
        )


def _as_list(v: Any) -> list[str]:
    if isinstance(v, (list, tuple)):
        return [str(x).strip() for x in v if str(x).strip()]
    return [x.strip() for x in str(v).split(",") if x.strip()]


def _coerce(name: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            return str(value).lower() in ("1", "true", "yes")
        return kind(value)
    except (TypeError, ValueError):
        raise InputError("params", name, f"a value of type {kind.__name__}", repr(value)) from None
