"""The learned GRN: edge export, CausalBench statistical evaluation and reference-network precision/recall.

Statistical evaluation (CausalBench, as the original predictor): test-split cells, normalise (median
total) + log1p, the treatment gene universe (perturbed genes, then FC3 genes). A predicted edge
parent -> child is a true positive when a two-sided Mann-Whitney U test of the child's expression in
control cells versus cells where the parent is perturbed gives p < 0.05; the Wasserstein distance of
the same two samples is averaged over edges. Only the perturbed x perturbed block can be tested.
"""

from __future__ import annotations

import io
import os
import pickle
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu, wasserstein_distance

from txrepro.errors import InputError
from txrepro.runtime import get_logger
from txrepro.studies.gpo_vae.config import CONTROL_LABEL

log = get_logger(__name__)

Edge = tuple[int, int]
NETWORK_SUFFIXES = (".tsv", ".csv", ".txt", ".pkl", ".pickle", ".tsv.gz", ".csv.gz")


def predicted_edges(prob: np.ndarray, threshold: float, *, rows: int | None = None, cols: int | None = None, self_loops: bool = False) -> list[Edge]:
    """(parent, child) index pairs with probability > threshold in the block [:rows, :cols]."""
    P = prob[: rows if rows is not None else prob.shape[0], : cols if cols is not None else prob.shape[1]]
    adj = P > threshold
    if not self_loops:
        n = min(adj.shape)
        adj[np.arange(n), np.arange(n)] = False
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(adj))]


@dataclass
class EdgeTests:
    true_positives: int = 0
    false_positives: int = 0
    wasserstein: list[float] = field(default_factory=list)
    p_values: list[float] = field(default_factory=list)

    @property
    def mean_wasserstein(self) -> float:
        return float(np.mean(self.wasserstein)) if self.wasserstein else float("nan")


@dataclass
class StatisticalEvaluation:
    output_graph: EdgeTests
    paths: list[EdgeTests]  # new edges reachable by paths of length 2, 3, ...
    false_omission_rate: float  # the original estimator (see `random_pairs_original`)
    negative_mean_wasserstein: float
    n_random_pairs: int
    false_omission_rate_block: float  # extension: non-edges drawn inside the testable block
    n_block_pairs: int
    random_tests: EdgeTests


