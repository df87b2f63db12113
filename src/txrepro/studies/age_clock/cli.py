"""`bin/age_clock.py <step>`: one sub-command per step; heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from txrepro.runtime import add_device_argument
from txrepro.studies.age_clock.config import PROTOCOLS, SCALES


def _overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _cmd_prepare(args: argparse.Namespace) -> int:
    from txrepro.studies.age_clock.config import protocol_config
    from txrepro.studies.age_clock.data import InputColumns, prepare

    over = _overrides(args, ("seed", "n_genes", "test_donor_fraction", "min_vocab_fraction"))
    if args.select_on_test:
        over["select_on_test"] = True
    if args.random_genes:
        over["gene_source"] = "random"
    cfg = protocol_config(args.age_protocol, scale=args.scale, overrides=over)
    columns = InputColumns(args.age_column, args.tissue_column, args.donor_column, args.cell_id_column, args.gene_column, args.layer, args.split_column)
    tissues = [t.strip() for t in args.tissues.split(",") if t.strip()] if args.tissues else None
    prepare(args.input, args.checkpoint, args.out, cfg, columns, gene_table=args.gene_table, tissues=tissues)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from txrepro.studies.age_clock.train import train_scgpt

    over = _overrides(args, ("epochs", "lr", "batch_size", "seed"))
    if args.no_shuffle:
        over["shuffle"] = False
    train_scgpt(args.prepared, args.checkpoint, args.out, overrides=over, verify_manifest=args.verify_checksums, device=args.device)
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    from txrepro.studies.age_clock.train import train_logreg

    train_logreg(args.prepared, args.out)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from txrepro.studies.age_clock.evaluate import evaluate

    evaluate(args.prepared, args.model, args.logreg, args.outdir, device=args.device)
    return 0


def _cmd_perturb(args: argparse.Namespace) -> int:
    from txrepro.studies.age_clock.perturb import perturb

    over = _overrides(args, ("perturb_mode", "perturb_pooling", "n_runs", "cells_per_tissue", "cells_per_group", "perturb_batch_size"))
    perturb(args.prepared, args.model, args.out, overrides=over, device=args.device)
    return 0


def _cmd_statistics(args: argparse.Namespace) -> int:
    from txrepro.studies.age_clock.statistics import statistics

    statistics(args.perturbation, args.outdir, reference=args.reference or (), overrides=_overrides(args, ("alpha",)))
    return 0


def _cmd_finish(args: argparse.Namespace) -> int:
    from txrepro.io.mapping import read_mapping
    from txrepro.studies.age_clock.pipeline import collect

    params = read_mapping(args.params_json, "params JSON") if args.params_json else {}
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    collect(Path(args.outdir), [Path(m) for m in args.metrics], figures=[Path(f) for f in args.figures], data_source=args.data_source, protocols=protocols, params=params)
    return 0


def add_steps(steps: argparse._SubParsersAction, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = steps.add_parser("prepare", help="validate the h5ad, label mid/old, split by donor, select genes, bin")
    p.add_argument("--input", required=True, help="h5ad of raw counts (obs: age, tissue, donor; var: HGNC symbols)")
    p.add_argument("--checkpoint", required=True, help="scGPT checkpoint folder (its vocab.json maps the genes)")
    p.add_argument("--out", required=True, help="prepared h5ad to write")
    p.add_argument("--age_protocol", choices=PROTOCOLS, default="repository", help="repository (the scripts) or article (IJMS 2025)")
    p.add_argument("--scale", choices=SCALES, default="full", help="full: the protocol's sizes; tiny: CPU sizes for fixtures")
    p.add_argument("--gene_table", default=None, help="AgeAnno DEG table (repository) or gene list (article); default: bundled")
    p.add_argument("--random_genes", action="store_true", help="repository variant: a seeded random choice of genes")
    p.add_argument("--select_on_test", action="store_true", help="original behaviour: choose the best epoch on the test cells")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--n_genes", type=int, default=None, help="genes to keep (repository: 3000)")
    p.add_argument("--test_donor_fraction", type=float, default=None)
    p.add_argument("--min_vocab_fraction", type=float, default=None, help="fail when fewer input genes are in the vocabulary")
    p.add_argument("--age_column", default="age", help="obs column with age in years or groups mid/old")
    p.add_argument("--tissue_column", default="tissue")
    p.add_argument("--donor_column", default="donor")
    p.add_argument("--cell_id_column", default=None, help="obs column with cell ids (default: obs_names)")
    p.add_argument("--gene_column", default=None, help="var column with HGNC symbols (default: var_names)")
    p.add_argument("--layer", default=None, help="layer with raw counts (default: X)")
    p.add_argument("--split_column", default=None, help="obs column with train/test (default: donor-level split per tissue)")
    p.add_argument("--tissues", default=None, help="comma list of tissues to keep")
    add_common(p)
    p.set_defaults(func=_cmd_prepare)

    p = steps.add_parser("train", help="fine-tune scGPT (repository) or train the head on the frozen encoder (article)")
    p.add_argument("--prepared", required=True)
    p.add_argument("--checkpoint", required=True, help="pretrained scGPT checkpoint folder")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no_shuffle", action="store_true", help="original behaviour: train in file order")
    p.add_argument("--verify_checksums", action="store_true", help="check the checkpoint's files against assets/data_manifest.tsv")
    add_device_argument(p)
    add_common(p)
    p.set_defaults(func=_cmd_train)

    p = steps.add_parser("baseline", help="L1 logistic regression on the same genes")
    p.add_argument("--prepared", required=True)
    p.add_argument("--out", required=True, help="pickle to write")
    add_common(p)
    p.set_defaults(func=_cmd_baseline)

    p = steps.add_parser("evaluate", help="test-cell metrics overall and per tissue, ROC figures")
    p.add_argument("--prepared", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--logreg", required=True)
    p.add_argument("--outdir", required=True)
    add_device_argument(p)
    add_common(p)
    p.set_defaults(func=_cmd_evaluate)

    p = steps.add_parser("perturb", help="in-silico overexpression and knockdown of every gene (batched)")
    p.add_argument("--prepared", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="parquet to write")
    p.add_argument("--perturb_mode", choices=("append", "replace"), default=None, help="append: the original; replace: edit the gene's own value")
    p.add_argument("--perturb_pooling", choices=("trained", "avg-pool"), default=None, help="avg-pool: the original perturbation script's pooling mismatch")
    p.add_argument("--n_runs", type=int, default=None)
    p.add_argument("--cells_per_tissue", type=int, default=None)
    p.add_argument("--cells_per_group", type=int, default=None)
    p.add_argument("--perturb_batch_size", type=int, default=None, help="sequences per forward pass")
    add_device_argument(p)
    add_common(p)
    p.set_defaults(func=_cmd_perturb)

    p = steps.add_parser("statistics", help="Mann-Whitney, Holm, calls, stability, volcano and stability plots")
    p.add_argument("--perturbation", required=True, help="parquet written by perturb")
    p.add_argument("--outdir", required=True)
    p.add_argument("--reference", nargs="*", default=[], help="ageing-gene tables (Open Genes, GenAge) for novelty")
    p.add_argument("--alpha", type=float, default=None)
    add_common(p)
    p.set_defaults(func=_cmd_statistics)

    p = steps.add_parser("finish", help="collect the steps' metrics into metrics.tsv, run_info.json and MultiQC content")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--figures", nargs="*", default=[])
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--data_source", choices=("fixture", "provided"), default="provided")
    p.add_argument("--params_json", default=None)
    p.add_argument("--outdir", required=True)
    add_common(p)
    p.set_defaults(func=_cmd_finish)
