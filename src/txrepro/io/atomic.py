"""Atomic writers: write next to the target, then rename, so a crash leaves no partial output."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success.

    The temporary name keeps the target's suffix so libraries that infer the format from it
    (h5ad, png, csv.gz) still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{''.join(target.suffixes)}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path` (an older folder is removed)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove what a killed `atomic_dir(path)` / `atomic_path(path)` left beside `path`.

    Those temporaries are hidden siblings named `.<name>.*.tmp*` (and `.<name>.old` mid-swap);
    a new run into the same target calls this first so an interrupted run leaves nothing behind.
    """
    target = Path(path)
    if not target.parent.is_dir():
        return []
    stem = target.name if target.suffix == "" else target.stem
    removed = []
    for p in target.parent.glob(f".{stem}.*"):
        if ".tmp" in p.name[len(stem) + 2 :] or p.name == f".{target.name}.old":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
    return removed


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
