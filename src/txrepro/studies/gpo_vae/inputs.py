"""The gpo_vae inputs of one run: which of the paper's datasets were given, and their checksums.

The paper's Table 2 reports three datasets (Replogle RPE1, Replogle K562, Adamson). Each has its
own parameters (`gpo_vae_<rpe1|k562|adamson>_input`, `_summary_stats`, `_summary_sheet`,
`_input_checksum`); the older single-input form (`gpo_vae_input` keyed by `gpo_vae_dataset`) is one
more dataset. Every input file is checked, before any work, against the checksum the user gave and
against the checksum assets/data_manifest.tsv records for a file of that name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txrepro.errors import ChecksumError, InputError
from txrepro.io.checksum import cached_digest, parse_checksum
from txrepro.io.manifest import read_manifest
from txrepro.runtime import get_logger
from txrepro.studies.gpo_vae.config import DATASET_CONFIGS

log = get_logger(__name__)
STUDY = "gpo_vae"
PER_DATASET_FIELDS = ("input", "summary_stats", "summary_sheet", "input_checksum")


def dataset_param(dataset: str, field: str) -> str:
    """`gpo_vae_k562_input` for (replogle_k562, input)."""
    return f"gpo_vae_{DATASET_CONFIGS[dataset]}_{field}"


def per_dataset_params() -> list[str]:
    return [dataset_param(d, f) for d in DATASET_CONFIGS for f in PER_DATASET_FIELDS]


@dataclass(frozen=True)
class DatasetInputs:
    """One dataset of a run and the parameters it came from (named in errors)."""

    dataset: str
    input: str
    summary_stats: str | None = None
    summary_sheet: str | None = None
    input_checksum: str | None = None
    param_prefix: str = "gpo_vae"

    def files(self) -> list[tuple[str, str, str | None]]:
        """(parameter, path, user checksum) of each input file."""
        out = [(f"{self.param_prefix}_input", self.input, self.input_checksum)]
        if self.summary_stats:
            out.append((f"{self.param_prefix}_summary_stats", self.summary_stats, None))
        return out


def _text(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value).strip()


def datasets_from_params(params: Mapping[str, Any], check_dataset) -> list[DatasetInputs]:
    """The datasets whose input is given, in the paper's order (RPE1, K562, Adamson), then others."""
    out: list[DatasetInputs] = []
    for dataset, short in DATASET_CONFIGS.items():
        path = _text(params.get(dataset_param(dataset, "input")))
        if path:
            out.append(DatasetInputs(dataset, path, _text(params.get(dataset_param(dataset, "summary_stats"))),
                                     _text(params.get(dataset_param(dataset, "summary_sheet"))),
                                     _text(params.get(dataset_param(dataset, "input_checksum"))), f"gpo_vae_{short}"))
    legacy = _text(params.get("gpo_vae_input"))
    if legacy:
        dataset = check_dataset(str(params.get("gpo_vae_dataset") or "adamson"))
        if any(d.dataset == dataset for d in out):
            raise InputError("params", "gpo_vae_input", f"either gpo_vae_input with gpo_vae_dataset {dataset} or "
                             f"{dataset_param(dataset, 'input')}, not both", "both given")
        out.append(DatasetInputs(dataset, legacy, _text(params.get("gpo_vae_summary_stats")), _text(params.get("gpo_vae_summary_sheet")),
                                 _text(params.get("gpo_vae_input_checksum")), "gpo_vae"))
    return out


def not_provided(given: Iterable[str]) -> list[str]:
    """The paper's datasets without data in this run."""
    seen = set(given)
    return [d for d in DATASET_CONFIGS if d not in seen]


def _manifest_rows(manifest: str | os.PathLike[str] | None) -> dict[str, dict[str, str]]:
    """Checksummed gpo_vae rows by file name and by the last segment of their URL: Nextflow stages
    `https://ndownloader.figshare.com/files/35773219` as a file named `35773219`."""
    df = read_manifest(Path(manifest) if manifest else None)
    rows = df[(df["study"] == STUDY) & (df["checksum"] != "")]
    out: dict[str, dict[str, str]] = {}
    for _, r in rows.iterrows():
        row = {k: str(r[k]) for k in ("id", "checksum", "checksum_origin", "size_bytes")}
        out[str(r["file"])] = row
        tail = str(r["url"]).rstrip("/").rsplit("/", 1)[-1]
        if tail and "." not in tail and "=" not in tail and "?" not in tail:
            out.setdefault(tail, row)
    return out


def verify_files(files: Iterable[tuple[str, str | os.PathLike[str], str | None]], *, use_manifest: bool = True,
                 manifest: str | os.PathLike[str] | None = None) -> list[dict[str, str]]:
    """Check each (parameter, path, user checksum) before any work; one line naming the file on a mismatch.

    A file whose name has a checksum row in assets/data_manifest.tsv is checked against it (size
    first, which costs nothing, then the digest); a user checksum is checked as well. Each file is
    hashed once per process (`cached_digest`). Returns what was verified, for run_info.
    """
    rows = _manifest_rows(manifest) if use_manifest else {}
    done: list[dict[str, str]] = []
    for param, path, user_spec in files:
        p = Path(path)
        specs: list[tuple[str, str]] = []
        if user_spec:
            try:
                parse_checksum(user_spec)
            except ValueError:
                raise InputError("params", param.replace("_input", "_input_checksum") if param.endswith("_input") else param,
                                 "'md5:<hex>' or 'sha256:<hex>'", repr(user_spec)) from None
            specs.append((user_spec, f"the checksum given for {param}"))
        row = rows.get(p.name)
        if row:
            if not p.is_file():
                raise InputError(p, param, "an existing file", "nothing at this path")
            size = row["size_bytes"]
            if size.isdigit() and p.stat().st_size != int(size):
                raise InputError(p, "size", f"{int(size):,} bytes (assets/data_manifest.tsv row {row['id']}, {row['checksum_origin']})",
                                 f"{p.stat().st_size:,} bytes: an incomplete or different file")
            specs.append((row["checksum"], f"assets/data_manifest.tsv row {row['id']}, {row['checksum_origin']}"))
        for spec, origin in specs:
            algorithm, expected = parse_checksum(spec)
            log.info("verifying %s of %s (%s)", algorithm, p.name, origin)
            found = cached_digest(p, algorithm)
            if found != expected:
                raise ChecksumError(p, algorithm, f"{expected} ({origin})", found)
            done.append({"parameter": param, "file": p.name, "checksum": f"{algorithm}:{found}", "source": origin})
    return done
