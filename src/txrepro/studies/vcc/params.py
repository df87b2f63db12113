"""Parameters of the vcc study, shared by the CLI, `reproduce()` and the Nextflow params.

Nextflow params are `vcc_<name>`; `from_params` reads the same keys so one params file serves
both front ends. Values may arrive as strings from a command line, so they are coerced here, in
one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from txrepro.errors import InputError
from txrepro.paths import assets_dir

DATASET = "vcc_h1_crispri"
SPLIT = "test"
DEFAULT_MODELS = ("cell_mean", "ridge", "random_forest")
TEST_GENES_ASSET = "vcc_test_genes.txt"


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
class VccRunParams:
    """Everything `reproduce()` needs, read from the `vcc_*` params."""

    input: Path | None = None
    features: Path | None = None
    test_genes: Path | None = None
    input_checksum: str | None = None
    models: tuple[str, ...] = DEFAULT_MODELS
    threads: int = 1
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> VccRunParams:
        def get(name: str) -> Any:
            v = params.get(f"vcc_{name}")
            return None if v is None or (isinstance(v, str) and v.strip() in ("", "null", "None")) else v

        data_kw: dict[str, Any] = {}
        for f in fields(DataParams):
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
            test_genes=Path(get("test_genes")) if get("test_genes") else None,
            input_checksum=str(get("input_checksum")) if get("input_checksum") else None,
            models=models,
            threads=_coerce("vcc_threads", get("threads") or 1, int),
            data=DataParams(**data_kw),
            model=ModelParams(**model_kw),
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
