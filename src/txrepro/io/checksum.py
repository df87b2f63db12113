"""Checksums of input files, checked before any work starts."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from txrepro.errors import ChecksumError, InputError

_ALGORITHMS = ("sha256", "md5")
log = logging.getLogger(__name__)


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
    found = cached_digest(path, algorithm)
    if found != expected:
        raise ChecksumError(path, algorithm, expected, found)


# Digests already computed in this process, keyed on the file's identity: a 10 GB input shared by
# two datasets or read by two steps of one run is hashed once.
_DIGESTS: dict[tuple[str, int, int, str], str] = {}
PROGRESS_EVERY_S = 10.0


def cached_digest(path: str | os.PathLike[str], algorithm: str = "sha256", *, progress_every_s: float | None = None) -> str:
    """`file_digest` that logs its progress on large files and remembers what it computed.

    The key is (resolved path, size, modification time), so a file changed on disk is hashed again.
    Progress goes to the log every `progress_every_s` seconds (default PROGRESS_EVERY_S): verifying a
    10 GB file by md5 takes about a minute even on a fast disk.
    """
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"unsupported checksum algorithm {algorithm!r}")
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "file", "an existing file", "nothing at this path")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, algorithm)
    if key in _DIGESTS:
        return _DIGESTS[key]
    every = PROGRESS_EVERY_S if progress_every_s is None else progress_every_s
    h = hashlib.new(algorithm)
    start = last = time.monotonic()
    done = 0
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
            done += len(chunk)
            now = time.monotonic()
            if now - last >= every:
                last = now
                log.info("%s of %s: %.0f%% (%.1f of %.1f GB, %.0f MB/s)", algorithm, p.name, 100 * done / max(st.st_size, 1),
                         done / 1e9, st.st_size / 1e9, done / 1e6 / max(now - start, 1e-9))
    digest = h.hexdigest()
    if time.monotonic() - start >= every:
        log.info("%s of %s: done in %.0f s", algorithm, p.name, time.monotonic() - start)
    _DIGESTS[key] = digest
    return digest
