"""Readers that validate and writers that never leave half a file behind."""

from txrepro.io.atomic import atomic_dir, atomic_path, write_json, write_text
from txrepro.io.checksum import file_digest, verify_checksum
from txrepro.io.tables import read_table

__all__ = [
    "atomic_dir",
    "atomic_path",
    "file_digest",
    "read_table",
    "verify_checksum",
    "write_json",
    "write_text",
]
