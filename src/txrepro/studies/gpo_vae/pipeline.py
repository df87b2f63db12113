"""gpo_vae steps in order (prepare -> train -> evaluate), shared by the CLI and `txrepro reproduce`.

Parameters (the same keys as the Nextflow params): gpo_vae_input, gpo_vae_summary_stats,
gpo_vae_summary_sheet, gpo_vae_reference_networks, gpo_vae_dataset, gpo_vae_config, gpo_vae_seed,
gpo_vae_max_epochs, gpo_vae_ate_particles, gpo_vae_device.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path, write_json
from txrepro.runtime import get_logger, resolve_device
from txrepro.studies.base import StudyRun, finish_study, missing_data_run
from txrepro.studies.gpo_vae.config import GpoVaeConfig, load_config

log = get_logger(__name__)

STUDY = "gpo_vae"
STEPS: tuple[str, ...] = ("prepare", "train", "evaluate")
DEFAULT_DATASET = "adamson"
PARAM_DEFAULTS: dict[str, Any] = {
    "gpo_vae_input": None,
    "gpo_vae_summary_stats": None,
    "gpo_vae_summary_sheet": None,
    "gpo_vae_reference_networks": None,
    "gpo_vae_dataset": DEFAULT_DATASET,
    "gpo_vae_config": "auto",
    "gpo_vae_seed": 0,
    "gpo_vae_max_epochs": None,
    "gpo_vae_ate_particles": None,
    "gpo_vae_device": "auto",
}


def check_dataset(dataset: str) -> str:
    if not isinstance(dataset, str) or not dataset.strip() or any(c in dataset for c in "\t\n /"):
        raise InputError("--dataset", "dataset", "a dataset key such as replogle_rpe1, replogle_k562 or adamson", repr(dataset))
    return dataset.strip()


def run_prepare(input_path: str | os.PathLike[str], out: str | os.PathLike[str], cfg: GpoVaeConfig, *,
                summary_stats: str | None = None, summary_sheet: str | None = None, device: str = "auto") -> Path:
    from txrepro.studies.gpo_vae.data import prepare

    prepare(input_path, out, cfg.data, summary_stats=summary_stats, summary_sheet=summary_sheet, device=resolve_device(device))
    return Path(out)


def run_train(prepared: str | os.PathLike[str], out: str | os.PathLike[str], cfg: GpoVaeConfig, *, seed: int = 0,
              device: str = "auto", figures_dir: str | os.PathLike[str] | None = None) -> tuple[Path, list[Path]]:
    """Train, then write the checkpoint, `<out stem>_history.tsv` and the training-curve figure."""
    from txrepro.studies.gpo_vae import figures
    from txrepro.studies.gpo_vae.features import load_prepared
    from txrepro.studies.gpo_vae.train import save_checkpoint, train_model

    dev = resolve_device(device)
    ds = load_prepared(prepared, seed=seed)
    net, result, history = train_model(ds, cfg, seed=seed, device=dev)
    out = Path(out)
    save_checkpoint(out, net, cfg, ds, result, seed)
    hist_path = out.with_name(out.stem + "_history.tsv")
    with atomic_path(hist_path) as tmp:
        history.to_csv(tmp, sep="\t", index=False)
    write_json(out.with_name(out.stem + "_summary.json"), {"config": cfg.name, "seed": seed, "device": dev, **result.__dict__})
    fig_dir = Path(figures_dir) if figures_dir else out.parent / "figures"
    figs = [figures.training_curve(history, result.best_epoch, fig_dir / "gpo_vae_training_curve.png")]
    log.info("trained %d epochs (best %d, val loss %.4f) in %.1f s; %d parameters", result.epochs_run, result.best_epoch,
             result.best_val_loss, result.seconds, result.n_parameters)
    return out, figs


def run_evaluate(prepared: str | os.PathLike[str], checkpoint: str | os.PathLike[str], outdir: str | os.PathLike[str], *,
                 dataset: str, reference_networks: str | None = None, seed: int = 0, device: str = "auto",
                 ate_particles: int | None = None, data_source: str = "provided", extra_figures: list[Path] | None = None,
                 inputs: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None) -> StudyRun:
    from txrepro.io.anndata import read_h5ad_checked
    from txrepro.studies.gpo_vae.grn import load_reference_networks, perturbed_gene_ids

    dataset = check_dataset(dataset)
    head = read_h5ad_checked(prepared, obs=("gene",), backed=True)
    load_reference_networks(reference_networks, perturbed_gene_ids(head.obs), prepared)  # bad files stop here
    split_mode = head.uns.get("gpo_vae", {}).get("split_mode", "cells")
    head.file.close()

    from txrepro.studies.gpo_vae.evaluate import evaluate
    note = ""
    if split_mode == "perturbations":
        dataset, note = f"{dataset}_heldout_perturbations", "extension: 20% of perturbations held out (not the paper's split)"
    outdir = Path(outdir)
    res = evaluate(prepared, checkpoint, outdir, dataset=dataset, reference_networks=reference_networks, seed=seed,
                   device=resolve_device(device), ate_particles=ate_particles, dataset_note=note)
    figs = list(extra_figures or []) + res.figures
    return finish_study(outdir, STUDY, res.rows, data_source=data_source, figures=figs,  # type: ignore[arg-type]
                        inputs={**dict(inputs or {}), **{k: str(v) for k, v in res.files.items()}}, params=params)


def _int_or_none(params: Mapping[str, Any], key: str) -> int | None:
    v = params.get(key)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        raise InputError("params", key, "an integer", repr(v)) from None


def reproduce(outdir: Path, *, profile: str, params: dict) -> StudyRun:
    """The whole study in-process. Test profile without an input: the bundled fixture, tiny config."""
    p = {**PARAM_DEFAULTS, **{k: v for k, v in params.items() if k.startswith("gpo_vae_") and v is not None}}
    outdir = Path(outdir)
    if not p["gpo_vae_input"]:
        if profile == "full":
            return missing_data_run(outdir, STUDY, params={k: v for k, v in p.items()})
        from txrepro.fixtures.gpo_vae import write_fixture

        fx = write_fixture(outdir / "fixture", seed=0)
        p["gpo_vae_input"] = str(fx["input"])
        if not p["gpo_vae_reference_networks"]:
            p["gpo_vae_reference_networks"] = str(fx["reference_networks"])
        if p["gpo_vae_config"] == "auto":
            p["gpo_vae_config"] = "tiny"
        data_source = "fixture"
    else:
        data_source = "provided"
    dataset = check_dataset(str(p["gpo_vae_dataset"]))
    seed = _int_or_none(p, "gpo_vae_seed") or 0
    cfg = load_config(p["gpo_vae_config"], dataset=dataset)
    max_epochs = _int_or_none(p, "gpo_vae_max_epochs")
    if max_epochs is not None:
        cfg.train.max_epochs = max_epochs
    prepared = run_prepare(p["gpo_vae_input"], outdir / "prepared.h5ad", cfg, summary_stats=p["gpo_vae_summary_stats"],
                           summary_sheet=p["gpo_vae_summary_sheet"], device=p["gpo_vae_device"])
    ckpt, figs = run_train(prepared, outdir / "model.pt", cfg, seed=seed, device=p["gpo_vae_device"], figures_dir=outdir / "figures")
    inputs = {"input": str(p["gpo_vae_input"])}
    for key in ("gpo_vae_summary_stats", "gpo_vae_reference_networks"):
        if p[key]:
            inputs[key.removeprefix("gpo_vae_")] = str(p[key])
    return run_evaluate(prepared, ckpt, outdir, dataset=dataset, reference_networks=p["gpo_vae_reference_networks"], seed=seed,
                        device=p["gpo_vae_device"], ate_particles=_int_or_none(p, "gpo_vae_ate_particles"), data_source=data_source,
                        extra_figures=figs, inputs=inputs, params={**p, "config_resolved": cfg.to_dict()})
