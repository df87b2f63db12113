"""Real-file conventions: each is handled (counted, reported) or stopped with one line naming the fix."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import assert_one_line_error, run_cli
from sage_net_helpers import write_fasta, write_table, write_vcf
from txrepro.errors import InputError
from txrepro.studies.sage_net.data import PrepareInputs, PrepareParams, Prepared, prepare, split_individuals
from txrepro.studies.sage_net.genome import decode
from txrepro.studies.sage_net.predixcan import feature_rows
from txrepro.studies.sage_net.sequences import build_haplotypes, reference_sequence

N = 12
SAMPLES = [f"S{i:02d}" for i in range(N)]
LENGTH = 600
WINDOW = 100


def _genome(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list("ACGT"), LENGTH))


def _inputs(tmp: Path, *, rows=None, gene_rows=None, vcf_contig="1", fasta_contig="chr1", expr_samples=None, index=True, lists=True, fasta_extra=None, vcf_header_contigs=None):
    """A 600-bp chr1, two genes, a VCF with one SNV per gene window, expression for every sample."""
    rng = np.random.default_rng(0)
    seq = _genome(rng)
    fasta = write_fasta(tmp / "ref.fa", {fasta_contig: seq} | (fasta_extra or {}))
    if rows is None:
        rows = [(vcf_contig, 151, seq[150], "A" if seq[150] != "A" else "C", ["0|1"] * N), (vcf_contig, 401, seq[400], "G" if seq[400] != "G" else "T", ["1|1"] * N)]
    vcf = write_vcf(tmp / "v.vcf.gz", vcf_header_contigs or {vcf_contig: LENGTH}, SAMPLES, rows, index=index)
    gene_rows = gene_rows or [["G1", "1", 150, "+"], ["G2", "1", 400, "-"]]
    genes = write_table(tmp / "genes.tsv", ["gene_id", "chr", "tss", "strand"], gene_rows)
    cols = expr_samples or SAMPLES
    ids = [r[0] for r in gene_rows]
    expr = pd.DataFrame(rng.normal(size=(len(ids), len(cols))), index=pd.Index(ids, name="gene_id"), columns=cols)
    expr.to_csv(tmp / "expr.csv")
    paths = dict(vcf=vcf, fasta=fasta, genes=genes, expression=tmp / "expr.csv")
    if lists:
        for name, members in (("train", SAMPLES[:6]), ("val", SAMPLES[6:9]), ("test", SAMPLES[9:])):
            (tmp / f"{name}.txt").write_text("\n".join(members) + "\n")
            paths[f"{name}_samples"] = tmp / f"{name}.txt"
    return paths, seq


def _prepare(tmp: Path, paths: dict, **kw) -> Prepared:
    out = prepare(PrepareInputs(**paths), tmp / "prepared", PrepareParams(window=WINDOW, **kw))
    return Prepared(out)


def _cli_prepare(paths: dict, out: Path, *extra: str):
    args = ["sage_net.py", "prepare", "--out", str(out), "--window", str(WINDOW)]
    for k, v in paths.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return run_cli(args + list(extra))


def test_chr_prefixes_are_mapped(tmp_path):
    paths, _ = _inputs(tmp_path)  # genes '1', FASTA 'chr1', VCF '1'
    p = _prepare(tmp_path, paths)
    assert list(p.genes["fasta_contig"]) == ["chr1", "chr1"] and list(p.genes["vcf_contig"]) == ["1", "1"]
    assert p.variants("G1").n == 1


def test_chromosomes_in_neither_file_is_one_error(tmp_path):
    paths, _ = _inputs(tmp_path, gene_rows=[["G1", "chrZ", 150, "+"], ["G2", "Z", 400, "-"]])
    with pytest.raises(InputError, match=r"genes.tsv: chromosome names: expected contigs of the FASTA"):
        _prepare(tmp_path, paths)


def test_unindexed_vcf_names_the_fix_then_index_vcf_repairs_it(tmp_path):
    paths, _ = _inputs(tmp_path)
    Path(f"{paths['vcf']}.tbi").unlink()
    res = _cli_prepare(paths, tmp_path / "out")
    line = assert_one_line_error(res, "v.vcf.gz", "VCF index", "sage_net.py index-vcf")
    assert "--index-vcf" in line
    assert not (tmp_path / "out").exists()
    fixed = run_cli(["sage_net.py", "index-vcf", "--vcf", str(paths["vcf"])], check=True)
    assert Path(fixed.stdout.strip()) == paths["vcf"] and Path(f"{paths['vcf']}.tbi").is_file()
    _prepare(tmp_path, paths)


def test_plain_gzip_vcf_is_refused_and_recompressed(tmp_path):
    paths, _ = _inputs(tmp_path)
    plain_gz = tmp_path / "plain.vcf.gz"
    with gzip.open(paths["vcf"], "rb") as fin, gzip.open(plain_gz, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    paths["vcf"] = plain_gz
    res = _cli_prepare(paths, tmp_path / "out")
    assert_one_line_error(res, "plain.vcf.gz", "VCF compression", "plain gzip", "index-vcf")
    # the flag indexes a temporary copy and goes on
    p = _prepare(tmp_path, paths, index_vcf=True)
    assert p.variants("G2").n == 1
    out = run_cli(["sage_net.py", "index-vcf", "--vcf", str(plain_gz)], check=True)
    assert out.stdout.strip().endswith("plain.bgz.vcf.gz")


def test_uncompressed_vcf_is_refused(tmp_path):
    paths, _ = _inputs(tmp_path, index=False)
    with pytest.raises(InputError, match="an uncompressed file"):
        _prepare(tmp_path, paths)


def test_unphased_missing_multiallelic_symbolic_are_counted(tmp_path, caplog):
    seq = _genome(np.random.default_rng(0))
    gts_unphased = ["0/1"] * 4 + ["1|0"] * (N - 4)
    rows = [
        ("1", 141, seq[140], "A" if seq[140] != "A" else "C", gts_unphased),
        ("1", 151, seq[150], ",".join(b for b in "ACGT" if b != seq[150]), ["1|2"] * 6 + ["3|0"] * (N - 6)),
        ("1", 161, seq[160], "<DEL>", ["1|1"] * N),
        ("1", 171, seq[170], "*", ["0|1"] * N),
        ("1", 181, seq[180], "T" if seq[180] != "T" else "G", ["./."] * 3 + [".|1"] + ["0|0"] * (N - 4)),
    ]
    paths, _ = _inputs(tmp_path, rows=rows)
    with caplog.at_level("WARNING"):
        p = _prepare(tmp_path, paths)
    qc = p.qc()
    assert qc["unphased_het_calls"] == 4
    assert qc["missing_calls"] == 7
    assert qc["multiallelic_records"] == 1 and qc["alt_alleles"] == 7
    assert qc["symbolic_alleles"] == 2
    text = caplog.text
    # the denominator is what the words say: heterozygous genotypes (12 + 12 + 12 here), not all 60 genotypes
    assert qc["het_calls"] == 36
    assert "4 of 36 heterozygous genotypes are unphased" in text
    assert "2 of 7 ALT alleles are symbolic" in text and "7 of 120 genotype allele calls are missing" in text
    gv = p.variants("G1")
    assert gv.n == 7
    # symbolic alleles stay PrediXcan features but are never inserted into a sequence
    symbolic = np.flatnonzero(gv.flags & 1)
    assert set(symbolic) <= set(feature_rows(gv, p.train_idx, -1.0))
    gw = p.window("G1")
    codes = p.region_codes(gw)
    ref = reference_sequence(codes, gw)
    haps = build_haplotypes(codes, gw, gv, np.arange(N))
    i_sym = gw.index_in_window(160)
    assert (haps[:, :, i_sym] == ref[i_sym]).all()
    # missing calls are REF: samples 0-2 carry nothing at 180
    i_miss = gw.index_in_window(180)
    assert (haps[:3, :, i_miss] == ref[i_miss]).all() and haps[3, 1, i_miss] != ref[i_miss]


def test_require_phased_stops(tmp_path):
    seq = _genome(np.random.default_rng(0))
    rows = [("1", 141, seq[140], "A" if seq[140] != "A" else "C", ["0/1"] * N)]
    paths, _ = _inputs(tmp_path, rows=rows)
    with pytest.raises(InputError, match="unphased heterozygous calls in the window of G1"):
        _prepare(tmp_path, paths, require_phased=True)


def test_ref_mismatch_counted_then_fatal_above_threshold(tmp_path, caplog):
    seq = _genome(np.random.default_rng(0))
    wrong = {b: next(c for c in "ACGT" if c != b) for b in "ACGT"}
    good = [("1", p, seq[p - 1], "A" if seq[p - 1] != "A" else "C", ["0|1"] * N) for p in range(110, 200, 3)]
    bad = [("1", 121, wrong[seq[120]], seq[120], ["1|1"] * N)]
    rows = sorted(good[:3] + bad + good[4:], key=lambda r: r[1])
    paths, _ = _inputs(tmp_path, rows=rows)
    with caplog.at_level("WARNING"):
        p = _prepare(tmp_path, paths)
    assert p.qc()["ref_mismatch_alleles"] == 1
    assert "REF that differs from the FASTA" in caplog.text
    gv = p.variants("G1")
    gw = p.window("G1")
    codes = p.region_codes(gw)
    i = gw.index_in_window(120)
    assert (build_haplotypes(codes, gw, gv, np.arange(N))[:, :, i] == reference_sequence(codes, gw)[i]).all()
    # a VCF on another build: most REF alleles disagree -> one line naming the count and an example
    rows = [("1", p, wrong[seq[p - 1]], seq[p - 1], ["0|1"] * N) for p in range(110, 200, 3)]
    other = tmp_path / "other_build"
    other.mkdir()
    paths, _ = _inputs(other, rows=rows)
    res = _cli_prepare(paths, other / "out")
    assert_one_line_error(res, "REF alleles", "same genome build", "differ, e.g. 1:110")


def test_samples_in_expression_but_not_in_vcf(tmp_path, caplog):
    paths, _ = _inputs(tmp_path, expr_samples=SAMPLES + ["EXTRA1", "EXTRA2"])
    with caplog.at_level("WARNING"):
        p = _prepare(tmp_path, paths)
    assert p.qc()["expression_samples_not_in_vcf"] == 2
    assert "2 of 14 expression samples are not in the VCF" in caplog.text
    assert "EXTRA1" not in p.sample_ids
    # a split list naming an individual without genotypes is an error naming the list and the id
    paths["test_samples"].write_text("S10\nS11\nEXTRA1\n")
    with pytest.raises(InputError, match=r"test.txt: sample 'EXTRA1': expected a sample present in the VCF header"):
        _prepare(tmp_path, paths)


def test_window_off_contig_end_is_counted_and_padded(tmp_path, caplog):
    paths, seq = _inputs(tmp_path, gene_rows=[["G1", "1", 150, "+"], ["G2", "1", LENGTH - 10, "+"]])
    with caplog.at_level("WARNING"):
        p = _prepare(tmp_path, paths)
    assert p.qc()["off_contig_windows"] == 1
    assert "run off their contig end" in caplog.text
    gw = p.window("G2")
    ref = decode(reference_sequence(p.region_codes(gw), gw))
    assert ref == seq[LENGTH - 60 :] + "N" * 40


def test_tss_beyond_contig_is_an_error(tmp_path):
    paths, _ = _inputs(tmp_path, gene_rows=[["G1", "1", 150, "+"], ["G2", "1", LENGTH + 5, "+"]])
    with pytest.raises(InputError, match=r"TSS of gene 'G2': expected a position inside chr1 \(length 600\)"):
        _prepare(tmp_path, paths)


def test_gene_table_without_strand_is_one_line(tmp_path):
    paths, _ = _inputs(tmp_path)
    write_table(paths["genes"], ["gene_id", "chr", "tss"], [["G1", "1", 150]])
    res = _cli_prepare(paths, tmp_path / "out")
    assert_one_line_error(res, "genes.tsv", "column strand", "strand")


def test_non_numeric_expression_is_an_error(tmp_path):
    paths, _ = _inputs(tmp_path)
    df = pd.read_csv(paths["expression"], index_col=0).astype(object)
    df.iloc[1, 3] = "n/a"
    df.to_csv(paths["expression"])
    with pytest.raises(InputError, match=r"value of gene 'G2', sample 'S03': expected a number"):
        _prepare(tmp_path, paths)


def test_partial_sample_lists_are_an_error(tmp_path):
    paths, _ = _inputs(tmp_path)
    del paths["val_samples"]
    with pytest.raises(InputError, match="all three of --train-samples"):
        _prepare(tmp_path, paths)


def test_seeded_split_of_the_original():
    ids = [f"{i:08d}" for i in range(859)]
    s = split_individuals(ids, 17, 0.1, 0.1)
    assert [len(s[k]) for k in ("train", "val", "test")] == [689, 85, 85]
    assert s == split_individuals(list(reversed(ids)), 17, 0.1, 0.1)  # independent of input order
    assert set(s["train"]) | set(s["val"]) | set(s["test"]) == set(ids)


def test_seeded_split_too_small_is_refused_before_any_work(tmp_path):
    """12 individuals: the 80/10/10 split gives 1 validation and 1 test individual, which PrediXcan
    and the per-gene r across held-out individuals cannot use. Refused naming the parameters."""
    paths, _ = _inputs(tmp_path, lists=False)
    res = _cli_prepare(paths, tmp_path / "out")
    line = assert_one_line_error(res, "sage_net_split_seed", "train 10, val 1, test 1", "at least 3 individuals in every split", "sage_net_val_samples (--val-samples)")
    assert "prepared" not in line and not (tmp_path / "out").exists()


def test_given_sample_list_too_small_names_its_parameter(tmp_path):
    paths, _ = _inputs(tmp_path)
    paths["val_samples"].write_text("S06\nS07\n")
    with pytest.raises(InputError, match=r"^sage_net_val_samples \(--val-samples\): individuals: expected at least 3 .* found train 6, val 2, test 3 \(val.txt\)"):
        _prepare(tmp_path, paths)


def test_external_cohort_too_small_names_its_parameter(tmp_path):
    paths, _ = _inputs(tmp_path, lists=False)
    (tmp_path / "ext.txt").write_text("S00\nS01\n")
    paths["samples"] = tmp_path / "ext.txt"
    with pytest.raises(InputError, match=r"^sage_net_external_samples \(--samples\): individuals: expected at least 3 .*found all 2"):
        _prepare(tmp_path, paths, role="external")


def test_no_gene_on_the_training_chromosomes_names_the_gene_parameters(tmp_path):
    """A chr22-only gene table with the default chromosome split: nothing to train on."""
    paths, _ = _inputs(tmp_path, vcf_contig="22", fasta_contig="chr22", gene_rows=[["G1", "22", 150, "+"], ["G2", "22", 400, "-"]])
    res = _cli_prepare(paths, tmp_path / "out")
    assert_one_line_error(res, "sage_net_genes (--genes): chromosomes", "training chromosomes 1-16", "sage_net_train_genes (--train-genes)", "genes on 22 only")
    # gene lists fix it
    for split, gene in (("train", "G1"), ("val", "G2")):
        (tmp_path / f"{split}_genes.txt").write_text(gene + "\n")
        paths[f"{split}_genes"] = tmp_path / f"{split}_genes.txt"
    p = _prepare(tmp_path, paths)
    assert p.genes_in("train") == ["G1"]
    # ids that are not in the gene table are named as such
    (tmp_path / "train_genes.txt").write_text("ENSG0001\n")
    with pytest.raises(InputError, match=r"^sage_net_train_genes \(--train-genes\): gene ids: expected ids of the gene table genes.tsv; found none of 1"):
        _prepare(tmp_path, paths)


def test_vcf_without_the_training_chromosomes_is_named_as_the_cause(tmp_path):
    """Genes on chr1 (training) and chr22; the VCF declares both in its header but holds records on
    22 only (a per-chromosome download): the error names the VCF's contigs, not a missing gene."""
    seq22 = _genome(np.random.default_rng(1))
    rows = [("22", 151, seq22[150], "A" if seq22[150] != "A" else "C", ["0|1"] * N)]
    paths, _ = _inputs(
        tmp_path, rows=rows, vcf_contig="22", fasta_extra={"chr22": seq22}, vcf_header_contigs={"1": LENGTH, "22": LENGTH},
        gene_rows=[["G1", "1", 150, "+"], ["G2", "22", 150, "-"]],
    )
    res = _cli_prepare(paths, tmp_path / "out")
    assert_one_line_error(res, "v.vcf.gz: contigs: expected genotypes on the chromosomes of the 1 genes on the training chromosomes 1-16 (1;", "records on contigs 22 only")


