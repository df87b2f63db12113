"""Mapping a dataset's genes onto a model vocabulary, counting what does not map.

scgpt's GeneVocab returns the `<pad>` id for an unknown gene (its default index), and padded
tokens are masked out: a dataset keyed by Ensembl ids, or with many renamed symbols, would feed the
model almost nothing and still produce numbers. Mapping goes through here instead: unmapped genes
are counted and reported, and too few mapped genes stop the run with one line.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from txrepro.errors import InputError
from txrepro.runtime import get_logger

log = get_logger(__name__)

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")


def read_vocab_json(path: str | os.PathLike[str]) -> dict[str, int]:
    """token -> id of a vocab.json, checked for consecutive ids and scGPT's <pad> and <cls>.

    Plain dict, no scgpt import: enough to map genes before any model is built.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "vocab.json", "a JSON object of token -> id", "nothing at this path")
    try:
        token2idx = json.loads(p.read_text())
    except json.JSONDecodeError:
        raise InputError(p, "vocab.json", "a JSON object of token -> id") from None
    if not isinstance(token2idx, dict) or not token2idx:
        raise InputError(p, "vocab.json", "a non-empty JSON object of token -> id")
    ids = sorted(token2idx.values())
    if ids != list(range(len(ids))):
        raise InputError(p, "vocab.json", "consecutive token ids 0..n-1", f"ids from {ids[0]} to {ids[-1]} for {len(ids)} tokens")
    for special in ("<pad>", "<cls>"):
        if special not in token2idx:
            raise InputError(p, f"token '{special}'", "scGPT's special tokens <pad> and <cls>")
    return {str(k): int(v) for k, v in token2idx.items()}


def looks_like_ensembl(genes: Sequence[str], fraction: float = 0.5) -> bool:
    """True when at least `fraction` of the identifiers are Ensembl gene ids (ENSG..., ENSMUSG...)."""
    if len(genes) == 0:
        return False
    hits = sum(1 for g in genes if _ENSEMBL.match(str(g)))
    return hits / len(genes) >= fraction


@dataclass(frozen=True)
class GeneVocabMapping:
    """Vocabulary ids of a gene list; `ids` is -1 where a gene is not in the vocabulary."""

    genes: tuple[str, ...]
    ids: np.ndarray
    unmapped: tuple[str, ...]

    @property
    def mapped(self) -> np.ndarray:
        return self.ids >= 0

    @property
    def n_mapped(self) -> int:
        return int(self.mapped.sum())

    @property
    def fraction_mapped(self) -> float:
        return self.n_mapped / len(self.genes) if self.genes else 0.0

    def summary(self) -> str:
        head = ", ".join(self.unmapped[:5]) + (" ..." if len(self.unmapped) > 5 else "")
        return f"{self.n_mapped}/{len(self.genes)} genes in the vocabulary ({self.fraction_mapped:.1%}); unmapped: {head or 'none'}"


def map_genes_to_vocab(
    genes: Sequence[str],
    vocab: Any,
    *,
    min_fraction: float = 0.5,
    source: str | os.PathLike[str] = "input",
    field: str = "var gene symbols",
) -> GeneVocabMapping:
    """Look every gene up with `in` (never the vocab's default index) and enforce `min_fraction`.

    `vocab` is anything with `__contains__` and `__getitem__` (GeneVocab, torchtext Vocab, dict).
    """
    genes = tuple(str(g) for g in genes)
    if looks_like_ensembl(genes):
        raise InputError(source, field, "HGNC gene symbols (the scGPT vocabulary is keyed by symbols)", f"Ensembl ids such as {genes[0]}")
    ids = np.array([vocab[g] if g in vocab else -1 for g in genes], dtype=np.int64)
    unmapped = tuple(g for g, i in zip(genes, ids) if i < 0)
    mapping = GeneVocabMapping(genes, ids, unmapped)
    log.info("gene vocabulary: %s", mapping.summary())
    if not genes or mapping.fraction_mapped < min_fraction:
        raise InputError(
            source,
            field,
            f"at least {min_fraction:.0%} of the genes in the model vocabulary",
            f"{mapping.n_mapped} of {len(genes)} ({mapping.fraction_mapped:.1%}); unmapped e.g. {', '.join(unmapped[:3])}",
        )
    return mapping
