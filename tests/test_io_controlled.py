"""txrepro.io.controlled: controlled-access inputs are named by file name (and checksum), never by path."""

from __future__ import annotations

import hashlib

from txrepro.io.controlled import input_record, is_public, redact_params


def test_redact_params_keeps_names_and_public_paths(tmp_path):
    vcf = tmp_path / "secret_site" / "rosmap_wgs.vcf.gz"
    vcf.parent.mkdir()
    vcf.write_bytes(b"genotypes")
    params = {"sage_net_vcf": str(vcf), "sage_net_fasta": "/ref/hg38.fa", "sage_net_covariates": None, "study": "sage_net",
              "sage_net_external_vcf": "/open/GEUVADIS.chr22.PH1PH2_465.IMPFRQFILT_BIALLELIC_PH.annotv2.genotypes.vcf.gz"}
    out = redact_params(params)
    assert out["sage_net_vcf"] == "rosmap_wgs.vcf.gz (path withheld (controlled input))"
    assert out["sage_net_fasta"] == "/ref/hg38.fa" and out["sage_net_covariates"] is None and out["study"] == "sage_net"
    assert out["sage_net_external_vcf"] == params["sage_net_external_vcf"]  # open in assets/data_manifest.tsv
    digest = hashlib.sha256(b"genotypes").hexdigest()
    assert redact_params(params, with_checksum=True)["sage_net_vcf"] == f"rosmap_wgs.vcf.gz (path withheld (controlled input), sha256:{digest})"
    assert "secret_site" not in str(redact_params(params, with_checksum=True))


def test_input_record_and_manifest_access(tmp_path):
    f = tmp_path / "expr.csv"
    f.write_text("x\n")
    assert input_record(f, study="sage_net") == {"file": "expr.csv", "path": "path withheld (controlled input)",
                                                 "checksum": "sha256:" + hashlib.sha256(b"x\n").hexdigest(), "size_bytes": 2}
    assert input_record(tmp_path / "missing.csv", study="sage_net") == {"file": "missing.csv", "path": "path withheld (controlled input)"}
    assert is_public("sage_net", "/x/tpm_pca_annot.csv.gz") and not is_public("sage_net", "/x/rosmap_tpm.csv")
    assert not is_public("vcc", "/x/tpm_pca_annot.csv.gz")  # open rows count for their own study only
