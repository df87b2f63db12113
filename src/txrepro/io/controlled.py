"""Controlled-access inputs: outputs name them by file name and checksum, never by path.

Individual-level data under a data use agreement (ROSMAP and GTEx genotypes and expression, and
the sample lists naming their individuals) must not leave a trace of where it lives on a machine
in any file a run writes: run_info.json, a prepared folder's manifest, the report's workflow
summary. A study lists its parameters that take such files in `CONTROLLED_PARAMS`; a file whose
name matches an `open` row of assets/data_manifest.tsv for that study (e.g. the GEUVADIS VCFs) is
public and keeps its path. Reference data (FASTA, gene tables, gene lists) is not listed.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from txrepro.errors import InputError
from txrepro.io.checksum import file_digest

WITHHELD = "path withheld (controlled input)"

# study -> parameters (Nextflow / params-file keys) that take individual-level input files
CONTROLLED_PARAMS: dict[str, tuple[str, ...]] = {
    "sage_net": (
        "sage_net_vcf", "sage_net_expression", "sage_net_covariates",
        "sage_net_train_samples", "sage_net_val_samples", "sage_net_test_samples",
        "sage_net_external_vcf", "sage_net_external_expression", "sage_net_external_samples",
    ),
}


@lru_cache(maxsize=None)
def _open_patterns(study: str) -> tuple[str, ...]:
    from txrepro.io.manifest import read_manifest

    df = read_manifest()
    rows = df[(df["study"] == study) & (df["access"] == "open")]
    return tuple(str(f).replace("{N}", "*") for f in rows["file"] if f and not str(f).startswith("("))


def is_public(study: str, path: str | os.PathLike[str]) -> bool:
    """True when the file name matches an open-access entry of the data manifest for `study`."""
    name = Path(path).name
    return any(fnmatch.fnmatchcase(name, pat) for pat in _open_patterns(study))


@lru_cache(maxsize=256)
def _digest(resolved: str, size: int, mtime_ns: int) -> str:
    return file_digest(resolved, "sha256")


def checksum(path: str | os.PathLike[str]) -> str | None:
    """sha256 of a file (computed once per file version in a process), None when unreadable."""
    p = Path(path)
    try:
        st = p.stat()
        return "sha256:" + _digest(str(p.resolve()), st.st_size, st.st_mtime_ns)
    except (OSError, ValueError, InputError):
        return None


def input_record(path: str | os.PathLike[str], *, study: str) -> str | dict[str, Any]:
    """What an output file may say about an input: the path itself when public, else
    {file, sha256, size_bytes, path: withheld}."""
    if is_public(study, path):
        return str(path)
    p = Path(path)
    rec: dict[str, Any] = {"file": p.name, "path": WITHHELD}
    digest = checksum(p)
    if digest:
        rec["checksum"] = digest
        rec["size_bytes"] = p.stat().st_size
    return rec


def controlled_keys(params: Mapping[str, Any]) -> list[str]:
    """Parameters of `params` that name individual-level input files (any study)."""
    keys = {k for ks in CONTROLLED_PARAMS.values() for k in ks}
    return [k for k in params if k in keys and params[k] not in (None, "", "null", "None", False)]


def _study_of(key: str) -> str:
    return next(s for s, ks in CONTROLLED_PARAMS.items() if key in ks)


def redact_params(params: Mapping[str, Any], *, with_checksum: bool = False) -> dict[str, Any]:
    """`params` with every controlled input file replaced by `name (path withheld ...)`.

    `with_checksum` adds the file's sha256 (reads the file: use where it is at hand, e.g. the
    step that used it; the report only names it, since a Nextflow report task does not stage it).
    """
    out = dict(params)
    for key in controlled_keys(params):
        value = str(params[key])
        if is_public(_study_of(key), value):
            continue
        text = f"{Path(value).name} ({WITHHELD}"
        digest = checksum(value) if with_checksum else None
        out[key] = text + (f", {digest})" if digest else ")")
    return out


__all__ = ["CONTROLLED_PARAMS", "WITHHELD", "checksum", "controlled_keys", "input_record", "is_public", "redact_params"]
