"""Checksums of input files, checked before any work starts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from txrepro.errors import ChecksumError, InputError

_ALGORITHMS = ("sha256", "md5")


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks so multi-GB inputs do not fill memory."""
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"unsupported checksum algorithm {algorithm!r}")
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "file", "an existing file", "nothing at this path")
    h = hashlib.new(algorithm)
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_checksum(spec: str) -> tuple[str, str]:
    """'sha256:abc…' or 'md5:abc…' into (algorithm, hex)."""
    algorithm, sep, digest = spec.strip().partition(":")
    if not sep or algorithm not in _ALGORITHMS or not digest:
        raise ValueError(f"checksum must look like 'sha256:<hex>' or 'md5:<hex>', got {spec!r}")
    return algorithm, digest.lower()


def verify_checksum(path: str | os.PathLike[str], spec: str | None) -> None:
    """Raise ChecksumError naming the file when its digest differs; no-op when spec is empty."""
    if not spec:
        return
    algorithm, expected = parse_checksum(spec)
    found = file_digest(path, algorithm)
    if found != expected:
        raise ChecksumError(path, algorithm, expected, found)
