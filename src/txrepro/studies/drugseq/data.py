"""DRUG-seq inputs: the original CSV set or one h5ad, validated into one prepared AnnData.

The original loader read every CSV by position. Here every column is read by its header name
(the original export mislabelled the three scores because it assumed an order the file does not
have), and every check happens before training starts: row counts that disagree, duplicate well
ids, non-numeric expression, no control wells, missing score columns. The legacy activation score
ships in the authors' repository as `e.activation_score_old.csv` while their loader looks for
`activation_score_old.csv`, so the regulariser was silently off: we find the file, say loudly
which one was used, and keep the original behaviour behind `legacy_lookup="original"`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from txrepro.errors import InputError
from txrepro.io.anndata import read_h5ad_checked
from txrepro.io.atomic import atomic_path
from txrepro.io.tables import read_table
from txrepro.runtime import get_logger
from txrepro.studies.drugseq.params import DEFAULT_CONTROL

log = get_logger(__name__)

# The file order of scores_3_z.csv (studies.md drugseq section 1); heads predict them in this order.
SCORE_COLUMNS: tuple[str, ...] = ("pseudotime_z", "cytoscore_z", "Tscore_z")
LABEL_KEY = "label_cls"
LEGACY_KEY = "activation_score_old"
CLUSTER_KEY = "cluster_id"
META_KEY = "meta_id"
WELL_KEY = "well_id"

CSV_NAMES = {
    "expr": "expr_mat.csv",
    "scores": "scores_3_z.csv",
    "labels": "labels_cls.csv",
    "meta": "meta_id.csv",
    "wells": "well_id.csv",
    "legacy": "activation_score_old.csv",
    "clusters": "cluster_id.csv",
}
LegacyLookup = Literal["auto", "original", "off"]
LEGACY_LOOKUPS: tuple[str, ...] = ("auto", "original", "off")


@dataclass(frozen=True)
class CsvInputs:
    """The original repository's CSV set; legacy and clusters are optional."""

    expr: Path
    scores: Path
    labels: Path
    meta: Path
    wells: Path
    legacy: Path | None = None
    clusters: Path | None = None
    notes: tuple[str, ...] = ()  # what the lookup decided, for run_info and the log


@dataclass
class DrugseqData:
    """Wells x genes with per-well targets, all aligned row by row."""

    expr: np.ndarray  # float32, wells x genes (VST-normalised)
    genes: list[str]
    well_id: np.ndarray
    meta_id: np.ndarray
    label: np.ndarray  # int64 0/1
    scores: np.ndarray  # float32, wells x 3, SCORE_COLUMNS order
    legacy: np.ndarray | None = None
    cluster: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_wells(self) -> int:
        return int(self.expr.shape[0])

    def to_anndata(self) -> ad.AnnData:
        obs = pd.DataFrame(
            {META_KEY: self.meta_id, LABEL_KEY: self.label, **{c: self.scores[:, j] for j, c in enumerate(SCORE_COLUMNS)}},
            index=pd.Index(self.well_id, name=WELL_KEY),
        )
        if self.legacy is not None:
            obs[LEGACY_KEY] = self.legacy
        if self.cluster is not None:
            obs[CLUSTER_KEY] = self.cluster
        for col in (META_KEY, CLUSTER_KEY):  # categorical up front: anndata would convert them itself, noisily
            if col in obs.columns:
                obs[col] = obs[col].astype("category")
        adata = ad.AnnData(X=self.expr, obs=obs, var=pd.DataFrame(index=pd.Index(self.genes, name="gene")))
        adata.uns["drugseq"] = {k: v for k, v in self.provenance.items() if v is not None}
        return adata


def find_csv_inputs(data_dir: str | os.PathLike[str], legacy_lookup: LegacyLookup = "auto", **overrides: str | os.PathLike[str] | None) -> CsvInputs:
    """The CSV set in `data_dir` (file names as in the original repository), with per-file overrides."""
    d = Path(data_dir) if data_dir else None
    if d is not None and not d.is_dir():
        raise InputError(d, "data directory", "an existing folder with expr_mat.csv and the metadata CSVs", "nothing at this path")
    files: dict[str, Path | None] = {}
    for key, name in CSV_NAMES.items():
        given = overrides.get(key)
        files[key] = Path(given) if given else (d / name if d is not None else None)
    for key in ("expr", "scores", "labels", "meta", "wells"):
        p = files[key]
        if p is None:
            raise InputError(f"--{key}", CSV_NAMES[key], "a path (or --data-dir holding it)", "none given")
        if not p.is_file():
            raise InputError(p, CSV_NAMES[key], "an existing file", "nothing at this path")
    notes: list[str] = []
    legacy = files["legacy"]
    if overrides.get("legacy"):
        if not legacy.is_file():  # type: ignore[union-attr]
            raise InputError(legacy, CSV_NAMES["legacy"], "an existing file", "nothing at this path")
    elif d is not None:
        legacy, notes = _lookup_legacy(d, legacy_lookup)
    clusters = files["clusters"]
    if clusters is not None and not clusters.is_file():
        if overrides.get("clusters"):
            raise InputError(clusters, CSV_NAMES["clusters"], "an existing file", "nothing at this path")
        clusters = None
    return CsvInputs(files["expr"], files["scores"], files["labels"], files["meta"], files["wells"], legacy, clusters, tuple(notes))  # type: ignore[arg-type]


