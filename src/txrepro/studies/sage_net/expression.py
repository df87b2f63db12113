"""Expression tables: reading with checks, the paper's covariate adjustment, training z-scores.

Adjustment (script/data_preprocessing/preprocess_data.py): log2(TPM + 1); top expression PCs of
the gene-standardised matrix; known covariates (categorical ones one-hot encoded with the first
level dropped, missing numeric values set to the column mean) are dropped when the expression
PCs explain them with R2 >= 0.9 (the PCAForQTL rule, an OLS without intercept on standardised
covariates); the kept covariates and the PCs are regressed out of every gene by OLS and the
gene means added back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from txrepro.errors import InputError
from txrepro.io.tables import read_table
from txrepro.runtime import get_logger

log = get_logger(__name__)


def require_unique_header(path: Path, what: str, columns: str = "sample columns") -> None:
    """Stop on a repeated column name as written: pandas renames the second `S01` to `S01.1`, which
    then looks like an individual missing from the VCF or a sample list instead of a duplicate."""
    sep = "\t" if path.name.endswith((".tsv", ".tsv.gz", ".txt")) else ","
    try:
        header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError, IndexError):
        return  # read_table reports unreadable files
    seen: set[str] = set()
    for name in header[1:]:
        if name in seen:
            raise InputError(path, f"{columns} (header line)", "each column name once", f"{name!r} twice")
        seen.add(name)


def read_expression(path: str | os.PathLike[str], what: str = "expression table") -> pd.DataFrame:
    """Genes x samples, first column the gene id; every value a finite number."""
    p = Path(path)
    df = read_table(p, what=what, index_col=0, keep_default_na=False)  # report "n/a" as written, not as NaN
    require_unique_header(p, what)
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise InputError(p, what, "genes as rows, samples as columns, gene ids in the first column", f"shape {df.shape}")
    df.index = df.index.astype(str)
    df.columns = df.columns.astype(str)
    if df.index.duplicated().any():
        raise InputError(p, "gene ids (first column)", "unique gene ids", f"duplicate {df.index[df.index.duplicated()][0]!r}")
    if df.columns.duplicated().any():
        raise InputError(p, "sample columns", "unique sample ids", f"duplicate {df.columns[df.columns.duplicated()][0]!r}")
    values = df.apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & df.notna()
    if bad.values.any():
        r, c = np.argwhere(bad.values)[0]
        raise InputError(p, f"value of gene {df.index[r]!r}, sample {df.columns[c]!r}", "a number", repr(df.iat[r, c]))
    if not np.isfinite(values.values).all():
        r, c = np.argwhere(~np.isfinite(values.values))[0]
        raise InputError(p, f"value of gene {df.index[r]!r}, sample {df.columns[c]!r}", "a finite number", str(values.iat[r, c]))
    return values.astype(np.float64)


@dataclass
class AdjustmentReport:
    n_pcs: int
    r2_cutoff: float
    covariate_r2: dict[str, float] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    n_samples: int = 0
    n_genes: int = 0


def expression_pcs(log_expr: pd.DataFrame, n_pcs: int, seed: int = 0) -> pd.DataFrame:
    """Top PCs of samples x genes, genes standardised (s.d. ddof=1; constant genes set to 0).

    The original used sklearn's PCA defaults, which switch to a randomised solver on large
    matrices with an unseeded generator; the seed makes reruns identical.
    """
    from sklearn.decomposition import PCA

    x = (log_expr - log_expr.mean()) / log_expr.std()
    x = x.fillna(0.0)
    n_pcs = min(n_pcs, min(x.shape) - 1)
    if n_pcs < 1:
        return pd.DataFrame(index=log_expr.index)
    pcs = PCA(n_components=n_pcs, random_state=seed).fit_transform(x.values)
    return pd.DataFrame(pcs, index=log_expr.index, columns=[f"PC_{i}" for i in range(n_pcs)])


def encode_covariates(cov: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Numeric design: categorical columns one-hot (first level dropped), NaN -> column mean."""
    cat = [c for c in cov.columns if not pd.api.types.is_numeric_dtype(cov[c])]
    out = pd.get_dummies(cov, columns=cat, drop_first=True, dtype=float) if cat else cov.astype(float)
    for c in out.columns:
        if out[c].isna().all():
            raise InputError(path, f"covariate column {c!r}", "at least one value", "all missing")
        out[c] = out[c].fillna(out[c].mean())
    return out


