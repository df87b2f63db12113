import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from txrepro.errors import ChecksumError, InputError
from txrepro.io.anndata import read_h5ad_checked, require_counts
from txrepro.io.atomic import atomic_dir, atomic_path
from txrepro.io.checksum import file_digest, verify_checksum
from txrepro.io.manifest import expected_checksum, read_manifest
from txrepro.io.tables import read_table


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "report"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_checksum_mismatch_names_file(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    verify_checksum(f, "sha256:" + file_digest(f))
    verify_checksum(f, "md5:5d41402abc4b2a76b9719d911017c592")
    with pytest.raises(ChecksumError) as e:
        verify_checksum(f, "sha256:" + "0" * 64)
    assert str(f) in str(e.value) and "sha256" in str(e.value)


def test_manifest_has_checksums_for_known_files():
    df = read_manifest()
    assert set(df["study"]) == {"gpo_vae", "vcc", "age_clock", "sage_net", "drugseq"}
    assert expected_checksum("age_clock", "vocab.json").startswith("sha256:acca93d1")
    assert (df.loc[df["checksum"] != "", "checksum_origin"] != "").all()


def test_read_table_missing_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b\n1,2\n")
    assert read_table(p, ["a"]).shape == (1, 2)
    with pytest.raises(InputError) as e:
        read_table(p, ["a", "gene"])
    assert "t.csv" in str(e.value) and "'gene'" in str(e.value)


def test_corrupt_h5ad_is_input_error(tmp_path):
    p = tmp_path / "bad.h5ad"
    p.write_bytes(b"not an hdf5 file")
    with pytest.raises(InputError, match="readable AnnData"):
        read_h5ad_checked(p)


def test_missing_obs_column_lists_available(tmp_path):
    a = ad.AnnData(np.ones((3, 2), dtype=np.float32), obs=pd.DataFrame({"x": [1, 2, 3]}, index=list("abc")))
    p = tmp_path / "a.h5ad"
    a.write_h5ad(p)
    with pytest.raises(InputError) as e:
        read_h5ad_checked(p, obs=["target_gene"])
    assert "obs['target_gene']" in str(e.value) and "'x'" in str(e.value)


def test_require_counts_rejects_log_data():
    counts = ad.AnnData(sp.csr_matrix(np.array([[0, 3], [1, 0]], dtype=np.float32)))
    require_counts(counts, "c.h5ad")
    logged = ad.AnnData(np.log1p(np.array([[0, 3], [1, 0]], dtype=np.float32)))
    with pytest.raises(InputError, match="non-integer"):
        require_counts(logged, "l.h5ad")
    neg = ad.AnnData(np.array([[0, -1]], dtype=np.float32))
    with pytest.raises(InputError, match="negative"):
        require_counts(neg, "n.h5ad")
