"""Study registry.

A study is implemented when its package `txrepro.studies.<id>` has a `pipeline` module
(`STEPS`, `reproduce()`) and a `cli` module (`add_steps()`). Discovery is by import, so adding a
study touches no shared file here.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from txrepro import STUDY_IDS
from txrepro.errors import InputError, StudyNotImplemented


def _module(study: str, name: str) -> ModuleType | None:
    full = f"txrepro.studies.{study}.{name}"
    try:
        spec = importlib.util.find_spec(full)
    except ModuleNotFoundError:
        return None
    return importlib.import_module(full) if spec is not None else None


def pipeline_module(study: str) -> ModuleType | None:
    return _module(study, "pipeline")


def cli_module(study: str) -> ModuleType | None:
    return _module(study, "cli")


def implemented_studies() -> list[str]:
    return [s for s in STUDY_IDS if importlib.util.find_spec(f"txrepro.studies.{s}") is not None
            and _module(s, "pipeline") is not None]


def parse_selection(text: str, *, require_implemented: bool = True) -> list[str]:
    """`all` or a comma list of study ids, in canonical order.

    An unknown id is a user error; a known id without an implementation raises
    StudyNotImplemented when named explicitly (with `all`, the caller reports it instead).
    """
    text = text.strip()
    if text == "all":
        return list(STUDY_IDS)
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    if not wanted:
        raise InputError("--study", "study", f"'all' or a comma list of {', '.join(STUDY_IDS)}", repr(text))
    for s in wanted:
        if s not in STUDY_IDS:
            raise InputError("--study", "study", f"'all' or a comma list of {', '.join(STUDY_IDS)}", repr(s))
    if require_implemented:
        impl = implemented_studies()
        for s in wanted:
            if s not in impl:
                raise StudyNotImplemented(s, impl)
    return [s for s in STUDY_IDS if s in wanted]
