"""User-facing errors.

Anything a user can fix (a missing column, a wrong checksum, an unindexed VCF) is raised as
`InputError`; the command line prints it as one line naming the file, the field and what was
expected, with no traceback, and exits with status 2. Bugs stay ordinary exceptions.
"""

from __future__ import annotations

from os import PathLike


class TxreproError(Exception):
    """Base class of errors that are reported as one line without a traceback."""


class InputError(TxreproError):
    """Bad input: names the file, the field and what was expected."""

    def __init__(
        self,
        file: str | PathLike[str],
        field: str,
        expected: str,
        found: str | None = None,
    ) -> None:
        self.file = str(file)
        self.field = field
        self.expected = expected
        self.found = found
        message = f"{self.file}: {field}: expected {expected}"
        if found is not None:
            message += f"; found {found}"
        super().__init__(message)


class ChecksumError(InputError):
    """A file whose checksum differs from the one recorded for it."""

    def __init__(self, file: str | PathLike[str], algorithm: str, expected: str, found: str) -> None:
        super().__init__(file, f"{algorithm} checksum", expected, found)


class StudyNotImplemented(TxreproError):
    """A study id that is valid but has no implementation in this version."""

    def __init__(self, study: str, implemented: list[str]) -> None:
        super().__init__(
            f"study '{study}' is not implemented in this version of txrepro "
            f"(implemented: {', '.join(implemented) or 'none'})"
        )
