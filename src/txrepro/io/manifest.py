"""assets/data_manifest.tsv: where real inputs live and the checksums they must match."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from txrepro.io.tables import read_table
from txrepro.paths import assets_dir

MANIFEST_COLUMNS = ("study", "id", "file", "url", "size_bytes", "checksum", "checksum_origin", "access", "notes")


@dataclass(frozen=True)
class ManifestEntry:
    study: str
    id: str
    file: str
    url: str
    checksum: str | None
    checksum_origin: str
    access: str


def read_manifest(path: Path | None = None) -> pd.DataFrame:
    path = path or assets_dir() / "data_manifest.tsv"
    return read_table(path, MANIFEST_COLUMNS, sep="\t", what="data manifest", dtype=str, keep_default_na=False)


def manifest_entry(study: str, entry_id: str, path: Path | None = None) -> ManifestEntry | None:
    """The manifest row for (study, id), or None when the manifest does not know the file."""
    df = read_manifest(path)
    rows = df[(df["study"] == study) & (df["id"] == entry_id)]
    if rows.empty:
        return None
    r = rows.iloc[0]
    return ManifestEntry(
        study=r["study"],
        id=r["id"],
        file=r["file"],
        url=r["url"],
        checksum=r["checksum"] or None,
        checksum_origin=r["checksum_origin"],
        access=r["access"],
    )


def expected_checksum(study: str, file_name: str, path: Path | None = None) -> str | None:
    """Checksum recorded for a file name of a study (matched on the file column), if any."""
    df = read_manifest(path)
    rows = df[(df["study"] == study) & (df["file"] == file_name) & (df["checksum"] != "")]
    return None if rows.empty else str(rows.iloc[0]["checksum"])
