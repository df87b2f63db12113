"""Where the package finds its bundled assets (published numbers, manifest, AgeAnno tables)."""

from __future__ import annotations

import os
from pathlib import Path


def assets_dir() -> Path:
    """The assets/ folder: TXREPRO_ASSETS, else the repository's, else the installed copy."""
    env = os.environ.get("TXREPRO_ASSETS")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    repo_assets = here.parents[2] / "assets"  # src/txrepro/paths.py -> repo root
    if repo_assets.is_dir():
        return repo_assets
    return here.parent / "assets"  # wheel installs ship a copy (see pyproject force-include)


def published_metrics_path() -> Path:
    return assets_dir() / "published_metrics.tsv"