def _lookup_legacy(d: Path, mode: LegacyLookup) -> tuple[Path | None, list[str]]:
    """Find the legacy activation score, and say so loudly when its name is not the expected one."""
    if mode not in LEGACY_LOOKUPS:
        raise InputError("--legacy-lookup", "legacy score lookup", "auto, original or off", repr(mode))
    exact = d / CSV_NAMES["legacy"]
    if mode == "off":
        return None, ["legacy score disabled (--legacy-lookup off): lambda_reg term not used"]
    if exact.is_file():
        return exact, [f"legacy score read from {exact.name}"]
    others = sorted(p for p in d.glob(f"*{LEGACY_KEY}*.csv") if p.is_file())
    if not others:
        return None, [f"no {exact.name} in {d}: the legacy-score regulariser is off"]
    if mode == "original":
        msg = (f"LEGACY SCORE NOT USED: {others[0].name} is present but the original loader only looks for "
               f"{exact.name}, so (as the original ran) the 0.2 x MSE legacy regulariser is OFF; use --legacy-lookup auto to use it")
        log.warning(msg)
        return None, [msg]
    if len(others) > 1:
        raise InputError(d, "legacy activation score", f"one file named like {exact.name}", ", ".join(p.name for p in others))
    msg = (f"LEGACY SCORE FILE NAME DIFFERS: using {others[0].name} as {exact.name} (the original loader looked only "
           f"for {exact.name} and silently trained without the 0.2 x MSE legacy regulariser; --legacy-lookup original reproduces that)")
    log.warning(msg)
    return others[0], [msg]


def _read_vector(path: Path, field: str, n_rows: int) -> pd.Series:
    """A one-column CSV (header "x" as R writes it); a leading unnamed row-name column is dropped."""
    df = read_table(path, what=field, dtype=str, keep_default_na=False)
    df = _drop_rowname_column(df)
    if df.shape[1] != 1:
        raise InputError(path, field, "one column with a header line (for example 'x')", f"{df.shape[1]} columns: {', '.join(map(str, df.columns))}")
    _check_rows(path, len(df), n_rows)
    return df.iloc[:, 0].str.strip()


def _drop_rowname_column(df: pd.DataFrame) -> pd.DataFrame:
    first = str(df.columns[0]) if len(df.columns) else ""
    if len(df.columns) > 1 and (first == "" or first.startswith("Unnamed: 0")):
        return df.iloc[:, 1:]
    return df


def _check_rows(path: Path, found: int, expected: int) -> None:
    if found != expected:
        raise InputError(path, "rows", f"{expected} rows, one per well as in expr_mat.csv", f"{found} rows")


