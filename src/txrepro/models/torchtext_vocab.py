"""A pure-Python stand-in for `torchtext.vocab` so that scgpt 0.2.4 imports on current torch.

scgpt 0.2.4 imports `torchtext.vocab` at import time, but only for `Vocab` (the base class of
`scgpt.tokenizer.GeneVocab`) and the `vocab()` factory. torchtext is deprecated and its compiled
library does not load with any current torch (undefined C++ symbols), so txrepro registers this
module under the names `torchtext` and `torchtext.vocab` before the first `import scgpt`, and only
when the real package cannot be imported. The behaviour copies torchtext 0.16's C++ `Vocab` on the
operations scgpt uses (lookup with and without a default index, insert, append, stoi/itos); the
tests check it against scgpt's own `GeneVocab`.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from collections.abc import Iterable, Mapping
from types import ModuleType

from torch import nn

from txrepro.runtime import get_logger

log = get_logger(__name__)

STAND_IN_FLAG = "__txrepro_stand_in__"
__txrepro_stand_in__ = True  # marks this module when it is registered as torchtext.vocab


class _VocabStore:
    """What torchtext's C++ `VocabPybind` holds: itos, stoi and an optional default index."""

    def __init__(self, tokens: Iterable[str], default_index: int | None = None) -> None:
        self.itos: list[str] = []
        self.stoi: dict[str, int] = {}
        for token in tokens:
            self.append_token(token)
        self.default_index = default_index

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __getitem__(self, token: str) -> int:
        index = self.stoi.get(token)
        if index is not None:
            return index
        if self.default_index is None:
            raise RuntimeError(f"Token {token} not found and default index is not set")
        return self.default_index

    def insert_token(self, token: str, index: int) -> None:
        if index < 0 or index > len(self.itos):
            raise RuntimeError(f"Specified index {index} is out of bounds for vocab of size {len(self.itos)}")
        if token in self.stoi:
            raise RuntimeError(f"Token {token} already exists in the Vocab with index: {self.stoi[token]}")
        self.itos.insert(index, token)
        for i in range(index, len(self.itos)):  # tokens after the insertion point shift by one
            self.stoi[self.itos[i]] = i

    def append_token(self, token: str) -> None:
        if token in self.stoi:
            raise RuntimeError(f"Token {token} already exists in the Vocab with index: {self.stoi[token]}")
        self.stoi[token] = len(self.itos)
        self.itos.append(token)

    def lookup_token(self, index: int) -> str:
        if index < 0 or index >= len(self.itos):
            raise RuntimeError(f"Specified index {index} is out of bounds of the size of itos dictionary: {len(self.itos)}")
        return self.itos[index]


class Vocab(nn.Module):
    """torchtext.vocab.Vocab: an nn.Module wrapping a token store (`self.vocab`).

    `GeneVocab.__init__` calls `super().__init__(other.vocab)`, so the store is passed around and
    shared exactly as in torchtext.
    """

    def __init__(self, vocab: _VocabStore) -> None:
        super().__init__()
        self.vocab = vocab

    @property
    def is_jitable(self) -> bool:
        return False

    def forward(self, tokens: list[str]) -> list[int]:
        return self.lookup_indices(tokens)

    def __len__(self) -> int:
        return len(self.vocab)

    def __contains__(self, token: object) -> bool:
        return token in self.vocab

    def __getitem__(self, token: str) -> int:
        return self.vocab[token]

    def set_default_index(self, index: int | None) -> None:
        self.vocab.default_index = index

    def get_default_index(self) -> int | None:
        return self.vocab.default_index

    def insert_token(self, token: str, index: int) -> None:
        self.vocab.insert_token(token, index)

    def append_token(self, token: str) -> None:
        self.vocab.append_token(token)

    def lookup_token(self, index: int) -> str:
        return self.vocab.lookup_token(index)

    def lookup_tokens(self, indices: Iterable[int]) -> list[str]:
        return [self.vocab.lookup_token(i) for i in indices]

    def lookup_indices(self, tokens: Iterable[str]) -> list[int]:
        return [self.vocab[t] for t in tokens]

    def get_stoi(self) -> dict[str, int]:
        return dict(self.vocab.stoi)

    def get_itos(self) -> list[str]:
        return list(self.vocab.itos)


def vocab(
    ordered_dict: Mapping[str, int],
    min_freq: int = 1,
    specials: list[str] | None = None,
    special_first: bool = True,
) -> Vocab:
    """torchtext.vocab.vocab: tokens with frequency >= min_freq, in the mapping's order."""
    specials = list(specials or [])
    counts = dict(ordered_dict)
    for token in specials:
        counts.pop(token, None)
    tokens = [t for t, freq in counts.items() if freq >= min_freq]
    tokens = specials + tokens if special_first else tokens + specials
    return Vocab(_VocabStore(tokens))


def _real_torchtext_vocab() -> tuple[ModuleType | None, str]:
    """The importable real `torchtext.vocab`, or None and why not."""
    existing = sys.modules.get("torchtext.vocab")
    if existing is not None:
        return existing, "already imported"
    try:
        return importlib.import_module("torchtext.vocab"), "installed"
    except ModuleNotFoundError:
        return None, "not installed"
    except (ImportError, OSError) as exc:  # installed but its C++ library does not match torch
        for name in [m for m in sys.modules if m == "torchtext" or m.startswith("torchtext.")]:
            del sys.modules[name]
        return None, f"installed but broken ({type(exc).__name__})"


def install_torchtext_stand_in() -> bool:
    """Register this module as `torchtext.vocab` unless a working torchtext exists.

    Returns True when the stand-in is (now or already) the active `torchtext.vocab`.
    """
    real, why = _real_torchtext_vocab()
    if real is not None:
        return bool(getattr(real, STAND_IN_FLAG, False))
    package = types.ModuleType("torchtext")
    package.__path__ = []  # a package, so `import torchtext.vocab` resolves through sys.modules
    setattr(package, STAND_IN_FLAG, True)
    module = sys.modules[__name__]
    package.vocab = module  # type: ignore[attr-defined]
    sys.modules["torchtext"] = package
    sys.modules["torchtext.vocab"] = module
    log.debug("torchtext %s: using txrepro's pure-Python torchtext.vocab stand-in", why)
    return True


def import_scgpt() -> ModuleType:
    """Import scgpt with the torchtext stand-in in place and flash-attn's absence made quiet.

    flash-attn is a GPU-only optional dependency; txrepro always builds scGPT models with
    `use_fast_transformer=False` and maps fused checkpoint keys itself (scgpt_checkpoint.py).
    """
    if "scgpt" in sys.modules:
        return sys.modules["scgpt"]
    install_torchtext_stand_in()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flash_attn is not installed")
        import scgpt
    import logging

    logging.getLogger("scGPT").setLevel(logging.WARNING)  # scgpt logs every binning warning at INFO
    return scgpt