def pcaforqtl_filter(known: pd.DataFrame, pcs: pd.DataFrame, r2_cutoff: float = 0.9) -> tuple[dict[str, float], list[str]]:
    """R2 of each standardised known covariate on the PCs (OLS without intercept, as the original)."""
    import statsmodels.api as sm

    std = ((known - known.mean()) / known.std()).fillna(0.0)
    r2: dict[str, float] = {}
    for c in std.columns:
        r2[c] = float(sm.OLS(std[c].values, pcs.values).fit().rsquared) if pcs.shape[1] else 0.0
    dropped = [c for c, v in r2.items() if v >= r2_cutoff]
    return r2, dropped


def adjust_expression(
    tpm: pd.DataFrame,
    covariates: pd.DataFrame | None,
    *,
    n_pcs: int = 10,
    r2_cutoff: float = 0.9,
    covariates_path: Path = Path("covariates"),
    seed: int = 0,
) -> tuple[pd.DataFrame, AdjustmentReport]:
    """Covariate-adjusted log2(TPM+1), genes x samples (samples: those with covariates, if given)."""
    from sklearn.linear_model import LinearRegression

    log_expr = np.log2(tpm.T + 1.0)  # samples x genes
    pcs = expression_pcs(log_expr, n_pcs, seed=seed)  # on every sample of the TPM table, as the original
    samples = list(log_expr.index)
    design = pd.DataFrame(index=log_expr.index)
    report = AdjustmentReport(n_pcs=pcs.shape[1], r2_cutoff=r2_cutoff)
    if covariates is not None and covariates.shape[1]:
        covariates = covariates.copy()
        covariates.index = covariates.index.astype(str)
        shared = [s for s in samples if s in covariates.index]
        if not shared:
            raise InputError(covariates_path, "sample ids (first column)", "the expression table's sample ids", f"none of {len(samples)} match")
        if len(shared) < len(samples):
            log.warning("covariates: %d of %d expression samples have no covariates and are left out", len(samples) - len(shared), len(samples))
        samples = shared
        known = encode_covariates(covariates.loc[samples], covariates_path)
        r2, dropped = pcaforqtl_filter(known, pcs.loc[samples], r2_cutoff)
        report.covariate_r2, report.dropped = r2, dropped
        report.kept = [c for c in known.columns if c not in dropped]
        if dropped:
            log.info("PCAForQTL rule: dropped covariates captured by the expression PCs (R2 >= %.2f): %s", r2_cutoff, ", ".join(dropped))
        design = known[report.kept]
    design = pd.concat([design.loc[samples], pcs.loc[samples]], axis=1)
    y = log_expr.loc[samples]
    if design.shape[1]:
        fitted = LinearRegression().fit(design.values, y.values).predict(design.values)
        adjusted = y - fitted + y.mean(axis=0)
    else:
        adjusted = y
    report.n_samples, report.n_genes = len(samples), y.shape[1]
    return adjusted.T, report


def zscores(expr: np.ndarray, train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-gene mean and s.d. (ddof=1, pandas' default as the original) of training individuals, and z."""
    train = expr[:, train_idx]
    mean = train.mean(axis=1)
    sd = train.std(axis=1, ddof=1) if train.shape[1] > 1 else np.zeros(expr.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (expr - mean[:, None]) / sd[:, None]
    return mean, sd, z
