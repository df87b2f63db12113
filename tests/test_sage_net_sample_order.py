"""Genotypes belong to the individual they are labelled with, whatever order the sample lists are in.

cyvcf2's `set_samples()` keeps the VCF header's order (ask for [B, A], get columns [A, B]); the
study labelled the columns in the split's order, so with split lists not in header order (the
default seeded split always) personal sequences, PrediXcan dosages, attribution targets and
p-SAGE-net training items belonged to other people. These tests shuffle the sample lists and check
every consumer against pysam's `VariantFile` read by sample NAME (an independent reader), base for
base. The fixture's own lists are slices of the header order, which is why no earlier test saw it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pysam
import pytest

from sage_net_helpers import pysam_alleles, pysam_dosage
from txrepro.studies.sage_net.data import PrepareInputs, PrepareParams, Prepared, prepare
from txrepro.studies.sage_net.genome import decode
from txrepro.studies.sage_net.per_item import personal_haplotypes
from txrepro.studies.sage_net.predict import SequenceProvider

WINDOW = 1_000


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, Path]:
    from txrepro.fixtures.sage_net import write_fixture

    return write_fixture(tmp_path_factory.mktemp("sage_net_fixture"))


def _shuffled_lists(fx: dict[str, Path], out: Path, seed: int) -> dict[str, Path]:
    """The fixture's train/val/test individuals, each list in a random order (not the header's)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    lists = {}
    for split in ("train", "val", "test"):
        ids = fx[f"{split}_samples"].read_text().split()
        ids = list(np.array(ids)[rng.permutation(len(ids))])
        lists[f"{split}_samples"] = out / f"{split}.txt"
        lists[f"{split}_samples"].write_text("\n".join(ids) + "\n")
    return lists


@pytest.fixture(scope="module", params=["shuffled_lists", "seeded_split"])
def prepared(request, fx, tmp_path_factory) -> Prepared:
    """The fixture prepared with shuffled sample lists, and with the default seeded split."""
    tmp = tmp_path_factory.mktemp(request.param)
    lists = _shuffled_lists(fx, tmp / "lists", seed=3) if request.param == "shuffled_lists" else {}
    inputs = PrepareInputs(vcf=fx["vcf"], fasta=fx["fasta"], genes=fx["genes"], expression=fx["expression"], **lists)
    p = Prepared(prepare(inputs, tmp / "prepared", PrepareParams(window=WINDOW)))
    header = list(pysam.VariantFile(str(fx["vcf"])).header.samples)
    assert p.sample_ids != [s for s in header if s in set(p.sample_ids)]  # the point of the test: not header order
    return p


def test_variant_matrix_columns_are_the_labelled_individuals(prepared, fx):
    """Every (allele, individual, haplotype) of every gene window equals pysam's call for that individual."""
    samples = prepared.sample_ids
    for gene in prepared.genes["gene_id"]:
        g = prepared.gene_row(gene)
        gw = prepared.window(gene)
        expected = pysam_alleles(fx["vcf"], g.vcf_contig, *gw.region, samples)
        gv = prepared.variants(gene)
        got: dict = {}
        for i in range(gv.n):
            key = (int(gv.pos[i]), str(gv.ref[i]), str(gv.alt[i]))
            got[key] = [tuple(map(int, h)) for h in gv.haps[i]]
        assert got.keys() == expected.keys(), gene
        for key in got:
            assert got[key] == expected[key], (gene, key)


