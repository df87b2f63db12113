"""`bin/gpo_vae.py` / `txrepro gpo_vae`: prepare, train, evaluate (one Nextflow process each)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

DEVICE_HELP = "auto (CUDA when present), cpu or cuda"


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="auto", help="named config (rpe1, k562, adamson, tiny), a YAML file, or auto (from --dataset)")
    p.add_argument("--dataset", default="adamson", help="dataset key of the metrics: replogle_rpe1, replogle_k562, adamson")


def _prepare(args: argparse.Namespace) -> int:
    from txrepro.studies.gpo_vae.config import load_config
    from txrepro.studies.gpo_vae.pipeline import check_dataset, run_prepare

    from txrepro.studies.gpo_vae.inputs import verify_files

    # Checksums first: nothing else is read from a file that is not the one its checksum names.
    files = [("--input", args.input, args.input_checksum or None)]
    if args.summary_stats:
        files.append(("--summary-stats", args.summary_stats, None))
    verify_files(files, use_manifest=not args.skip_manifest_checksums)
    cfg = load_config(args.config, dataset=check_dataset(args.dataset))
    run_prepare(args.input, args.out, cfg, summary_stats=args.summary_stats or None, summary_sheet=args.summary_sheet or None,
                reference_networks=args.reference_networks or None, device=args.device)
    print(args.out)
    return 0


def _train(args: argparse.Namespace) -> int:
    from txrepro.studies.gpo_vae.config import load_config
    from txrepro.studies.gpo_vae.pipeline import check_dataset, run_train

    dataset = check_dataset(args.dataset)
    cfg = load_config(args.config, dataset=dataset)
    if args.max_epochs is not None:
        cfg.train.max_epochs = args.max_epochs
    out, _ = run_train(args.prepared, args.out, cfg, seed=args.seed, device=args.device, figures_dir=args.figures_dir, dataset=dataset)
    print(out)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from txrepro.studies.gpo_vae.pipeline import run_evaluate

    extra = [Path(f) for f in args.figures] if args.figures else []
    run = run_evaluate(args.prepared, args.checkpoint, args.outdir, dataset=args.dataset, reference_networks=args.reference_networks,
                       seed=args.seed, device=args.device, ate_particles=args.ate_particles, data_source=args.data_source,
                       extra_figures=extra, inputs={"prepared": str(args.prepared), "checkpoint": str(args.checkpoint)},
                       missing_datasets=[d for d in (args.not_provided or "").split(",") if d.strip()])
    print(run.metrics)
    return 0


def add_steps(steps: argparse._SubParsersAction, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = steps.add_parser("prepare", help="QC, strong-perturbation filters, FC3 genes, split and OT control pairing")
    p.add_argument("--input", required=True, help="Perturb-seq counts h5ad (obs['gene'], 'non-targeting' controls), or the authors' preprocessed h5ad")
    p.add_argument("--out", required=True, help="prepared h5ad to write")
    p.add_argument("--summary-stats", default=None, help="Replogle/Adamson summary statistics (CSV/TSV) for strong-perturbation filters")
    p.add_argument("--summary-sheet", default=None, help="sheet name when --summary-stats is an xlsx file (default: the config's, "
                   "TabB_K562_day6_summary_stat / TabC_RPE1_summary_statistic for k562 / rpe1)")
    p.add_argument("--reference-networks", default=None, help="reference edge lists for evaluate, checked here before any work")
    p.add_argument("--input-checksum", default=None, help="md5:<hex> or sha256:<hex> the input must match (besides assets/data_manifest.tsv)")
    p.add_argument("--skip-manifest-checksums", action="store_true",
                   help="do not check inputs against the checksums assets/data_manifest.tsv records for their file names")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    _config_args(p)
    add_common(p)
    p.set_defaults(func=_prepare)

    p = steps.add_parser("train", help="train GPO-VAE with early stopping on the validation loss")
    p.add_argument("--prepared", required=True, help="prepared h5ad from the prepare step")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt); history and summary are written beside it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=None, help="override the config's max_epochs")
    p.add_argument("--figures-dir", default=None, help="folder for gpo_vae_training_curve.png (default: figures/ beside --out)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    _config_args(p)
    add_common(p)
    p.set_defaults(func=_train)

    p = steps.add_parser("evaluate", help="ATE metrics, training-mean baseline, GRN statistics and reference precision/recall")
    p.add_argument("--prepared", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--outdir", required=True, help="writes metrics.tsv, gpo_vae_metrics_mqc.tsv, run_info.json, figures/, grn_edges.tsv")
    p.add_argument("--dataset", default="adamson", help="dataset key of the metrics: replogle_rpe1, replogle_k562, adamson")
    p.add_argument("--reference-networks", default=None, help="folder of edge lists (biogrid, corum, regnetwork, string: .pkl/.tsv/.csv)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ate-particles", type=int, default=None, help="override the config's number of ATE particles")
    p.add_argument("--data-source", default="provided", choices=("provided", "fixture"))
    p.add_argument("--figures", nargs="*", default=[], help="figures of earlier steps to list in run_info")
    p.add_argument("--not-provided", default="", help="comma list of the paper's datasets without data in this run: "
                   "their published numbers are written as `not computed: data not provided`")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_common(p)
    p.set_defaults(func=_evaluate)