def test_training_genes_without_any_variant_are_refused(tmp_path):
    seq = _genome(np.random.default_rng(0))
    rows = [("1", 401, seq[400], "G" if seq[400] != "G" else "T", ["0|1"] * N)]  # G2's window only
    paths, _ = _inputs(tmp_path, rows=rows)
    (tmp_path / "train_genes.txt").write_text("G1\n")
    (tmp_path / "val_genes.txt").write_text("G2\n")
    paths |= {"train_genes": tmp_path / "train_genes.txt", "val_genes": tmp_path / "val_genes.txt"}
    with pytest.raises(InputError, match=r"^v.vcf.gz: variants: expected at least one variant in the 100-bp windows of the 1 training genes"):
        _prepare(tmp_path, paths)


def test_duplicated_sample_column_is_reported_as_a_duplicate(tmp_path):
    """pandas renames a second `S03` column to `S03.1`; the error must name the duplicate, not a
    sample missing from the VCF or a sample list."""
    paths, _ = _inputs(tmp_path)
    lines = paths["expression"].read_text().splitlines()
    header = lines[0].split(",")
    header[5] = header[4]  # S03 twice (S04's column renamed)
    paths["expression"].write_text("\n".join([",".join(header)] + lines[1:]) + "\n")
    res = _cli_prepare(paths, tmp_path / "out")
    line = assert_one_line_error(res, "expr.csv: sample columns (header line): expected each column name once; found 'S03' twice")
    assert "S03.1" not in line and "train" not in line


