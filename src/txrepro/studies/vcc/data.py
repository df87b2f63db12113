"""Input checks, the perturbation split and access to the prepared data.

Everything a user can get wrong is checked here, before the long passes over a 221k-cell file,
and reported as one line naming the file, the field and what was expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from txrepro.errors import InputError
from txrepro.io.anndata import read_h5ad_checked, require_counts
from txrepro.studies.vcc.params import DATASET, PUBLISHED_PERTURBATIONS, PUBLISHED_SHAPE, DataParams, default_test_genes_path

PREPARED_H5AD = "prepared.h5ad"
GROUP_MEANS_H5AD = "group_means.h5ad"
SPLIT_JSON = "split.json"
SPLIT_TSV = "split.tsv"
SPLIT_COL = "vcc_split"


def read_gene_list(path: str | Path, what: str = "test genes") -> list[str]:
    """One gene per line; '#' comments, blank lines and a 'gene' header are ignored."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, what, "an existing text file with one gene per line", "nothing at this path")
    genes = []
    for line in p.read_text().splitlines():
        g = line.split("\t")[0].split(",")[0].strip()
        if not g or g.startswith("#") or g.lower() == "gene":
            continue
        genes.append(g)
    if not genes:
        raise InputError(p, what, "at least one gene", "no genes")
    dup = sorted({g for g in genes if genes.count(g) > 1})
    if dup:
        raise InputError(p, what, "each gene once", f"duplicates {', '.join(dup[:5])}")
    return genes


@dataclass(frozen=True)
class InputSummary:
    """What the checks learned about the input, reused by the streaming passes."""

    path: Path
    n_obs: int
    n_vars: int
    perturbations: list[str]  # sorted, control excluded
    labels: np.ndarray  # per-cell perturbation label (str)


