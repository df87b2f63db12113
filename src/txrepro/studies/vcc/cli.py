"""`vcc.py <step>` / `txrepro vcc <step>`: one sub-command per step, as the Nextflow processes call them.

Option names are part of the pipeline's interface (modules/vcc.nf passes them): keep them stable.
Heavy libraries are imported inside the handlers so `--help` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from txrepro.runtime import add_device_argument
from txrepro.studies.vcc.params import (
    SCGPT_PRESETS,
    STATE_PRESETS,
    DataParams,
    ModelParams,
    ScGPTParams,
    StateParams,
    option,
    preset,
)

D, M = DataParams(), ModelParams()


def _overrides(pairs: list[str] | None, what: str) -> dict[str, str]:
    """`--set key=value` pairs (fields of the preset) as a dict."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            from txrepro.errors import InputError

            raise InputError("command line", what, "key=value pairs", pair)
        out[key.strip()] = value.strip()
    return out


def _state_params(args: argparse.Namespace) -> StateParams:
    return preset(STATE_PRESETS, args.state_config, "vcc_state_config", _overrides(args.state_set, option("--state-set", "vcc_state_<field>")))


def _scgpt_params(args: argparse.Namespace) -> ScGPTParams:
    return preset(SCGPT_PRESETS, args.scgpt_config, "vcc_scgpt_config", _overrides(args.scgpt_set, option("--scgpt-set", "vcc_scgpt_<field>")))


