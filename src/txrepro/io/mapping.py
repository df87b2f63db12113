"""YAML/JSON files that must hold a mapping (params files, configs), read with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from txrepro.errors import InputError


def read_mapping(path: str | os.PathLike[str], what: str, expected: str = "a mapping of names to values") -> dict[str, Any]:
    """A YAML or JSON file (JSON is YAML) whose top level is a mapping; empty files give {}."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, what, "an existing YAML or JSON file", "nothing at this path")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        raise InputError(p, what, "valid YAML or JSON") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(p, what, expected, type(data).__name__)
    return data