def check_input(path: str | Path, dp: DataParams, test_genes: list[str], test_genes_file: str | Path = "test genes") -> InputSummary:
    """Open the h5ad backed (no matrix load) and check schema, controls, counts and test genes."""
    obs_cols = [c for c in (dp.pert_col, dp.batch_col, dp.guide_col) if c]
    adata = read_h5ad_checked(path, obs=obs_cols, var=[dp.gene_col] if dp.gene_col else [], backed=True)
    p = Path(path)
    try:
        x = adata.X
        if isinstance(x, h5py.Dataset):
            pass  # dense on disk: rows stream fine
        elif getattr(x, "format", None) == "csc":
            raise InputError(p, "X", "a CSR or dense matrix (rows are streamed)", "CSC; convert with adata.X = adata.X.tocsr()")
        elif x is None:
            raise InputError(p, "X", "a count matrix", "no X")
        if not adata.var_names.is_unique:
            dup = adata.var_names[adata.var_names.duplicated()][:3].tolist()
            raise InputError(p, "var_names", "unique gene names", f"duplicates {dup}")
        labels = adata.obs[dp.pert_col].astype(str).to_numpy()
        values = set(labels)
        if dp.control not in values:
            shown = ", ".join(sorted(values)[:5])
            raise InputError(p, f"obs['{dp.pert_col}']", f"control cells labelled '{dp.control}'", f"no such cells (labels: {shown}, ...)")
        perts = sorted(values - {dp.control})
        missing = [g for g in test_genes if g not in values]
        if missing:
            raise InputError(p, f"obs['{dp.pert_col}']", f"every test gene of {Path(test_genes_file).name} among the perturbations",
                             f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if dp.control in test_genes:
            raise InputError(test_genes_file, "test genes", "perturbation genes only", f"the control label '{dp.control}'")
        if len(set(perts) - set(test_genes)) < 2:
            raise InputError(p, f"obs['{dp.pert_col}']", "at least 2 perturbations outside the test list to train on", f"{len(set(perts) - set(test_genes))}")
        require_counts(adata, p)
        return InputSummary(p, adata.n_obs, adata.n_vars, perts, labels)
    finally:
        adata.file.close()


def published_mismatches(summary: InputSummary, dp: DataParams, test_genes: list[str]) -> list[str]:
    """How the input differs from the published VCC training file and its 30-gene test split.

    No checksum is published for adata_Training.h5ad (assets/data_manifest.tsv), so the file is
    recognised by what the paper reports about it: 221,273 cells x 18,080 genes, 150 target genes
    plus `non-targeting` controls, and the test genes the course gave (the bundled list).
    """
    out = []
    if (summary.n_obs, summary.n_vars) != PUBLISHED_SHAPE:
        out.append(f"{summary.n_obs:,} cells x {summary.n_vars:,} genes, not {PUBLISHED_SHAPE[0]:,} x {PUBLISHED_SHAPE[1]:,}")
    if len(summary.perturbations) != PUBLISHED_PERTURBATIONS:
        out.append(f"{len(summary.perturbations)} perturbations, not {PUBLISHED_PERTURBATIONS}")
    if dp.control != DataParams().control:
        out.append(f"control label '{dp.control}', not '{DataParams().control}'")
    if sorted(test_genes) != sorted(read_gene_list(default_test_genes_path())):
        out.append("test genes other than the published 30")
    return out


def resolve_dataset(requested: str | None, summary: InputSummary, dp: DataParams, test_genes: list[str],
                    *, fixture: bool = False) -> tuple[str, bool]:
    """(dataset name for the metrics rows, whether published numbers may be compared with them).

    * the fixture stands in for the published dataset (the report marks those rows as fixture);
    * otherwise the published name is given only to the published file and split: by default when
      `published_mismatches` finds nothing, and `vcc_dataset: vcc_h1_crispri` on other data is
      refused, so the report never sets another dataset's numbers beside the published ones;
    * any other data is named by `vcc_dataset`, or after the input file.
    """
    import re

    if fixture:
        return (requested or DATASET), (requested or DATASET) == DATASET
    mismatches = published_mismatches(summary, dp, test_genes)
    if requested == DATASET and mismatches:
        raise InputError("params", "vcc_dataset", f"'{DATASET}' only for the published VCC training file and its 30-gene test split",
                         f"{summary.path.name}: " + "; ".join(mismatches))
    if requested:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", requested):
            raise InputError("params", "vcc_dataset", "a name of letters, digits and _ . + -", repr(requested))
        return requested, requested == DATASET
    if not mismatches:
        return DATASET, True
    stem = re.sub(r"[^A-Za-z0-9_.+-]+", "_", summary.path.name.removesuffix(".h5ad")).strip("_") or "input"
    return f"vcc_user_{stem}", False


def make_split(perturbations: list[str], test_genes: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """The project's split: fixed test genes; the rest, sorted, through train_test_split(0.2, 42)."""
    from sklearn.model_selection import train_test_split

    if not 0.0 <= val_fraction < 1.0:
        raise InputError("params", "vcc_val_fraction", "a number in [0, 1)", repr(val_fraction))
    trainval = sorted(set(perturbations) - set(test_genes))
    if val_fraction > 0 and len(trainval) >= 2:
        train, val = train_test_split(trainval, test_size=val_fraction, random_state=seed)
    else:
        train, val = trainval, []
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test_genes)}


