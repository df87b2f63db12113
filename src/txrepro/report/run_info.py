"""run_info.json: what a study run used (fixture or provided data, inputs, parameters, versions)."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from txrepro import STUDY_IDS, __version__
from txrepro.errors import InputError
from txrepro.io.atomic import write_json

DataSource = Literal["fixture", "provided", "missing"]


def write_run_info(
    path: str | os.PathLike[str],
    study: str,
    data_source: DataSource,
    *,
    inputs: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    status: str = "ok",
) -> Path:
    """Record provenance beside metrics.tsv; the report shows `data_source` on every row."""
    if study not in STUDY_IDS:
        raise ValueError(f"unknown study {study!r}")
    if data_source not in ("fixture", "provided", "missing"):
        raise ValueError(f"unknown data source {data_source!r}")
    return write_json(
        path,
        {
            "study": study,
            "data_source": data_source,
            "status": status,
            "inputs": dict(inputs or {}),
            "params": dict(params or {}),
            "txrepro_version": __version__,
            "python": platform.python_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


def read_run_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        info = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(p, "run info", "an existing run_info.json", "nothing at this path") from None
    except json.JSONDecodeError:
        raise InputError(p, "run info", "a JSON object") from None
    for key in ("study", "data_source"):
        if key not in info:
            raise InputError(p, f"key '{key}'", f"a '{key}' entry")
    return info
