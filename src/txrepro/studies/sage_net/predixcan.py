"""PrediXcan baseline: one elastic net per gene on the window's variant dosages.

As script/baselines/predixcan/predixcan.py: features are ALT-allele dosages (0/1/2, one per ALT of
a multi-allelic site) of variants overlapping the window with MAF > 0.01 among training
individuals; `ElasticNetCV(l1_ratio=0.5)` with a PredefinedSplit (train individuals fit, validation
individuals score) picks alpha; an `ElasticNet` with that alpha is refit on the training
individuals. Genes are ranked by validation Pearson r; "top 1,000" are the first 1,000.

Faithful quirk kept by default: the original called `ElasticNetCV.fit` on all individuals
(train, validation and test rows) with a split that only names train and validation rows, so the
test individuals never fit or score a model but do enter sklearn's alpha grid (alpha_max is
computed from all rows). `alpha_grid="train_val"` computes the grid without the test rows.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_dir, write_json
from txrepro.runtime import get_logger, progress
from txrepro.studies.sage_net.data import Prepared
from txrepro.studies.sage_net.metrics import pearson
from txrepro.studies.sage_net.variants import GeneVariants

log = get_logger(__name__)


@dataclass
class PrediXcanParams:
    maf_threshold: float = 0.01
    l1_ratio: float = 0.5
    alpha_grid: str = "all_individuals"  # the original's quirk; or "train_val"

    def check(self) -> None:
        if self.alpha_grid not in ("all_individuals", "train_val"):
            raise InputError("--alpha-grid", "alpha grid", "'all_individuals' (original) or 'train_val'", repr(self.alpha_grid))
        if not 0 < self.l1_ratio <= 1:
            raise InputError("--l1-ratio", "l1_ratio", "a number in (0, 1]", str(self.l1_ratio))


@dataclass
class GeneFit:
    alpha: float
    intercept: float
    coef: np.ndarray
    features: np.ndarray  # indices into the gene's variant rows
    pred: np.ndarray  # every prepared individual


def feature_rows(gv: GeneVariants, train_idx: np.ndarray, maf_threshold: float) -> np.ndarray:
    """Rows of the variant matrix used as features: in the window and MAF > threshold (strict, as the original)."""
    if gv.n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(gv.in_window & (gv.maf(train_idx) > maf_threshold))


def fit_gene(x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, test_idx: np.ndarray, params: PrediXcanParams) -> tuple[float, float, np.ndarray]:
    """(alpha, intercept, coef): alpha by validation score, then refit on the training individuals."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import ElasticNet, ElasticNetCV
    from sklearn.model_selection import PredefinedSplit

    order = np.concatenate([train_idx, val_idx, test_idx if params.alpha_grid == "all_individuals" else np.zeros(0, np.int64)])
    fold = np.concatenate([np.full(len(train_idx), -1), np.zeros(len(val_idx))])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        cv = ElasticNetCV(cv=PredefinedSplit(fold), l1_ratio=params.l1_ratio).fit(x[order], y[order])
        final = ElasticNet(alpha=cv.alpha_, l1_ratio=params.l1_ratio).fit(x[train_idx], y[train_idx])
    return float(cv.alpha_), float(final.intercept_), np.asarray(final.coef_, dtype=np.float64)