def test_personal_sequences_match_pysam_base_for_base(prepared, fx):
    """Both haplotypes of every individual (all splits), as the models get them, against the
    per-item construction that reads the individual's genotypes by name with pysam."""
    seqs = SequenceProvider(prepared)
    fa, vf = pysam.FastaFile(str(fx["fasta"])), pysam.VariantFile(str(fx["vcf"]))
    idx = np.arange(len(prepared.sample_ids))
    for gene in prepared.genes["gene_id"]:
        g = prepared.gene_row(gene)
        _, haps = seqs.gene(gene, idx)
        for i, sample in enumerate(prepared.sample_ids):
            exp = personal_haplotypes(fa, vf, fasta_contig=g.fasta_contig, vcf_contig=g.vcf_contig, tss=int(g.tss), strand=g.strand,
                                      sample=sample, length=WINDOW, anchor="window_start")
            assert (decode(haps[i, 0]), decode(haps[i, 1])) == exp, (gene, sample)


def test_predixcan_dosages_predictions_and_weights(prepared, fx, tmp_path):
    """predictions.npz of each individual = intercept + pysam dosages (by name) x weights.tsv, and the
    planted causal SNP carries the largest weight with validation r > 0.7 for every causal gene."""
    from txrepro.studies.sage_net.predixcan import PrediXcanParams, PrediXcanResult, run_predixcan

    px = PrediXcanResult(run_predixcan(prepared, tmp_path / "px", PrediXcanParams()))
    assert px.samples == prepared.sample_ids
    truth = json.loads(fx["truth"].read_text())["genes"]
    for gene in px.ranking():
        g = prepared.gene_row(gene)
        w = px.weights[px.weights["gene_id"] == gene]
        row = px.table.set_index("gene_id").loc[gene]
        expected = np.full(len(px.samples), float(row["intercept"]))
        for pos, ref, alt, coef in zip(w["pos"], w["ref"], w["alt"], w["coef"]):
            expected += coef * pysam_dosage(fx["vcf"], g.vcf_contig, int(pos), ref, alt, px.samples)
        np.testing.assert_allclose(px.predictions(gene), expected, rtol=1e-9, atol=1e-9, err_msg=gene)
    for gene, t in truth.items():
        if t["beta"] == 0:
            continue
        w = px.weights[px.weights["gene_id"] == gene]
        top = w.iloc[int(np.argmax(np.abs(w["coef"].to_numpy())))]
        assert int(top.pos) == t["causal_pos0"] + 1 and top.alt == t["causal_alt"], gene
        assert px.table.set_index("gene_id").loc[gene, "val_pearson"] > 0.7, gene


def test_attribution_target_is_the_planted_snp(prepared, fx, tmp_path):
    """The attribution's default gene and variant (the top PrediXcan gene's largest weight) is a
    planted causal SNP: with genotypes of other people it is whatever noise wins."""
    from txrepro.studies.sage_net.attribution import AttributionParams, choose_target
    from txrepro.studies.sage_net.predixcan import PrediXcanParams, PrediXcanResult, run_predixcan

    px = PrediXcanResult(run_predixcan(prepared, tmp_path / "px", PrediXcanParams()))
    truth = json.loads(fx["truth"].read_text())["genes"]
    gene, row = choose_target(prepared, px, AttributionParams())
    gv = prepared.variants(gene)
    assert truth[gene]["beta"] != 0
    assert (int(gv.pos[row]), str(gv.alt[row])) == (truth[gene]["causal_pos0"], truth[gene]["causal_alt"])