def _numeric(path: Path, field: str, values: pd.Series, *, expected: str = "finite numbers") -> np.ndarray:
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna() | ~np.isfinite(num.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(path, field, expected, f"{values.iloc[i]!r} on data row {i + 1}")
    return num.to_numpy(dtype=np.float64)


def read_expression(path: Path) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """expr_mat.csv: header = gene names; an unnamed first column, if present, holds well ids."""
    df = read_table(path, what="expression matrix", float_precision="round_trip")
    row_names = None
    first = str(df.columns[0]) if len(df.columns) else ""
    if len(df.columns) > 1 and (first == "" or first.startswith("Unnamed: 0")) and df.iloc[:, 0].dtype == object:
        row_names = df.iloc[:, 0].astype(str).to_numpy()
        df = df.iloc[:, 1:]
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise InputError(path, "expression matrix", "wells as rows and genes as columns", f"{df.shape[0]} x {df.shape[1]}")
    genes = [str(g) for g in df.columns]
    dup = pd.Index(genes)[pd.Index(genes).duplicated()]
    if len(dup):
        raise InputError(path, "gene names (header)", "unique gene names", f"duplicate '{dup[0]}'")
    for g in genes:
        col = df[g]
        if col.dtype == object or not np.issubdtype(col.dtype, np.number):
            _numeric(path, f"column '{g}'", col.astype(str), expected="numeric VST-normalised expression")
    values = df.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        r, c = np.argwhere(~np.isfinite(values))[0]
        raise InputError(path, f"column '{genes[c]}'", "finite numeric VST-normalised expression", f"{values[r, c]} on data row {r + 1}")
    return values.astype(np.float32), genes, row_names


def read_scores(path: Path, n_rows: int) -> np.ndarray:
    """scores_3_z.csv by header name: pseudotime_z, cytoscore_z, Tscore_z in any column order."""
    df = _drop_rowname_column(read_table(path, what="scores", dtype=str, keep_default_na=False))
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, f"column '{missing[0]}'", f"score columns {', '.join(SCORE_COLUMNS)} (read by name)", f"columns {', '.join(map(str, df.columns))}")
    order = [c for c in df.columns if c in SCORE_COLUMNS]
    if tuple(order) != SCORE_COLUMNS:
        log.info("%s: score columns in order %s; read by name, not position", path.name, ", ".join(order))
    _check_rows(path, len(df), n_rows)
    return np.column_stack([_numeric(path, f"column '{c}'", df[c]) for c in SCORE_COLUMNS]).astype(np.float32)


def read_csv_inputs(files: CsvInputs, control: str = DEFAULT_CONTROL) -> DrugseqData:
    expr, genes, row_names = read_expression(files.expr)
    n = expr.shape[0]
    wells = _read_vector(files.wells, "well ids", n).to_numpy()
    if row_names is not None and not np.array_equal(row_names, wells):
        i = int(np.flatnonzero(row_names != wells)[0])
        raise InputError(files.expr, "row names", f"the well ids of {files.wells.name} in the same order", f"{row_names[i]!r} where {files.wells.name} has {wells[i]!r}")
    meta = _read_vector(files.meta, "metabolite ids", n).to_numpy()
    labels = _labels(files.labels, _read_vector(files.labels, "labels", n))
    scores = read_scores(files.scores, n)
    legacy = None
    if files.legacy is not None:
        legacy = _numeric(files.legacy, "legacy activation score", _read_vector(files.legacy, "legacy activation score", n)).astype(np.float32)
    cluster = _read_vector(files.clusters, "cluster ids", n).to_numpy() if files.clusters is not None else None
    provenance = {
        "source": "csv",
        "files": {k: str(v) for k, v in vars(files).items() if isinstance(v, Path)},
        "legacy_file": files.legacy.name if files.legacy is not None else None,
        "notes": list(files.notes),
        "control": control,
    }
    data = DrugseqData(expr, genes, wells, meta, labels, scores, legacy, cluster, provenance)
    validate(data, wells_file=files.wells, meta_file=files.meta, labels_file=files.labels, control=control)
    return data


def _labels(path: Path, values: pd.Series | np.ndarray) -> np.ndarray:
    s = pd.Series(values).astype(str).str.strip()
    ok = s.isin(["0", "1", "0.0", "1.0", "True", "False", "TRUE", "FALSE"])
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        raise InputError(path, "labels", "binary labels 0 (resting) or 1 (activated)", f"{s.iloc[i]!r} on data row {i + 1}")
    return s.isin(["1", "1.0", "True", "TRUE"]).to_numpy().astype(np.int64)


