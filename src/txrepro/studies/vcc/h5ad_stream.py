"""Write and read large h5ad files a block of rows at a time.

The real training file is 221,273 x 18,080 with roughly 1.8e9 stored values: loading it whole,
normalising a copy and writing it back needs several times the 16 GB we allow. These helpers keep
one block of rows in memory. The files they write are ordinary h5ad files (anndata's on-disk
encoding: a `csr_matrix` group for X, dense `array` datasets in obsm), readable by
`anndata.read_h5ad`, backed or not.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anndata.io as adio
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

_CHUNK = 1 << 20  # elements per HDF5 chunk of the growing data/indices arrays


def _set_encoding(obj: h5py.Group | h5py.Dataset, kind: str, version: str) -> None:
    obj.attrs["encoding-type"] = kind
    obj.attrs["encoding-version"] = version


class CsrH5adWriter:
    """Append CSR row blocks to X; finish() adds obs, var, uns and obsm so anndata can read it."""

    def __init__(self, path: str | Path, n_obs: int, n_vars: int, dtype: np.dtype | type = np.float32) -> None:
        self.path = Path(path)
        self.n_obs, self.n_vars = int(n_obs), int(n_vars)
        self.file = h5py.File(self.path, "w")
        x = self.file.create_group("X")
        _set_encoding(x, "csr_matrix", "0.1.0")
        x.attrs["shape"] = (self.n_obs, self.n_vars)
        self.dtype = np.dtype(dtype)
        self._data = x.create_dataset("data", shape=(0,), maxshape=(None,), dtype=self.dtype, chunks=(_CHUNK,))
        self._indices = x.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(_CHUNK,))
        self._indptr = x.create_dataset("indptr", shape=(self.n_obs + 1,), dtype=np.int64)
        self._indptr[0] = 0
        self.rows = 0
        self.nnz = 0
        self._obsm = self.file.create_group("obsm")
        _set_encoding(self._obsm, "dict", "0.1.0")

    def append(self, block: sp.csr_matrix) -> None:
        block = sp.csr_matrix(block)
        if block.shape[1] != self.n_vars:
            raise ValueError(f"block has {block.shape[1]} columns, file has {self.n_vars}")
        n, k = block.shape[0], block.nnz
        if self.rows + n > self.n_obs:
            raise ValueError("more rows than declared")
        self._data.resize((self.nnz + k,))
        self._indices.resize((self.nnz + k,))
        self._data[self.nnz:] = block.data.astype(self.dtype, copy=False)
        self._indices[self.nnz:] = block.indices.astype(np.int32, copy=False)
        self._indptr[self.rows + 1 : self.rows + n + 1] = block.indptr[1:].astype(np.int64) + self.nnz
        self.rows += n
        self.nnz += k

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows already written (used to fill obsm from the normalised X without a second copy)."""
        ptr = self._indptr[start : stop + 1]
        lo, hi = int(ptr[0]), int(ptr[-1])
        return sp.csr_matrix((self._data[lo:hi], self._indices[lo:hi], ptr - lo), shape=(stop - start, self.n_vars))

    def create_obsm(self, name: str, n_cols: int) -> h5py.Dataset:
        ds = self._obsm.create_dataset(name, shape=(self.n_obs, n_cols), dtype=np.float32,
                                       chunks=(min(self.n_obs, max(1, (1 << 20) // max(n_cols, 1))), n_cols) if self.n_obs else None)
        _set_encoding(ds, "array", "0.2.0")
        return ds

    def finish(self, obs: pd.DataFrame, var: pd.DataFrame, uns: Mapping[str, Any] | None = None) -> None:
        if self.rows != self.n_obs:
            raise ValueError(f"wrote {self.rows} of {self.n_obs} rows")
        if len(obs) != self.n_obs or len(var) != self.n_vars:
            raise ValueError("obs/var do not match the matrix shape")
        adio.write_elem(self.file, "obs", obs)
        adio.write_elem(self.file, "var", var)
        adio.write_elem(self.file, "uns", dict(uns or {}))
        for key in ("layers", "obsp", "varm", "varp"):
            adio.write_elem(self.file, key, {})
        _set_encoding(self.file, "anndata", "0.1.0")
        self.close()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> CsrH5adWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CsrRows:
    """Any rows of an h5ad whose X is stored as CSR, read without loading the matrix.

    Runs of consecutive rows are read with one HDF5 read each, straight into arrays allocated
    at their final size: the memory is the rows asked for, nothing more (anndata's backed
    indexing holds per-row pieces and their concatenation, twice that).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file = h5py.File(self.path, "r")
        x = self.file.get("X")
        if not isinstance(x, h5py.Group) or x.attrs.get("encoding-type") != "csr_matrix":
            self.close()
            raise ValueError(f"{self.path}: X is not stored as a CSR matrix")
        self.data, self.indices = x["data"], x["indices"]
        self.indptr = x["indptr"][:].astype(np.int64)
        self.shape = (int(x.attrs["shape"][0]), int(x.attrs["shape"][1]))

    def rows(self, idx: np.ndarray) -> sp.csr_matrix:
        """The rows `idx`, in that order, as one CSR matrix (values in the stored dtype)."""
        idx = np.asarray(idx, dtype=np.int64)
        starts = self.indptr[idx]
        out_ptr = np.zeros(idx.size + 1, dtype=np.int64)
        np.cumsum(self.indptr[idx + 1] - starts, out=out_ptr[1:])
        data = np.empty(int(out_ptr[-1]), dtype=self.data.dtype)
        indices = np.empty(int(out_ptr[-1]), dtype=self.indices.dtype)
        cut = np.flatnonzero(np.diff(idx) != 1) + 1  # runs of consecutive rows
        for a, b in zip(np.concatenate([[0], cut]), np.concatenate([cut, [idx.size]]), strict=True):
            if b <= a:
                continue
            lo, hi, o = int(starts[a]), int(self.indptr[idx[b - 1] + 1]), int(out_ptr[a])
            if hi > lo:
                self.data.read_direct(data, np.s_[lo:hi], np.s_[o : o + hi - lo])
                self.indices.read_direct(indices, np.s_[lo:hi], np.s_[o : o + hi - lo])
        return sp.csr_matrix((data, indices, out_ptr), shape=(idx.size, self.shape[1]))

    def iter_data(self, step: int = 1 << 24) -> Iterator[np.ndarray]:
        """The stored values, a slice at a time (for checks over the whole matrix)."""
        for lo in range(0, self.data.shape[0], step):
            yield self.data[lo : lo + step]

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> CsrRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_row_blocks(x: Any, n_obs: int, chunk_size: int) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """(start, stop, CSR block) over a backed or in-memory X, dense or sparse."""
    for start in range(0, n_obs, chunk_size):
        stop = min(n_obs, start + chunk_size)
        block = x[start:stop]
        yield start, stop, block.tocsr() if sp.issparse(block) else sp.csr_matrix(np.asarray(block))