def test_psagenet_training_items_pair_each_sequence_with_its_own_expression(prepared, fx, tmp_path, monkeypatch):
    """Every item of a p-SAGE-net epoch: the deviation target identifies one training individual
    (z-scores are continuous), and the two haplotypes fed with it are that individual's, per pysam."""
    import torch

    from txrepro.studies.sage_net.config import TINY
    from txrepro.studies.sage_net.model import PSageNet
    from txrepro.studies.sage_net.predixcan import PrediXcanParams, PrediXcanResult, run_predixcan
    from txrepro.studies.sage_net.train import TrainParams, train_psagenet

    px = PrediXcanResult(run_predixcan(prepared, tmp_path / "px", PrediXcanParams()))
    seen_inputs, seen_targets = [], []
    forward = PSageNet.forward

    def recording_forward(self, ref, mat, pat):
        if self.training:
            seen_inputs.append((_decode_one_hot(mat), _decode_one_hot(pat)))
        return forward(self, ref, mat, pat)

    mse = torch.nn.functional.mse_loss
    calls = []

    def recording_mse(a, b, *args, **kw):
        calls.append(b.detach().double().numpy().copy())
        return mse(a, b, *args, **kw)

    monkeypatch.setattr(PSageNet, "forward", recording_forward)
    monkeypatch.setattr(torch.nn.functional, "mse_loss", recording_mse)
    cfg = TINY.with_overrides(start_from_ref=False, max_epochs=1)
    train_psagenet(prepared, px, tmp_path / "psagenet", cfg, TrainParams(seed=0, device="cpu", top_genes=1000), None)
    mean_targets, dev_targets = calls[0::2], calls[1::2]  # per batch: mean-head loss, then deviation-head loss
    assert len(dev_targets) == len(seen_inputs) > 0

    # independent truth from the expression CSV, by name: each training gene's mean over the training
    # individuals (identifies the gene of an item) and their z-scores (identify the individual)
    expr = pd.read_csv(fx["expression"], index_col=0)
    train_ids = [prepared.sample_ids[i] for i in prepared.train_idx]
    genes = prepared.genes_in("train")
    means = np.array([expr.loc[g, train_ids].mean() for g in genes])
    fa, vf = pysam.FastaFile(str(fx["fasta"])), pysam.VariantFile(str(fx["vcf"]))
    n_items = 0
    for (mat, pat), mean_t, dev_t in zip(seen_inputs, mean_targets, dev_targets):
        for k in range(len(dev_t)):
            gene = genes[int(np.argmin(np.abs(means - mean_t[k])))]
            vals = expr.loc[gene, train_ids]
            z = ((vals - vals.mean()) / vals.std(ddof=1)).to_numpy()
            hit = np.flatnonzero(np.abs(z - dev_t[k]) < 1e-5)
            assert len(hit) == 1, (gene, dev_t[k])
            sample = train_ids[int(hit[0])]
            g = prepared.gene_row(gene)
            exp = personal_haplotypes(fa, vf, fasta_contig=g.fasta_contig, vcf_contig=g.vcf_contig, tss=int(g.tss), strand=g.strand,
                                      sample=sample, length=WINDOW, anchor="window_start")
            assert (mat[k], pat[k]) == exp, (gene, sample)
            n_items += 1
    n_genes = len(json.loads((tmp_path / "psagenet" / "meta.json").read_text())["train_genes"])
    assert n_genes >= 2 and n_items >= n_genes * len(train_ids) - 1  # all items (a last batch of one is skipped: BatchNorm)


def _decode_one_hot(x) -> list[str]:
    """[batch, 4, L] one-hot (N = 0.25 everywhere) back to strings."""
    x = x.detach().numpy()
    base = np.array(list("ACGT"))[x.argmax(1)]
    base[x.max(1) < 0.9] = "N"
    return ["".join(row) for row in base]


def test_genotype_reader_returns_the_requested_order(tmp_path):
    """The one place that maps samples to VCF columns: [C, A] gives C's genotypes first."""
    from sage_net_helpers import write_vcf
    from txrepro.studies.sage_net.genome import GenotypeReader

    vcf = write_vcf(tmp_path / "v.vcf.gz", {"1": 100}, ["A", "B", "C"], [("1", 5, "A", "C", ["0|0", "0|1", "1|1"]), ("1", 9, "G", "T", ["1|0", "0|0", "0/1"])])
    with GenotypeReader(vcf, ["C", "A"]) as reader:
        got = [gt.tolist() for _, gt in reader.records("1", 0, 100)]
    assert got == [[[1, 1, 1], [0, 0, 1]], [[0, 1, 0], [1, 0, 1]]]  # rows C, A; last column = phased
