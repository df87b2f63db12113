"""gpo_vae steps in order (prepare -> train -> evaluate), shared by the CLI and `txrepro reproduce`.

Parameters (the same keys as the Nextflow params): per dataset of the paper
gpo_vae_<rpe1|k562|adamson>_{input,summary_stats,summary_sheet,input_checksum}; the single-input
form gpo_vae_input, gpo_vae_summary_stats, gpo_vae_summary_sheet, gpo_vae_input_checksum keyed by
gpo_vae_dataset; and gpo_vae_reference_networks, gpo_vae_config, gpo_vae_seed, gpo_vae_max_epochs,
gpo_vae_ate_particles, gpo_vae_verify_checksums, gpo_vae_device.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path, write_json
from txrepro.metrics.table import MetricRow, not_computed
from txrepro.report.published import read_published
from txrepro.runtime import get_logger, resolve_device
from txrepro.studies.base import DATA_NOT_PROVIDED, StudyRun, finish_study, missing_data_run
from txrepro.studies.gpo_vae.config import GpoVaeConfig, load_config
from txrepro.studies.gpo_vae.inputs import DatasetInputs, datasets_from_params, not_provided, per_dataset_params, verify_files

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
    "gpo_vae_input_checksum": None,
    "gpo_vae_verify_checksums": True,
    "gpo_vae_device": "auto",
    **{k: None for k in per_dataset_params()},
}


def check_dataset(dataset: str) -> str:
    if not isinstance(dataset, str) or not dataset.strip() or any(c in dataset for c in "\t\n /"):
        raise InputError("--dataset", "dataset", "a dataset key such as replogle_rpe1, replogle_k562 or adamson", repr(dataset))
    return dataset.strip()


def run_prepare(input_path: str | os.PathLike[str], out: str | os.PathLike[str], cfg: GpoVaeConfig, *,
                summary_stats: str | None = None, summary_sheet: str | None = None, reference_networks: str | None = None,
                device: str = "auto") -> Path:
    from txrepro.studies.gpo_vae.data import prepare

    prepare(input_path, out, cfg.data, summary_stats=summary_stats, summary_sheet=summary_sheet, reference_networks=reference_networks,
            device=resolve_device(device))
    return Path(out)


def run_train(prepared: str | os.PathLike[str], out: str | os.PathLike[str], cfg: GpoVaeConfig, *, seed: int = 0,
              device: str = "auto", figures_dir: str | os.PathLike[str] | None = None, dataset: str = DEFAULT_DATASET) -> tuple[Path, list[Path]]:
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
    figs = [figures.training_curve(history, result.best_epoch, fig_dir / f"gpo_vae_{dataset}_training_curve.png")]
    log.info("trained %d epochs (best %d, val loss %.4f) in %.1f s; %d parameters", result.epochs_run, result.best_epoch,
             result.best_val_loss, result.seconds, result.n_parameters)
    return out, figs


def evaluate_dataset(prepared: str | os.PathLike[str], checkpoint: str | os.PathLike[str], outdir: str | os.PathLike[str], *,
                     dataset: str, reference_networks: str | None = None, seed: int = 0, device: str = "auto",
                     ate_particles: int | None = None):
    """Every metric of one dataset's trained model (rows, figures and files under `outdir`)."""
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
    return evaluate(prepared, checkpoint, Path(outdir), dataset=dataset, reference_networks=reference_networks, seed=seed,
                    device=resolve_device(device), ate_particles=ate_particles, dataset_note=note)


def not_provided_rows(datasets: list[str]) -> list[MetricRow]:
    """`not computed: data not provided` for every published number of datasets without data."""
    pub = read_published()
    pub = pub[(pub["study"] == STUDY) & pub["dataset"].isin(datasets)]
    return [not_computed(STUDY, r.dataset, r.model, r.split, r.metric, DATA_NOT_PROVIDED) for r in pub.itertuples(index=False)]


def run_evaluate(prepared: str | os.PathLike[str], checkpoint: str | os.PathLike[str], outdir: str | os.PathLike[str], *,
                 dataset: str, reference_networks: str | None = None, seed: int = 0, device: str = "auto",
                 ate_particles: int | None = None, data_source: str = "provided", extra_figures: list[Path] | None = None,
                 inputs: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None,
                 missing_datasets: list[str] | None = None) -> StudyRun:
    """One dataset's evaluation written as a study output (metrics.tsv, run_info.json, mqc table).

    `missing_datasets` adds `not computed: data not provided` rows for the paper's datasets that
    were not given (the Nextflow workflow passes them to one dataset's evaluation).
    """
    outdir = Path(outdir)
    res = evaluate_dataset(prepared, checkpoint, outdir, dataset=dataset, reference_networks=reference_networks, seed=seed,
                           device=device, ate_particles=ate_particles)
    figs = list(extra_figures or []) + res.figures
    rows = res.rows + not_provided_rows(missing_datasets or [])
    return finish_study(outdir, STUDY, rows, data_source=data_source, figures=figs,  # type: ignore[arg-type]
                        inputs={**dict(inputs or {}), **{k: str(v) for k, v in res.files.items()}}, params=params)


