"""`sage_net.py <step>`: one sub-command per pipeline step (what the Nextflow processes call)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from txrepro.runtime import add_device_argument

STEP_HELP = {
    "index-vcf": "bgzip (re-compressing plain gzip) and tabix-index a VCF",
    "preprocess-expression": "log2(TPM+1), regress known covariates and expression PCs (PCAForQTL rule), add gene means back",
    "prepare": "check inputs, split individuals and genes, z-scores, per-gene variant matrices",
    "predixcan": "PrediXcan elastic net per gene; ranks genes by validation r",
    "train-rsagenet": "train r-SAGE-net on reference sequences (mean expression)",
    "train-psagenet": "train p-SAGE-net on personal sequences, initialised from r-SAGE-net",
    "attribute": "ISM and gradient x input of p-SAGE-net around a variant",
    "evaluate": "per-gene r on held-out individuals, metrics.tsv, figures, run_info.json",
}


def _path(p: str | None) -> Path | None:
    return Path(p) if p else None


def add_steps(steps: argparse._SubParsersAction, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    def step(name: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = steps.add_parser(name, help=STEP_HELP[name], description=STEP_HELP[name])
        add_common(p)
        p.set_defaults(func=func)
        return p

    p = step("index-vcf", _index_vcf)
    p.add_argument("--vcf", required=True, help="VCF (plain, gzip or bgzip)")
    p.add_argument("--out", default=None, help="bgzip output (default: beside the input, never overwriting it)")

    p = step("preprocess-expression", _preprocess)
    p.add_argument("--tpm", required=True, help="CSV genes x samples of TPM")
    p.add_argument("--covariates", default=None, help="CSV samples x known covariates (first column: sample id)")
    p.add_argument("--n-pcs", type=int, default=10, help="expression PCs regressed out (paper: 10)")
    p.add_argument("--r2-cutoff", type=float, default=0.9, help="drop a known covariate when the PCs explain it with R2 >= this")
    p.add_argument("--out", required=True, help="adjusted expression CSV (genes x samples)")

    p = step("prepare", _prepare)
    p.add_argument("--vcf", required=True)
    p.add_argument("--fasta", required=True)
    p.add_argument("--genes", required=True, help="gene table: gene_id (or ensg/region_id), chr, tss (or pos), strand")
    p.add_argument("--expression", required=True, help="adjusted expression CSV, genes x samples")
    for s in ("train", "val", "test"):
        p.add_argument(f"--{s}-samples", default=None, help=f"{s} individuals, one per line (default: seeded 80/10/10 split)")
        p.add_argument(f"--{s}-genes", default=None, help=f"{s} genes, one per line (default: by chromosome)")
    p.add_argument("--samples", default=None, help="external cohort: individuals to evaluate (default: VCF and expression overlap)")
    p.add_argument("--window", type=int, default=40_000, help="window around the TSS in bp")
    p.add_argument("--anchor", default="window_start", choices=("window_start", "tss"), help="how indels keep windows at a fixed length")
    p.add_argument("--cohort", default="ROSMAP", help="dataset name in the metrics")
    p.add_argument("--role", default="main", choices=("main", "external"))
    p.add_argument("--split-seed", type=int, default=17)
    p.add_argument("--max-ref-mismatch", type=float, default=0.05, help="stop when more REF alleles than this fraction differ from the FASTA")
    p.add_argument("--require-phased", default="false", choices=("true", "false"), help="true: stop on unphased heterozygous genotypes (default: count and warn)")
    p.add_argument("--index-vcf", action="store_true", help="index an unindexed or plain-gzip VCF on the fly instead of stopping")
    p.add_argument("--cache-dir", default=None, help="reuse per-gene variant matrices from this folder across runs")
    p.add_argument("--out", required=True)

    p = step("predixcan", _predixcan)
    p.add_argument("--prepared", required=True)
    p.add_argument("--maf", type=float, default=0.01, help="features with MAF > this among training individuals")
    p.add_argument("--alpha-grid", default="all_individuals", choices=("all_individuals", "train_val"), help="rows sklearn's alpha grid sees (original: all)")
    p.add_argument("--out", required=True)

    for name, func in (("train-rsagenet", _train_r), ("train-psagenet", _train_p)):
        p = step(name, func)
        p.add_argument("--prepared", required=True)
        p.add_argument("--fasta", default=None, help="reference FASTA (default: the path recorded by prepare)")
        p.add_argument("--config", default="paper", choices=("paper", "tiny"))
        p.add_argument("--seed", type=int, default=42)
        add_device_argument(p)
        p.add_argument("--max-epochs", type=int, default=None, help="override the config's epochs")
        p.add_argument("--snvs-only", action="store_true", help="insert SNVs only (the original's only_snps)")
        p.add_argument("--min-maf", type=float, default=-1.0, help="insert variants with MAF > this only (-1: all, the default)")
        p.add_argument("--out", required=True)
        if name == "train-psagenet":
            p.add_argument("--predixcan", required=True)
            p.add_argument("--init", default=None, help="r-SAGE-net folder to initialise from")
            p.add_argument("--no-init-from-ref", action="store_true", help="random initialisation (the paper's ablation)")
            p.add_argument("--top-genes", type=int, default=1000)
            p.add_argument("--early-stopping-patience", type=int, default=None, help="0 disables (the notebook's behaviour)")
            p.add_argument("--raw-difference", action="store_true", help="deviation target = expression - training mean (not z-score)")

    p = step("attribute", _attribute)
    p.add_argument("--prepared", required=True)
    p.add_argument("--fasta", default=None)
    p.add_argument("--predixcan", required=True)
    p.add_argument("--psagenet", required=True)
    p.add_argument("--gene", default=None, help="default: top PrediXcan gene on the training chromosomes")
    p.add_argument("--variant", default=None, help="1-based position or pos:ref:alt (default: the gene's largest |PrediXcan coef|)")
    p.add_argument("--half-width", type=int, default=100, help="ISM half-width around the variant in bp")
    p.add_argument("--top-genes", type=int, default=1000)
    add_device_argument(p)
    p.add_argument("--out", required=True)

    p = step("evaluate", _evaluate)
    p.add_argument("--prepared", required=True)
    p.add_argument("--fasta", default=None)
    p.add_argument("--predixcan", required=True)
    p.add_argument("--rsagenet", required=True)
    p.add_argument("--psagenet", required=True)
    p.add_argument("--external-prepared", default=None, help="prepared external cohort (all individuals evaluated)")
    p.add_argument("--attribution", default=None, help="attribute step folder (figure and peak distance)")
    p.add_argument("--cohort", default="ROSMAP")
    p.add_argument("--external-cohort", default="GTEx")
    p.add_argument("--top-genes", type=int, default=1000)
    add_device_argument(p)
    p.add_argument("--data-source", default="provided", choices=("fixture", "provided"))
    p.add_argument("--outdir", required=True)


def _index_vcf(a: argparse.Namespace) -> int:
    from txrepro.studies.sage_net.genome import index_vcf

    print(index_vcf(a.vcf, a.out))
    return 0


def _preprocess(a: argparse.Namespace) -> int:
    from txrepro.studies.sage_net.pipeline import preprocess_step

    preprocess_step(Path(a.tpm), _path(a.covariates), Path(a.out), n_pcs=a.n_pcs, r2_cutoff=a.r2_cutoff)
    return 0


def _prepare(a: argparse.Namespace) -> int:
    from txrepro.studies.sage_net.data import PrepareInputs, PrepareParams, prepare

    inputs = PrepareInputs(
        vcf=Path(a.vcf), fasta=Path(a.fasta), genes=Path(a.genes), expression=Path(a.expression),
        train_samples=_path(a.train_samples), val_samples=_path(a.val_samples), test_samples=_path(a.test_samples), samples=_path(a.samples),
        train_genes=_path(a.train_genes), val_genes=_path(a.val_genes), test_genes=_path(a.test_genes),
    )
    params = PrepareParams(
        window=a.window, anchor=a.anchor, cohort=a.cohort, role=a.role, split_seed=a.split_seed, max_ref_mismatch=a.max_ref_mismatch,
        require_phased=a.require_phased == "true", index_vcf=a.index_vcf, cache_dir=a.cache_dir,
    )
    prepare(inputs, Path(a.out), params)
    return 0


def _predixcan(a: argparse.Namespace) -> int:
    from txrepro.studies.sage_net.data import Prepared
    from txrepro.studies.sage_net.predixcan import PrediXcanParams, run_predixcan

    run_predixcan(Prepared(a.prepared), Path(a.out), PrediXcanParams(maf_threshold=a.maf, alpha_grid=a.alpha_grid))
    return 0


def _train_params(a: argparse.Namespace, top_genes: int = 1000):
    from txrepro.studies.sage_net.predict import VariantOptions
    from txrepro.studies.sage_net.train import TrainParams

    return TrainParams(seed=a.seed, device=a.device, top_genes=top_genes, max_epochs=a.max_epochs, variant_options=VariantOptions(a.snvs_only, a.min_maf))


def _train_r(a: argparse.Namespace) -> int:
    from txrepro.studies.sage_net.config import get_config
    from txrepro.studies.sage_net.data import Prepared
    from txrepro.studies.sage_net.train import train_rsagenet

    train_rsagenet(Prepared(a.prepared, a.fasta), Path(a.out), get_config(a.config), _train_params(a))
    return 0


def _train_p(a: argparse.Namespace) -> int:
    from txrepro.studies.sage_net.config import get_config
    from txrepro.studies.sage_net.data import Prepared
    from txrepro.studies.sage_net.predixcan import PrediXcanResult
    from txrepro.studies.sage_net.train import train_psagenet

    cfg = get_config(a.config).with_overrides(
        start_from_ref=False if a.no_init_from_ref else None, early_stopping_patience=a.early_stopping_patience,
        zscore=False if a.raw_difference else None,
    )
    train_psagenet(Prepared(a.prepared, a.fasta), PrediXcanResult(a.predixcan), Path(a.out), cfg, _train_params(a, a.top_genes), _path(a.init))
    return 0


def _attribute(a: argparse.Namespace) -> int:
    from txrepro.studies.sage_net.attribution import AttributionParams, run_attribution
    from txrepro.studies.sage_net.data import Prepared
    from txrepro.studies.sage_net.predixcan import PrediXcanResult

    params = AttributionParams(gene=a.gene, variant=a.variant, half_width=a.half_width, device=a.device, top_genes=a.top_genes)
    run_attribution(Prepared(a.prepared, a.fasta), PrediXcanResult(a.predixcan), Path(a.psagenet), Path(a.out), params)
    return 0


def _evaluate(a: argparse.Namespace) -> int:
    from txrepro.studies.sage_net.pipeline import evaluate_step

    run = evaluate_step(
        Path(a.prepared), Path(a.predixcan), Path(a.rsagenet), Path(a.psagenet), Path(a.outdir), fasta=_path(a.fasta),
        external=_path(a.external_prepared), attribution=_path(a.attribution), cohort=a.cohort, external_cohort=a.external_cohort,
        top_genes=a.top_genes, device=a.device, data_source=a.data_source,
    )
    print(f"metrics: {run.metrics}")
    return 0
