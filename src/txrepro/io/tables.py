"""Delimited tables read with their required columns checked up front."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from txrepro.errors import InputError


def read_table(
    path: str | os.PathLike[str],
    required: Sequence[str] = (),
    *,
    sep: str | None = None,
    what: str = "table",
    **read_kwargs,
) -> pd.DataFrame:
    """Read a CSV/TSV (separator from the suffix unless given) and check its columns.

    Errors name the file and the missing column and list what the file has, so a user can fix
    a header without opening a debugger.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, what, "an existing file", "nothing at this path")
    if sep is None:
        sep = "\t" if p.name.endswith((".tsv", ".tsv.gz", ".txt")) else ","
    try:
        df = pd.read_csv(p, sep=sep, **read_kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise InputError(p, what, f"a readable {'TSV' if sep == chr(9) else 'CSV'} file", type(exc).__name__) from None
    except pd.errors.EmptyDataError:
        raise InputError(p, what, "a header line and rows", "an empty file") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(
            p,
            f"column '{missing[0]}'",
            f"columns {', '.join(required)}",
            f"columns {', '.join(map(str, df.columns))}",
        )
    return df