def _int_or_none(params: Mapping[str, Any], key: str) -> int | None:
    v = params.get(key)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        raise InputError("params", key, "an integer", repr(v)) from None


def _flag(params: Mapping[str, Any], key: str) -> bool:
    v = params.get(key)
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise InputError("params", key, "true or false", repr(v))


def reproduce(outdir: Path, *, profile: str, params: dict) -> StudyRun:
    """The whole study in-process, every given dataset in turn, into `outdir/<dataset>/`.

    Everything that can be checked is checked for every dataset before the first one starts:
    checksums (user and manifest), configurations, summary statistics and reference networks.
    Test profile without an input: the bundled fixture, tiny config.
    """
    p = {**PARAM_DEFAULTS, **{k: v for k, v in params.items() if k.startswith("gpo_vae_") and v is not None}}
    outdir = Path(outdir)
    datasets = datasets_from_params(p, check_dataset)
    data_source = "provided"
    if not datasets:
        if profile == "full":
            return missing_data_run(outdir, STUDY, params={k: v for k, v in p.items()})
        from txrepro.fixtures.gpo_vae import write_fixture

        fx = write_fixture(outdir / "fixture", seed=0)
        datasets = [DatasetInputs(check_dataset(str(p["gpo_vae_dataset"])), str(fx["input"]))]
        if not p["gpo_vae_reference_networks"]:
            p["gpo_vae_reference_networks"] = str(fx["reference_networks"])
        if p["gpo_vae_config"] == "auto":
            p["gpo_vae_config"] = "tiny"
        data_source = "fixture"
    seed = _int_or_none(p, "gpo_vae_seed") or 0
    max_epochs = _int_or_none(p, "gpo_vae_max_epochs")
    ate_particles = _int_or_none(p, "gpo_vae_ate_particles")
    refs = p["gpo_vae_reference_networks"]

    # --- checks before any work, for every dataset ------------------------------------------------
    verified = verify_files([f for d in datasets for f in d.files()], use_manifest=_flag(p, "gpo_vae_verify_checksums"))
    configs: dict[str, GpoVaeConfig] = {}
    from txrepro.io.anndata import read_h5ad_checked
    from txrepro.studies.gpo_vae.data import check_reference_networks, read_summary_stats

    for d in datasets:
        cfg = load_config(p["gpo_vae_config"], dataset=d.dataset)
        if max_epochs is not None:
            cfg.train.max_epochs = max_epochs
        configs[d.dataset] = cfg
        if d.summary_stats:
            read_summary_stats(d.summary_stats, d.summary_sheet or cfg.data.summary_sheet)
        if refs:
            head = read_h5ad_checked(d.input, obs=("gene",), backed=True)
            obs = head.obs.copy()
            head.file.close()
            check_reference_networks(refs, obs, d.input)
        log.info("gpo_vae: %s from %s (config %s)", d.dataset, d.input, configs[d.dataset].name)

    rows: list[MetricRow] = []
    figures: list[Path] = []
    inputs: dict[str, str] = {}
    for d in datasets:
        cfg, sub = configs[d.dataset], outdir / d.dataset
        prepared = run_prepare(d.input, sub / "prepared.h5ad", cfg, summary_stats=d.summary_stats, summary_sheet=d.summary_sheet,
                               device=p["gpo_vae_device"])
        ckpt, figs = run_train(prepared, sub / "model.pt", cfg, seed=seed, device=p["gpo_vae_device"], figures_dir=sub / "figures",
                               dataset=d.dataset)
        res = evaluate_dataset(prepared, ckpt, sub, dataset=d.dataset, reference_networks=refs, seed=seed, device=p["gpo_vae_device"],
                               ate_particles=ate_particles)
        rows += res.rows
        figures += figs + res.figures
        for param, path, _ in d.files():
            inputs[param] = str(path)
        inputs.update({f"{d.dataset}_{k}": str(v) for k, v in res.files.items()})
    if refs:
        inputs["gpo_vae_reference_networks"] = str(refs)
    missing = not_provided([d.dataset for d in datasets]) if data_source == "provided" else []
    rows += not_provided_rows(missing)
    run_params = {**p, "datasets": [d.dataset for d in datasets], "datasets_not_provided": missing,
                  "checksums_verified": verified, "config_resolved": {k: c.to_dict() for k, c in configs.items()}}
    return finish_study(outdir, STUDY, rows, data_source=data_source, figures=figures, inputs=inputs, params=run_params)  # type: ignore[arg-type]
