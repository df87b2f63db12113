"""`bin/drugseq.py` / `txrepro drugseq`: prepare, train, analyse (the core adds `fixture`).

Options are built from the params dataclasses (one source of defaults); heavy libraries (torch,
anndata) are imported inside the handlers so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from txrepro.studies.drugseq.params import AnalyseParams, TrainParams

INPUT_FILES = (("expr", "expr_mat.csv"), ("scores", "scores_3_z.csv"), ("labels", "labels_cls.csv"), ("meta", "meta_id.csv"),
               ("wells", "well_id.csv"), ("legacy", "activation_score_old.csv"), ("clusters", "cluster_id.csv"))
HELP = {
    "use_zscore": "per-gene z-score with training-split mean and s.d. (saved beside the model as gene_scaler.csv)",
    "attention_dropout": "dropout on attention weights; auto = --dropout on CUDA, 0 on CPU (PyTorch's fused CPU kernel takes no dropout)",
    "attention": "fused: scaled_dot_product_attention (default); explicit: full attention maps (benchmark reference)",
    "best_checkpoint": "copy: deep copy at the best validation loss; original: the original's aliasing bug (the best file holds the last weights)",
    "device": "auto (CUDA when present), cpu or cuda",
    "dataset": "dataset key in metrics.tsv",
    "control": "metabolite id of the control wells (the latent centre)",
    "dmso_cluster": "centre on the control wells of this cluster only (e.g. C6); default: all control wells, as the original ran",
    "gradinput_target": "act (activation head, as the description; default), logit (the code's default), scores3[i] or latent[i]",
    "checkpoint": "which saved weights to analyse",
    "top_n": "bars in the top-metabolite and top-gene figures",
}
CHOICES = {"attention": ("fused", "explicit"), "best_checkpoint": ("copy", "original"), "checkpoint": ("best", "last")}


def _attention_dropout(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number in [0, 1), got {text!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number in [0, 1), got {text!r}")
    return v


def add_dataclass_options(p: argparse.ArgumentParser, cls: type) -> None:
    """One `--<field>` per dataclass field, typed and defaulted from the dataclass."""
    for f in dataclasses.fields(cls):
        flag = f"--{f.name.replace('_', '-')}"
        help_text = f"{HELP.get(f.name, '')} (default {f.default})".strip()
        if isinstance(f.default, bool):
            p.add_argument(flag, action="store_true", help=help_text)
        elif f.name == "attention_dropout":
            p.add_argument(flag, type=_attention_dropout, default=f.default, help=help_text)
        elif f.name in CHOICES:
            p.add_argument(flag, choices=CHOICES[f.name], default=f.default, help=help_text)
        else:
            kind = type(f.default) if f.default is not None else str
            p.add_argument(flag, type=kind, default=f.default, help=help_text)


def _fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}


def _prepare(args: argparse.Namespace) -> int:
    from txrepro.studies.drugseq.pipeline import prepare

    inputs = {k: getattr(args, k) for k in ("h5ad", "data_dir", *dict(INPUT_FILES)) if getattr(args, k)}
    if not inputs:
        from txrepro.errors import InputError

        raise InputError("prepare", "inputs", "--data-dir, --h5ad or the CSV files (--expr, --scores, --labels, --meta, --wells)", "none given")
    path, _ = prepare(args.out, data_source=args.data_source, control=args.control, legacy_lookup=args.legacy_lookup, **inputs)
    print(path)
    return 0


def _train(args: argparse.Namespace) -> int:
    from txrepro.studies.drugseq.data import read_prepared
    from txrepro.studies.drugseq.train import train_model

    params = TrainParams(**_fields(args, TrainParams))
    data, _ = read_prepared(args.prepared)
    result = train_model(data, args.out, params)
    print(f"best epoch {result.best_epoch} (val loss {result.best_val_loss:.4f}): {result.model_dir}")
    return 0


def _analyse(args: argparse.Namespace) -> int:
    from txrepro.studies.drugseq.analyse import analyse

    run = analyse(args.prepared, args.model, args.outdir, AnalyseParams(**_fields(args, AnalyseParams)))
    print(run.metrics)
    return 0


def add_steps(steps: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = steps.add_parser("prepare", help="validate the CSV set or one h5ad into the prepared h5ad")
    p.add_argument("--data-dir", default=None,
                   help="folder with expr_mat.csv, scores_3_z.csv, labels_cls.csv, meta_id.csv, well_id.csv [, activation_score_old.csv, cluster_id.csv]")
    p.add_argument("--h5ad", default=None,
                   help="one h5ad instead: X wells x genes; obs meta_id, label_cls, pseudotime_z, cytoscore_z, Tscore_z [, activation_score_old, cluster_id, well_id]")
    for key, name in INPUT_FILES:
        p.add_argument("--legacy-score" if key == "legacy" else f"--{key}", dest=key, default=None, help=f"path of {name} (overrides --data-dir)")
    p.add_argument("--legacy-lookup", choices=("auto", "original", "off"), default="auto",
                   help="auto: activation_score_old.csv, else one file named like it (the repository ships e.activation_score_old.csv) with a "
                        "warning; original: the exact name only, as the original loader (regulariser off with the repository as shipped); off: never")
    p.add_argument("--control", default=AnalyseParams.control, help=HELP["control"])
    p.add_argument("--data-source", choices=("fixture", "provided"), default="provided", help="recorded in run_info.json")
    p.add_argument("--out", required=True, help="prepared h5ad to write")
    add_common(p)
    p.set_defaults(func=_prepare)

    p = steps.add_parser("train", help="train the multi-task Transformer; writes model_best.pt and model_last.pt")
    p.add_argument("--prepared", required=True, help="prepared h5ad from `prepare`")
    p.add_argument("--out", required=True, help="model folder to write")
    add_dataclass_options(p, TrainParams)
    add_common(p)
    p.set_defaults(func=_train)

    p = steps.add_parser("analyse", help="predictions, validation metrics, latent rankings, Grad x Input, figures, metrics.tsv")
    p.add_argument("--prepared", required=True)
    p.add_argument("--model", required=True, help="model folder from `train`")
    p.add_argument("--outdir", required=True)
    add_dataclass_options(p, AnalyseParams)
    add_common(p)
    p.set_defaults(func=_analyse)