def test_duplicated_covariate_column_is_reported(tmp_path):
    from txrepro.studies.sage_net.pipeline import preprocess_step

    tpm = pd.DataFrame(np.ones((2, 4)) * 5, index=pd.Index(["G1", "G2"], name="gene_id"), columns=["A", "B", "C", "D"])
    tpm.to_csv(tmp_path / "tpm.csv")
    (tmp_path / "cov.csv").write_text("sample,batch,batch\nA,0,1\nB,1,0\nC,0,0\nD,1,1\n")
    with pytest.raises(InputError, match=r"cov.csv: covariate columns \(header line\): expected each column name once; found 'batch' twice"):
        preprocess_step(tmp_path / "tpm.csv", tmp_path / "cov.csv", tmp_path / "adj.csv", n_pcs=0)


class _Payload:
    """Unpickling this object would create the marker file (what a crafted model.pt can do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_model_file_is_refused_without_running_it(tmp_path):
    import torch

    from txrepro.studies.sage_net.train import load_model

    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil_model"
    evil.mkdir()
    torch.save({"state_dict": _Payload(marker), "config": {}, "meta": {}}, evil / "model.pt")
    assert not marker.exists()
    with pytest.raises(InputError, match=r"model.pt: model file: expected a psagenet checkpoint .*refused unread"):
        load_model(evil, "psagenet")
    assert not marker.exists()
    # the same through a user's command (attribute reads --psagenet first)
    paths, _ = _inputs(tmp_path)
    p = _prepare(tmp_path, paths)
    from txrepro.studies.sage_net.predixcan import PrediXcanParams, run_predixcan

    run_predixcan(p, tmp_path / "px", PrediXcanParams())
    res = run_cli(["sage_net.py", "attribute", "--prepared", str(p.path), "--predixcan", str(tmp_path / "px"), "--psagenet", str(evil),
                   "--device", "cpu", "--out", str(tmp_path / "attr")])
    assert_one_line_error(res, "model.pt: model file", "refused unread")
    assert not marker.exists() and not (tmp_path / "attr").exists()


def _files_containing(root: Path, needles: list[str]) -> list[str]:
    """Every file under `root` (text or binary) that contains one of `needles`."""
    hits = []
    for f in root.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            hits += [f"{f.relative_to(root)}: {n}" for n in needles if n.encode() in data]
    return hits


def test_prepared_folder_names_controlled_inputs_by_file_name_and_checksum(tmp_path):
    """manifest.json and the variant caches carry no path of the VCF, expression table or sample lists."""
    from txrepro.io.checksum import file_digest

    private = tmp_path / "dua_private_folder"
    private.mkdir()
    paths, _ = _inputs(private)
    fasta, genes = tmp_path / "ref.fa", tmp_path / "genes.tsv"
    for f in (paths["fasta"], Path(f"{paths['fasta']}.fai"), paths["genes"]):
        shutil.move(f, tmp_path / f.name)
    paths |= {"fasta": fasta, "genes": genes}
    out = tmp_path / "work"
    out.mkdir()
    p = prepare(PrepareInputs(**paths), out / "prepared", PrepareParams(window=WINDOW))
    assert _files_containing(out, [str(private), str(private.resolve()), "dua_private_folder"]) == []
    rec = json.loads((p / "manifest.json").read_text())["inputs"]
    assert rec["vcf"] == {"file": "v.vcf.gz", "path": "path withheld (controlled input)", "checksum": "sha256:" + file_digest(paths["vcf"]),
                          "size_bytes": paths["vcf"].stat().st_size}
    assert rec["train_samples"]["file"] == "train.txt" and rec["fasta"] == str(fasta)  # reference data keeps its path
    assert Prepared(p).reference.lengths == {"chr1": LENGTH}