class CausalBenchEvaluator:
    """Mann-Whitney / Wasserstein tests of edges on held-out cells (the original `statistical_evaluation`)."""

    def __init__(self, expression: np.ndarray, labels: Iterable[str], treatments: list[str], n_perturbed: int, *,
                 p_value_threshold: float = 0.05, n_universe: int | None = None) -> None:
        """`n_universe`: size of the original's gene universe (perturbed + FC3 genes), from which the
        false-omission pairs are drawn; the treatments by default."""
        self.expression = np.asarray(expression)
        self.treatments = treatments
        self.n_perturbed = n_perturbed
        self.n_universe = n_universe or len(treatments)
        self.p_value_threshold = p_value_threshold
        labels = np.asarray(list(labels)).astype(str)
        self.rows: dict[str, np.ndarray] = {lab: np.flatnonzero(labels == lab) for lab in set(labels)}
        if CONTROL_LABEL not in self.rows:
            raise ValueError("no control cells among the evaluation cells")

    def testable(self, i: int) -> bool:
        return i < self.n_perturbed and self.treatments[i] in self.rows

    def test(self, edges: Mapping[int, Iterable[int]]) -> EdgeTests:
        out = EdgeTests()
        ctrl = self.rows[CONTROL_LABEL]
        for parent in edges:
            if not self.testable(parent):
                continue
            cells = self.rows[self.treatments[parent]]
            for child in sorted(edges[parent]):
                observational = self.expression[ctrl, child]
                interventional = self.expression[cells, child]
                p = float(mannwhitneyu(observational, interventional).pvalue)
                out.wasserstein.append(float(wasserstein_distance(observational, interventional)))
                out.p_values.append(p)
                if p < self.p_value_threshold:
                    out.true_positives += 1
                else:
                    out.false_positives += 1
        return out

    def evaluate(self, edges: list[Edge], *, max_path_length: int = 3, omission_estimation_size: int = 500, seed: int = 0) -> StatisticalEvaluation:
        """Output graph, path closure up to `max_path_length`, and false omission rates."""
        k, n = self.n_perturbed, len(self.treatments)
        block = as_dict((a, b) for a, b in edges if a < k and b < k)
        output = self.test(block)
        # Path closure as the original: each round adds the neighbours' neighbours of the current
        # closure (so round r reaches paths of length up to 2^r) and drops self-pairs; the pairs new in
        # a round are tested inside the perturbed block (the original's `<=` bound let one extended
        # gene in: fixed, these numbers are not published).
        C = np.zeros((n, n), dtype=bool)
        for a, b in edges:
            C[a, b] = True
        path_results: list[EdgeTests] = []
        for _ in range(max_path_length - 1):
            deeper = C | ((C.astype(np.float32) @ C.astype(np.float32)) > 0)
            np.fill_diagonal(deeper, False)
            deeper &= C.any(axis=1, keepdims=True)  # only nodes with out-edges, as the dict version
            if np.array_equal(deeper, C):
                break
            new = deeper & ~C
            path_results.append(self.test(as_dict((int(a), int(b)) for a, b in zip(*np.nonzero(new[:k, :k])))))
            C = deeper
        connected = {(int(a), int(b)) for a, b in zip(*np.nonzero(C))}
        rng = random.Random(seed)
        pairs = self.random_pairs_original(rng, omission_estimation_size)
        random_tests = self.test(as_dict((a, b) for a, b in pairs if a < k and b < k))
        n_sig = random_tests.true_positives
        fo_rate = n_sig / len(pairs) if pairs else float("nan")
        block_pairs = self.random_pairs_block(rng, omission_estimation_size, exclude=connected | set(edges))
        block_tests = self.test(as_dict(block_pairs))
        tested = block_tests.true_positives + block_tests.false_positives
        return StatisticalEvaluation(
            output_graph=output,
            paths=path_results,
            false_omission_rate=fo_rate,
            negative_mean_wasserstein=random_tests.mean_wasserstein,
            n_random_pairs=len(pairs),
            false_omission_rate_block=block_tests.true_positives / tested if tested else float("nan"),
            n_block_pairs=tested,
            random_tests=random_tests,
        )

    def random_pairs_original(self, rng: random.Random, size: int) -> list[Edge]:
        """The original estimator's pairs: distinct ordered pairs from the whole treatment universe.

        The original meant to skip predicted (path-connected) pairs but compared gene names with
        integer keys, so nothing is skipped; only pairs of two perturbed genes can be tested, yet the
        rate divides by all drawn pairs. Both kept. The draw stops at the number of distinct pairs
        when the universe is smaller than `size` (the original would loop forever there).
        """
        n = self.n_universe
        target = min(size, n * (n - 1))
        chosen: set[Edge] = set()
        while len(chosen) < target:
            a, b = rng.sample(range(n), 2)
            chosen.add((a, b))
        return sorted(chosen)

    def random_pairs_block(self, rng: random.Random, size: int, exclude: set[Edge]) -> list[Edge]:
        """Extension: ordered non-edges between two testable perturbed genes, off the predicted closure."""
        idx = [i for i in range(self.n_perturbed) if self.testable(i)]
        candidates = [(a, b) for a in idx for b in idx if a != b and (a, b) not in exclude]
        if len(candidates) <= size:
            return candidates
        return sorted(rng.sample(candidates, size))


def as_dict(edges: Iterable[Edge]) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for a, b in edges:
        out.setdefault(a, set()).add(b)
    return out


# reference networks --------------------------------------------------------------------------------