def run_predixcan(prepared: Prepared, outdir: Path, params: PrediXcanParams) -> Path:
    """Fit every prepared gene; write pearson.tsv (ranking), weights.tsv and predictions.npz."""
    params.check()
    if prepared.params.role != "main":
        raise InputError(prepared.path, "role", "a prepared main cohort (train/val/test individuals)", "an external cohort")
    tr, va, te = prepared.train_idx, prepared.split_idx("val"), prepared.split_idx("test")
    if len(va) < 2 or len(tr) < 2:
        raise InputError(prepared.path, "individuals", "at least 2 training and 2 validation individuals", f"{len(tr)} and {len(va)}")
    genes = list(prepared.genes["gene_id"])
    pred = np.full((len(genes), len(prepared.samples)), np.nan)
    rows, weights = [], []
    for gi, gene in enumerate(progress(genes, desc="sage_net PrediXcan", total=len(genes))):
        gv = prepared.variants(gene)
        feats = feature_rows(gv, tr, params.maf_threshold)
        row = {"gene_id": gene, "gene_split": prepared.genes["gene_split"].iloc[gi], "n_features": int(feats.size), "alpha": np.nan, "intercept": np.nan}
        if feats.size == 0:  # the original skipped genes without variants
            rows.append(row | {"train_pearson": np.nan, "val_pearson": np.nan, "test_pearson": np.nan})
            continue
        x = gv.dosage()[:, feats]
        y = prepared.expression_row(gene)
        alpha, intercept, coef = fit_gene(x, y, tr, va, te, params)
        p = intercept + x @ coef
        pred[gi] = p
        row.update(alpha=alpha, intercept=intercept)
        row.update({f"{k}_pearson": pearson(p[idx], y[idx]) for k, idx in (("train", tr), ("val", va), ("test", te))})
        rows.append(row)
        g = prepared.gene_row(gene)
        for f, c in zip(feats, coef):
            weights.append({"gene_id": gene, "contig": g.fasta_contig, "pos": int(gv.pos[f]) + 1, "ref": gv.ref[f], "alt": gv.alt[f], "coef": float(c)})
    table = pd.DataFrame(rows)
    ranked = table["val_pearson"].notna()
    table["rank"] = np.nan
    order = table[ranked].sort_values("val_pearson", ascending=False, kind="stable").index
    table.loc[order, "rank"] = np.arange(len(order))
    with atomic_dir(outdir) as tmp:
        table.to_csv(tmp / "pearson.tsv", sep="\t", index=False)
        pd.DataFrame(weights, columns=["gene_id", "contig", "pos", "ref", "alt", "coef"]).to_csv(tmp / "weights.tsv", sep="\t", index=False)
        with open(tmp / "predictions.npz", "wb") as fh:
            np.savez(fh, genes=np.array(genes, dtype=str), samples=np.array(prepared.sample_ids, dtype=str), pred=pred)
        write_json(tmp / "settings.json", asdict(params) | {"n_genes_fitted": int(ranked.sum()), "n_genes_without_features": int((table["n_features"] == 0).sum())})
    log.info("PrediXcan: %d genes fitted, %d without variants above the MAF threshold", int(ranked.sum()), int((table["n_features"] == 0).sum()))
    return outdir


class PrediXcanResult:
    """The outputs of `run_predixcan`, read back."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "pearson.tsv").is_file():
            raise InputError(self.path, "PrediXcan folder", "the output of `sage_net.py predixcan` (pearson.tsv)", "no pearson.tsv")
        self.table = pd.read_csv(self.path / "pearson.tsv", sep="\t", dtype={"gene_id": str})
        self.weights = pd.read_csv(self.path / "weights.tsv", sep="\t", dtype={"gene_id": str, "contig": str, "ref": str, "alt": str})
        with np.load(self.path / "predictions.npz") as z:
            self.genes = list(z["genes"])
            self.samples = list(z["samples"])
            self.pred = z["pred"]

    def ranking(self) -> list[str]:
        t = self.table.dropna(subset=["rank"]).sort_values("rank")
        return list(t["gene_id"])

    def top_genes(self, n: int) -> list[str]:
        return self.ranking()[:n]

    def predictions(self, gene: str) -> np.ndarray:
        return self.pred[self.genes.index(gene)]

    def apply(self, gene: str, gv: GeneVariants) -> np.ndarray | None:
        """Predict another cohort: match variants on (position, REF, ALT), absent ones count as 0."""
        row = self.table[self.table["gene_id"] == gene]
        if row.empty or np.isnan(row["intercept"].iloc[0]):
            return None
        w = self.weights[self.weights["gene_id"] == gene]
        key = {(p, r, a): i for i, (p, r, a) in enumerate(zip(gv.pos + 1, gv.ref, gv.alt))}
        dos = gv.dosage()
        x = np.zeros((dos.shape[0], len(w)))
        for j, (p, r, a) in enumerate(zip(w["pos"], w["ref"], w["alt"])):
            i = key.get((int(p), r, a))
            if i is not None:
                x[:, j] = dos[:, i]
        return float(row["intercept"].iloc[0]) + x @ w["coef"].to_numpy()