def _add_state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-config", default="state_sm", choices=sorted(STATE_PRESETS), help="STATE preset (state_sm: the project's)")
    p.add_argument("--state-set", nargs="*", default=None, metavar="KEY=VALUE", help="override preset fields, e.g. max_steps=1000")


def _add_scgpt_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scgpt-config", default="tutorial", choices=sorted(SCGPT_PRESETS), help="scGPT preset (tutorial: its perturbation tutorial's)")
    p.add_argument("--scgpt-set", nargs="*", default=None, metavar="KEY=VALUE", help="override preset fields, e.g. epochs=5")
    p.add_argument("--scgpt-checkpoint", default=None, help="pretrained scGPT folder (args.json, best_model.pt, vocab.json)")
    p.add_argument("--scgpt-allow-random-init", action="store_true", help="without a checkpoint, start from random weights (rows labelled so)")
    p.add_argument("--scgpt-verify-checksums", action="store_true", help="check the checkpoint files against assets/data_manifest.tsv")


def _threads(args: argparse.Namespace) -> int:
    return max(1, int(args.threads or 1))


def _threads_help(p: argparse.ArgumentParser, what: str) -> None:
    """Say what --threads sets in this step (the common help speaks of torch only)."""
    for action in p._actions:
        if action.dest == "threads":
            action.help = f"CPU threads for {what} (parameter vcc_threads; Nextflow passes task.cpus)"


def _prepare(args: argparse.Namespace) -> int:
    from txrepro.studies.vcc.preprocess import prepare

    dp = DataParams(pert_col=args.pert_col, control=args.control, gene_col=args.gene_col, batch_col=args.batch_col,
                    guide_col=args.guide_col, n_hvg=args.n_hvg, seed=args.seed, val_fraction=args.val_fraction, chunk_size=args.chunk_size)
    r = prepare(args.input, args.outdir, dp=dp, test_genes_file=args.test_genes, input_checksum=args.input_checksum,
                dataset=args.dataset or None, fixture=args.data_source == "fixture", features=args.features or None)
    print(f"prepared\t{r.outdir}\t{r.n_obs} cells x {r.n_vars} genes, {r.n_hvg} HVGs, "
          f"train {len(r.split['train'])} / val {len(r.split['val'])} / test {len(r.split['test'])} perturbations")
    return 0


def _reference(args: argparse.Namespace) -> int:
    from txrepro.studies.vcc.evaluate import reference

    print(f"reference\t{reference(args.prepared, args.outdir, threads=_threads(args))}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from txrepro.studies.vcc.models import predict

    mp = ModelParams(seed=args.seed, n_pcs=args.n_pcs, pca_cells=args.pca_cells, ridge_alphas=tuple(args.ridge_alphas),
                     rf_trees=args.rf_trees, rf_components=args.rf_components)
    h5, js = predict(args.prepared, args.model, args.outdir, features=args.features, params=mp, threads=_threads(args),
                     trained=Path(args.trained) if args.trained else None, device=args.device, scgpt=_scgpt_params(args),
                     scgpt_checkpoint=Path(args.scgpt_checkpoint) if args.scgpt_checkpoint else None,
                     scgpt_allow_random_init=args.scgpt_allow_random_init, scgpt_verify_checksums=args.scgpt_verify_checksums)
    print(f"predictions\t{h5}\t{js}")
    return 0


def _state_train(args: argparse.Namespace) -> int:
    from txrepro.studies.vcc.state import train_state

    out = train_state(args.prepared, args.outdir, params=_state_params(args), features=args.features, seed=args.seed,
                      batch_col=args.batch_col, device=args.device)
    print(f"state_model\t{out}")
    return 0


def _scgpt_finetune(args: argparse.Namespace) -> int:
    from txrepro.studies.vcc.scgpt_perturb import finetune_scgpt

    out = finetune_scgpt(args.prepared, args.outdir, params=_scgpt_params(args),
                         checkpoint=Path(args.scgpt_checkpoint) if args.scgpt_checkpoint else None,
                         allow_random_init=args.scgpt_allow_random_init, verify_checksums=args.scgpt_verify_checksums,
                         seed=args.seed, device=args.device)
    print(f"scgpt_model\t{out}")
    return 0


def _support_set(args: argparse.Namespace) -> int:
    from txrepro.studies.vcc.support_set import support_set_features

    print(f"features\t{support_set_features(args.zip, args.outdir)}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from txrepro.studies.vcc.score import score

    out = score(args.real, args.pred, args.outdir, pert_col=args.pert_col, control=args.control, model=args.model, dataset=args.dataset,
                baseline=args.baseline or None, threads=_threads(args))
    print(f"metrics\t{out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from txrepro.studies.vcc.evaluate import evaluate

    print(f"evaluation\t{evaluate(args.prepared, args.reference, args.predictions, args.model, args.outdir, threads=_threads(args))}")
    return 0


def _summarise(args: argparse.Namespace) -> int:
    import json

    from txrepro.studies.vcc.summarise import summarise

    params = json.loads(Path(args.params_json).read_text()) if args.params_json else {}
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    not_run = dict(kv.split("=", 1) for kv in args.not_run) if args.not_run else None
    run = summarise(args.evaluations, args.outdir, data_source=args.data_source, selected_models=models, params=params, not_run=not_run)
    print(f"metrics\t{run.metrics}")
    return 0


def add_steps(steps: argparse._SubParsersAction, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = steps.add_parser("prepare", help="validate the h5ad, normalise + log1p, HVGs into obsm['X_hvg'], split by perturbation gene")
    p.add_argument("--input", required=True, help="raw-count h5ad (obs perturbation/guide/batch columns, var gene ids)")
    p.add_argument("--outdir", required=True, help="folder to write (prepared.h5ad, group_means.h5ad, split.json/.tsv)")
    p.add_argument("--test-genes", default=None, help="held-out perturbation genes, one per line (default: the published 30)")
    p.add_argument("--pert-col", default=D.pert_col, help="obs column naming each cell's target gene")
    p.add_argument("--control", default=D.control, help="label of control cells in --pert-col")
    p.add_argument("--gene-col", default=D.gene_col, help="var column with gene ids ('' to skip the check)")
    p.add_argument("--batch-col", default=D.batch_col, help="obs batch column ('' to skip the check)")
    p.add_argument("--guide-col", default=D.guide_col, help="obs guide column ('' to skip the check)")
    p.add_argument("--n-hvg", type=int, default=D.n_hvg, help="highly variable genes for obsm['X_hvg']")
    p.add_argument("--seed", type=int, default=D.seed, help="seed of the train/val split")
    p.add_argument("--val-fraction", type=float, default=D.val_fraction, help="share of non-test genes for validation")
    p.add_argument("--chunk-size", type=int, default=D.chunk_size, help="cells per block of the streaming passes")
    p.add_argument("--input-checksum", default=None, help="sha256:<hex> or md5:<hex> the input must match")
    p.add_argument("--dataset", default=None,
                   help="dataset name of the metrics rows (parameter vcc_dataset; default: vcc_h1_crispri for the published file, "
                        "else vcc_user_<file name>); vcc_h1_crispri is refused for other data")
    p.add_argument("--data-source", default="provided", choices=("fixture", "provided"), help="fixture: the bundled fixture stands in for the published data")
    p.add_argument("--features", default=None, help="perturbation features .pt to check now, before the long passes (parameter vcc_features)")
    add_common(p)
    p.set_defaults(func=_prepare)

    p = steps.add_parser("support-set", help="verify competition_support_set.zip against the manifest sha256 and extract ESM2_pert_features.pt")
    p.add_argument("--zip", required=True, help="competition_support_set.zip (parameter vcc_support_set)")
    p.add_argument("--outdir", required=True, help="folder for ESM2_pert_features.pt")
    add_common(p)
    p.set_defaults(func=_support_set)

    p = steps.add_parser("reference", help="DE and pseudobulk of the real test cells, shared by every model's evaluation")
    p.add_argument("--prepared", required=True, help="output folder of `prepare`")
    p.add_argument("--outdir", required=True, help="folder to write")
    add_common(p)
    _threads_help(p, "the DE tests (pdex and the rank-sum test)")
    p.set_defaults(func=_reference)

    p = steps.add_parser("predict", help="predict the held-out perturbations' cells with one model")
    p.add_argument("--prepared", required=True, help="output folder of `prepare`")
    p.add_argument("--model", required=True, help="cell_mean, ridge, random_forest, state, state_more_steps, scgpt_zero_shot, scgpt_finetuned, "
                                                  "or the alternatives ridge_features, random_forest_features (parameter vcc_models)")
    p.add_argument("--outdir", required=True, help="folder for <model>_pred.h5ad and <model>_model.json")
    p.add_argument("--features", default=None, help="perturbation features .pt, e.g. the starter set's ESM2_pert_features.pt (dict gene -> tensor; "
                                                    "parameter vcc_features); ridge_features / random_forest_features without it: PCA-loading fallback")
    p.add_argument("--seed", type=int, default=M.seed, help="seed of models and control-cell sampling")
    p.add_argument("--n-pcs", type=int, default=M.n_pcs, help="fallback features: principal components of control cells")
    p.add_argument("--pca-cells", type=int, default=M.pca_cells, help="fallback features: control cells used for the PCA")
    p.add_argument("--ridge-alphas", type=float, nargs="+", default=list(M.ridge_alphas), help="ridge penalties tried on the validation genes")
    p.add_argument("--rf-trees", type=int, default=M.rf_trees, help="random forest trees")
    p.add_argument("--rf-components", type=int, default=M.rf_components, help="random forest: principal axes of the training targets it predicts (0: all, exact)")
    p.add_argument("--trained", default=None, help="state / state_more_steps: a `state-train` folder; scgpt_finetuned: a `scgpt-finetune` folder")
    add_device_argument(p)
    _add_scgpt_options(p)
    add_common(p)
    _threads_help(p, "torch and the random forest")
    p.set_defaults(func=_predict)

    p = steps.add_parser("state-train", help="train arc-state's ST model (one run: the `state_more_steps` checkpoint, then `state`)")
    p.add_argument("--prepared", required=True, help="output folder of `prepare`")
    p.add_argument("--outdir", required=True, help="folder for state.ckpt, state_more_steps.ckpt, train_info.json")
    p.add_argument("--features", default=None, help="perturbation features .pt, e.g. ESM2_pert_features.pt (parameter vcc_features); "
                                                    "without it one-hot perturbations, and the rows are marked not comparable")
    p.add_argument("--seed", type=int, default=M.seed, help="arc-state train_seed")
    p.add_argument("--batch-col", default=D.batch_col, help="obs batch column passed to STATE as batch_var")
    add_device_argument(p)
    _add_state_options(p)
    add_common(p)
    p.set_defaults(func=_state_train)

    p = steps.add_parser("scgpt-finetune", help="fine-tune scGPT's perturbation model on the training perturbations")
    p.add_argument("--prepared", required=True, help="output folder of `prepare`")
    p.add_argument("--outdir", required=True, help="folder for the fine-tuned checkpoint, genes.json, train_info.json")
    p.add_argument("--seed", type=int, default=M.seed, help="seed of initialisation, pairing and batching")
    add_device_argument(p)
    _add_scgpt_options(p)
    add_common(p)
    p.set_defaults(func=_scgpt_finetune)

    p = steps.add_parser("evaluate", help="score one model's predictions with cell-eval (vcc profile) and the project evaluator")
    p.add_argument("--prepared", required=True, help="output folder of `prepare`")
    p.add_argument("--reference", required=True, help="output folder of `reference`")
    p.add_argument("--predictions", required=True, help="<model>_pred.h5ad")
    p.add_argument("--model", required=True, help="model name (names the outputs)")
    p.add_argument("--outdir", required=True, help="folder to write")
    add_common(p)
    _threads_help(p, "the DE tests (pdex and the rank-sum test) and cell-eval")
    p.set_defaults(func=_evaluate)

    p = steps.add_parser("score", help="score your own predictions against a real h5ad with both evaluators (no `prepare` needed)")
    p.add_argument("--real", required=True, help="real cells: log-normalised or integer counts, as `cell-eval run` takes (parameter vcc_score_real)")
    p.add_argument("--pred", required=True, help="predicted cells for the same perturbations and genes, with control cells (parameter vcc_score_pred)")
    p.add_argument("--baseline", default=None, help="baseline predictions for the overall scores, e.g. `cell-eval baseline` output (parameter vcc_score_baseline)")
    p.add_argument("--outdir", required=True, help="folder for metrics.tsv, <model>_per_perturbation.tsv, score.json")
    p.add_argument("--model", default="prediction", help="model name of the rows (parameter vcc_score_model)")
    p.add_argument("--dataset", default="user", help="dataset name of the rows (parameter vcc_score_dataset); vcc_h1_crispri only for the published test split")
    p.add_argument("--pert-col", default=D.pert_col, help="obs column naming each cell's perturbation (parameter vcc_pert_col)")
    p.add_argument("--control", default=D.control, help="control label (parameter vcc_control)")
    add_common(p)
    _threads_help(p, "the DE tests (pdex and the rank-sum test) and cell-eval")
    p.set_defaults(func=_score)

    p = steps.add_parser("summarise", help="overall scores, metrics.tsv and figures from every model's evaluation")
    p.add_argument("--evaluations", nargs="+", required=True, help="<model>_eval.json files or folders holding them")
    p.add_argument("--outdir", required=True, help="folder for metrics.tsv, vcc_metrics_mqc.tsv, run_info.json, figures")
    p.add_argument("--data-source", default="provided", choices=("fixture", "provided"), help="recorded in run_info.json and the report")
    p.add_argument("--models", default=None, help="comma list of the models this run selected (others are reported as not selected)")
    p.add_argument("--params-json", default=None, help="JSON of the run's vcc_* parameters for run_info.json")
    p.add_argument("--not-run", nargs="*", default=None, metavar="MODEL=REASON",
                   help="selected models that could not run, and why (default: scGPT rows without a checkpoint, from --params-json)")
    add_common(p)
    p.set_defaults(func=_summarise)