class Prepared:
    """Read access to a prepare step's folder (paths, split, group means, control cells)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        for name in (PREPARED_H5AD, GROUP_MEANS_H5AD, SPLIT_JSON):
            if not (self.folder / name).is_file():
                raise InputError(self.folder, name, "the output folder of `vcc.py prepare`", f"no {name}")

    @property
    def h5ad(self) -> Path:
        return self.folder / PREPARED_H5AD

    @cached_property
    def info(self) -> dict:
        return json.loads((self.folder / SPLIT_JSON).read_text())

    @property
    def pert_col(self) -> str:
        return self.info["pert_col"]

    @property
    def control(self) -> str:
        return self.info["control"]

    @property
    def split(self) -> dict[str, list[str]]:
        return self.info["split"]

    @property
    def dataset(self) -> str:
        """The dataset name of the metrics rows (prepare decides it: `resolve_dataset`)."""
        return str(self.info.get("dataset") or DATASET)

    @property
    def published_dataset(self) -> bool:
        """True when this is the published dataset, so published numbers may be compared."""
        return bool(self.info.get("published_dataset", self.dataset == DATASET))

    @cached_property
    def group_means(self) -> ad.AnnData:
        """One row per perturbation (and the control): mean normalised-log expression, n_cells."""
        return ad.read_h5ad(self.folder / GROUP_MEANS_H5AD)

    @cached_property
    def var_names(self) -> pd.Index:
        return self.group_means.var_names

    def mean_of(self, groups: list[str]) -> np.ndarray:
        gm = self.group_means
        return np.asarray(gm[groups].X, dtype=np.float64)

    def n_cells(self, groups: list[str]) -> np.ndarray:
        return self.group_means.obs.loc[groups, "n_cells"].to_numpy(dtype=np.int64)

    def deltas(self, groups: list[str]) -> np.ndarray:
        """Pseudobulk effect mean(perturbation) - mean(control), normalised-log space, all genes."""
        return self.mean_of(groups) - self.mean_of([self.control])

    @cached_property
    def cell_labels(self) -> np.ndarray:
        """Each prepared cell's perturbation label, in file order (no matrix read)."""
        import anndata.io as adio

        with h5py.File(self.h5ad, "r") as f:
            return adio.read_elem(f["obs"])[self.pert_col].astype(str).to_numpy()

    def rows_of(self, groups: list[str], block: int = 10_000) -> ad.AnnData:
        """The prepared cells of the given groups, in memory (CSR), in file order.

        The rows are gathered block by block into arrays allocated once at their final size:
        anndata's backed fancy indexing would hold per-row pieces and their concatenation
        (twice the subset, ~9 GB for the real test cells).
        """
        import anndata.io as adio

        with h5py.File(self.h5ad, "r") as f:
            obs = adio.read_elem(f["obs"])
            var_names = adio.read_elem(f["var"]).index
            x = f["X"]
            indptr = x["indptr"][:]
            n, g = obs.shape[0], var_names.size
            labels = obs[self.pert_col].astype(str)
            idx = np.flatnonzero(labels.isin(groups).to_numpy())
            row_nnz = np.diff(indptr)[idx]
            out_ptr = np.concatenate([[0], np.cumsum(row_nnz)]).astype(np.int64)
            data = np.empty(int(out_ptr[-1]), dtype=np.float32)
            indices = np.empty(int(out_ptr[-1]), dtype=np.int32)
            pos = 0
            for start in range(0, n, block):
                stop = min(n, start + block)
                sel = idx[(idx >= start) & (idx < stop)] - start
                if sel.size == 0:
                    continue
                lo, hi = int(indptr[start]), int(indptr[stop])
                part = sp.csr_matrix((x["data"][lo:hi], x["indices"][lo:hi], indptr[start : stop + 1] - lo), shape=(stop - start, g))[sel]
                data[pos : pos + part.nnz] = part.data
                indices[pos : pos + part.nnz] = part.indices
                pos += part.nnz
        obs_sub = pd.DataFrame({self.pert_col: pd.Categorical(labels.iloc[idx].to_numpy())}, index=obs.index[idx].copy())
        return ad.AnnData(X=sp.csr_matrix((data, indices, out_ptr), shape=(idx.size, g)), obs=obs_sub, var=pd.DataFrame(index=var_names.copy()))

    @cached_property
    def _control_rows(self) -> ad.AnnData:
        return self.rows_of([self.control])

    def control_rows(self) -> ad.AnnData:
        """The control cells (read once: the models sample them and the prediction file keeps them)."""
        return self._control_rows