def read_h5ad_input(path: str | os.PathLike[str], control: str = DEFAULT_CONTROL) -> DrugseqData:
    """One h5ad: X wells x genes (VST), obs with meta_id, label_cls and the three scores.

    obs may also hold activation_score_old, cluster_id and well_id (else obs_names are the wells).
    """
    p = Path(path)
    adata = read_h5ad_checked(p, obs=(META_KEY, LABEL_KEY, *SCORE_COLUMNS))
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    if not np.issubdtype(X.dtype, np.number):
        raise InputError(p, "X", "numeric VST-normalised expression", f"dtype {X.dtype}")
    if not np.isfinite(X).all():
        r, c = np.argwhere(~np.isfinite(X))[0]
        raise InputError(p, "X", "finite numeric VST-normalised expression", f"{X[r, c]} at well {r + 1}, gene {adata.var_names[c]!r}")
    genes = [str(g) for g in adata.var_names]
    if adata.var_names.has_duplicates:
        raise InputError(p, "var_names", "unique gene names", f"duplicate '{adata.var_names[adata.var_names.duplicated()][0]}'")
    obs = adata.obs
    wells = (obs[WELL_KEY].astype(str) if WELL_KEY in obs.columns else pd.Series(adata.obs_names.astype(str))).to_numpy()
    scores = np.column_stack([_numeric(p, f"obs['{c}']", obs[c].astype(str)) for c in SCORE_COLUMNS]).astype(np.float32)
    legacy = _numeric(p, f"obs['{LEGACY_KEY}']", obs[LEGACY_KEY].astype(str)).astype(np.float32) if LEGACY_KEY in obs.columns else None
    cluster = obs[CLUSTER_KEY].astype(str).to_numpy() if CLUSTER_KEY in obs.columns else None
    provenance = {"source": "h5ad", "files": {"h5ad": str(p)}, "legacy_file": f"obs['{LEGACY_KEY}']" if legacy is not None else None,
                  "notes": [] if legacy is not None else [f"no obs['{LEGACY_KEY}']: the legacy-score regulariser is off"], "control": control}
    data = DrugseqData(X.astype(np.float32), genes, wells, obs[META_KEY].astype(str).to_numpy(), _labels(p, obs[LABEL_KEY].to_numpy()),
                       scores, legacy, cluster, provenance)
    validate(data, wells_file=p, meta_file=p, labels_file=p, control=control)
    return data


def validate(
    data: DrugseqData,
    *,
    wells_file: str | os.PathLike[str],
    meta_file: str | os.PathLike[str],
    labels_file: str | os.PathLike[str],
    control: str,
) -> None:
    """Checks that need all fields: unique wells, control wells present, both label classes."""
    ids = pd.Index(data.well_id)
    if ids.has_duplicates:
        dup = ids[ids.duplicated()][0]
        raise InputError(wells_file, "well ids", "unique well ids", f"'{dup}' {int((ids == dup).sum())} times")
    n_control = int((data.meta_id == control).sum())
    if n_control == 0:
        raise InputError(meta_file, "metabolite ids", f"control wells named '{control}' (the centre of the distance ranking)", "none")
    classes = set(np.unique(data.label).tolist())
    if classes != {0, 1}:
        raise InputError(labels_file, "labels", "both classes 0 and 1", f"only {sorted(classes)}")


def load_inputs(
    *,
    h5ad: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    control: str = DEFAULT_CONTROL,
    legacy_lookup: LegacyLookup = "auto",
    **files: str | os.PathLike[str] | None,
) -> DrugseqData:
    """Either one h5ad or the CSV set (a folder and/or individual files); never both."""
    if h5ad and (data_dir or any(files.values())):
        raise InputError("--h5ad", "inputs", "either --h5ad or the CSV files (--data-dir / --expr ...), not both", "both")
    if h5ad:
        return read_h5ad_input(h5ad, control)
    return read_csv_inputs(find_csv_inputs(data_dir or "", legacy_lookup, **files), control)


def write_prepared(data: DrugseqData, path: str | os.PathLike[str], data_source: str) -> Path:
    """The prepared h5ad that train and analyse read (written atomically)."""
    adata = data.to_anndata()
    adata.uns["drugseq"]["data_source"] = data_source
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return Path(path)


def read_prepared(path: str | os.PathLike[str]) -> tuple[DrugseqData, str]:
    """Read what `write_prepared` wrote; returns the data and its data source (fixture/provided)."""
    p = Path(path)
    adata = read_h5ad_checked(p, obs=(META_KEY, LABEL_KEY, *SCORE_COLUMNS))
    uns = dict(adata.uns.get("drugseq", {}))
    obs = adata.obs
    data = DrugseqData(
        expr=np.asarray(adata.X, dtype=np.float32),
        genes=[str(g) for g in adata.var_names],
        well_id=adata.obs_names.astype(str).to_numpy(),
        meta_id=obs[META_KEY].astype(str).to_numpy(),
        label=obs[LABEL_KEY].to_numpy().astype(np.int64),
        scores=np.column_stack([obs[c].to_numpy(dtype=np.float32) for c in SCORE_COLUMNS]),
        legacy=obs[LEGACY_KEY].to_numpy(dtype=np.float32) if LEGACY_KEY in obs.columns else None,
        cluster=obs[CLUSTER_KEY].astype(str).to_numpy() if CLUSTER_KEY in obs.columns else None,
        provenance={k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in uns.items()},
    )
    return data, str(uns.get("data_source", "provided"))