class _EdgeListUnpickler(pickle.Unpickler):
    """Only builtin containers and strings: a reference pickle cannot run code."""

    ALLOWED = {("builtins", n) for n in ("list", "tuple", "set", "frozenset", "str", "dict", "int")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            import builtins

            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an edge-list pickle")


def read_edge_list(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """A reference network: pickle of (source, target) pairs (the original bioeval/*.pkl), or a
    TSV/CSV with a header whose columns 'source' and 'target' (else the first two columns) hold
    gene ids or symbols."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".pkl", ".pickle")):
        try:
            obj = _EdgeListUnpickler(io.BytesIO(p.read_bytes())).load()
        except Exception as exc:
            raise InputError(p, "reference network", "a pickle of (source, target) pairs of gene ids", type(exc).__name__) from None
        try:
            edges = [(str(a), str(b)) for a, b in obj]
        except (TypeError, ValueError):
            raise InputError(p, "reference network", "a pickle of (source, target) pairs of gene ids", type(obj).__name__) from None
        return edges
    sep = "," if ".csv" in name else "\t"
    try:
        df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise InputError(p, "reference network", f"a {'CSV' if sep == ',' else 'TSV'} edge list with a header", type(exc).__name__) from None
    cols = {c.lower(): c for c in df.columns}
    if "source" in cols and "target" in cols:
        a, b = cols["source"], cols["target"]
    elif df.shape[1] >= 2:
        a, b = df.columns[0], df.columns[1]
    else:
        raise InputError(p, "columns", "two columns (source, target)", f"{df.shape[1]} column(s)")
    return list(zip(df[a].str.strip(), df[b].str.strip()))


def find_reference_networks(location: str | os.PathLike[str]) -> dict[str, Path]:
    """Files of a folder named after the database (biogrid.pkl, corum.tsv, ...), or one file."""
    p = Path(location)
    if p.is_file():
        return {p.name.split(".")[0]: p}
    if not p.is_dir():
        raise InputError(p, "reference networks", "a folder of edge lists (biogrid, corum, regnetwork, string) or one edge-list file", "nothing at this path")
    found = {f.name.split(".")[0]: f for f in sorted(p.iterdir()) if f.is_file() and f.name.lower().endswith(NETWORK_SUFFIXES)}
    if not found:
        raise InputError(p, "reference networks", f"edge-list files ({', '.join(NETWORK_SUFFIXES)})", "none")
    if "pool" in found:
        raise InputError(found["pool"], "file name", "a database name other than 'pool' (the pool is their union)")
    return found


def map_reference(path: Path, edges: list[tuple[str, str]], symbol_to_id: Mapping[str, str]) -> set[tuple[str, str]]:
    """Reference edges between perturbed genes, as (gene id, gene id).

    Each endpoint may be a gene id or a symbol of a perturbed gene. A file none of whose ids names a
    perturbed gene is an error: its ids are of another kind (or another organism).
    """
    ids = set(symbol_to_id.values())
    def to_id(x: str) -> str | None:
        return x if x in ids else symbol_to_id.get(x)
    nodes = {x for e in edges for x in e}
    if edges and not any(to_id(x) for x in nodes):
        example = next(iter(sorted(nodes)))
        raise InputError(path, "edge ids", "gene ids (e.g. ENSG...) or symbols of the dataset's perturbed genes",
                         f"none of its {len(nodes)} ids matches, such as {example!r}")
    out = set()
    for a, b in edges:
        ia, ib = to_id(a), to_id(b)
        if ia is not None and ib is not None:
            out.add((ia, ib))
    return out


def load_reference_networks(location: str | os.PathLike[str] | None, symbol_to_id: Mapping[str, str], source: str | os.PathLike[str]) -> dict[str, set[tuple[str, str]]]:
    """Read and map every reference network (before any long work, so bad files stop the run early)."""
    if not location:
        return {}
    networks = find_reference_networks(location)
    if not symbol_to_id:
        raise InputError(source, "obs['gene_id']", "gene ids of the perturbed genes to match reference networks")
    return {name: map_reference(p, read_edge_list(p), symbol_to_id) for name, p in networks.items()}


def perturbed_gene_ids(obs: pd.DataFrame) -> dict[str, str]:
    """symbol -> gene id of the perturbed genes (obs['T'] or obs['gene'], and obs['gene_id'])."""
    if "gene_id" not in obs:
        return {}
    label = "T" if "T" in obs else "gene"
    pairs = obs[[label, "gene_id"]].astype(str).drop_duplicates()
    pairs = pairs[~pairs[label].str.contains(CONTROL_LABEL, regex=False)]
    return dict(zip(pairs[label], pairs["gene_id"]))


def precision_recall(predicted: set[tuple[str, str]], reference: set[tuple[str, str]]) -> tuple[float, float, int]:
    """precision = |P ∩ R| / |P|, recall = |P ∩ R| / |R|; 0 for an empty set (scikit-learn's zero_division)."""
    hit = len(predicted & reference)
    precision = hit / len(predicted) if predicted else 0.0
    recall = hit / len(reference) if reference else 0.0
    return precision, recall, hit


def edge_table(prob: np.ndarray, treatments: list[str], n_perturbed: int, ids: Mapping[str, str], threshold: float) -> pd.DataFrame:
    """The learned GRN as an edge list: rows of perturbed genes (the only ones with interventions)."""
    P = prob[:n_perturbed]
    src, dst = np.nonzero(P > threshold)
    df = pd.DataFrame(
        {
            "source": [treatments[i] for i in src],
            "target": [treatments[j] for j in dst],
            "probability": P[src, dst].astype(float),
            "source_id": [ids.get(treatments[i], "") for i in src],
            "target_id": [ids.get(treatments[j], "") for j in dst],
            "target_block": np.where(dst < n_perturbed, "perturbed", "extended"),
            "self_loop": src == dst,
        }
    )
    return df.sort_values(["probability", "source", "target"], ascending=[False, True, True], kind="stable").reset_index(drop=True)
