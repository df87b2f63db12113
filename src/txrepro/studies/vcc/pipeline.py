"""The vcc steps in order, in-process: what `txrepro reproduce vcc` runs (and Nextflow, per process)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from txrepro.errors import InputError
from txrepro.runtime import get_logger
from txrepro.studies.base import Profile, StudyRun, missing_data_run
from txrepro.studies.vcc.params import SCGPT_MODELS, STATE_MODELS, VccRunParams

log = get_logger(__name__)

STEPS: tuple[str, ...] = ("support-set", "prepare", "reference", "state-train", "scgpt-finetune", "predict", "evaluate", "summarise", "score")


def check_models(models: tuple[str, ...]) -> None:
    from txrepro.studies.vcc.models import PLANNED, PREDICTORS

    for m in models:
        if m not in PREDICTORS:
            why = f" ({PLANNED[m]})" if m in PLANNED else ""
            raise InputError("params", "vcc_models", f"a comma list of {', '.join(PREDICTORS)}", repr(m) + why)


def reproduce(outdir: Path, *, profile: Profile = "test", params: Mapping[str, Any] | None = None) -> StudyRun:
    """prepare -> reference -> train STATE / fine-tune scGPT -> predict/evaluate each model -> summarise."""
    from txrepro.studies.vcc.evaluate import evaluate, reference
    from txrepro.studies.vcc.models import predict
    from txrepro.studies.vcc.preprocess import prepare
    from txrepro.studies.vcc.scgpt_perturb import finetune_scgpt, unavailable_reason
    from txrepro.studies.vcc.state import train_state
    from txrepro.studies.vcc.summarise import summarise

    params = dict(params or {})
    rp = VccRunParams.from_params(params, profile)
    check_models(rp.models)
    outdir = Path(outdir)
    if rp.features and rp.support_set:
        raise InputError("params", "vcc_features / vcc_support_set", "one of them (the support set's ESM2_pert_features.pt is the features file)",
                         "both")
    if rp.input is None:
        if profile == "full":
            return missing_data_run(outdir, "vcc", params={k: v for k, v in params.items() if k.startswith("vcc_")})
        from txrepro.fixtures.vcc import write_fixture

        fx = write_fixture(outdir / "fixture", seed=0)
        input_path, features, test_genes, source = fx["input"], rp.features or fx["features"], rp.test_genes or fx["test_genes"], "fixture"
    else:
        input_path, features, test_genes, source = rp.input, rp.features, rp.test_genes, "provided"
    if rp.support_set:  # verified against the manifest checksum before any other work
        from txrepro.studies.vcc.support_set import support_set_features

        features = support_set_features(rp.support_set, outdir / "support_set")

    prepared = outdir / "prepared"
    # the features file is checked here, right after the input's columns, before the long passes
    prepare(input_path, prepared, dp=rp.data, test_genes_file=test_genes, input_checksum=rp.input_checksum, dataset=rp.dataset,
            fixture=source == "fixture", features=features)
    ref = reference(prepared, outdir / "reference", threads=rp.threads)
    trained: dict[str, Path] = {}
    not_run: dict[str, str] = {}
    if set(rp.models) & set(STATE_MODELS):
        state_dir = train_state(prepared, outdir / "state_model", params=rp.state, features=features, seed=rp.model.seed,
                                batch_col=rp.data.batch_col, device=rp.device)
        trained.update({m: state_dir for m in STATE_MODELS})
    why = unavailable_reason(rp.scgpt_checkpoint, rp.scgpt_allow_random_init)
    if why:
        not_run.update({m: why for m in SCGPT_MODELS if m in rp.models})
    elif "scgpt_finetuned" in rp.models:
        trained["scgpt_finetuned"] = finetune_scgpt(prepared, outdir / "scgpt_model", params=rp.scgpt, checkpoint=rp.scgpt_checkpoint,
                                                    allow_random_init=rp.scgpt_allow_random_init,
                                                    verify_checksums=rp.scgpt_verify_checksums, seed=rp.model.seed, device=rp.device)
    evaluations = []
    for model in rp.models:
        if model in not_run:
            log.info("vcc model %s not run: %s", model, not_run[model])
            continue
        log.info("vcc model %s", model)
        pred_h5ad, _ = predict(prepared, model, outdir / "predictions", features=features, params=rp.model, threads=rp.threads,
                               trained=trained.get(model), device=rp.device, scgpt=rp.scgpt, scgpt_checkpoint=rp.scgpt_checkpoint,
                               scgpt_allow_random_init=rp.scgpt_allow_random_init, scgpt_verify_checksums=rp.scgpt_verify_checksums)
        evaluations.append(evaluate(prepared, ref, pred_h5ad, model, outdir / "evaluations", threads=rp.threads))
    inputs = {"input": str(input_path), "features": str(features or ""), "support_set": str(rp.support_set or ""),
              "test_genes": str(test_genes or "bundled 30 published genes")}
    used = {k: v for k, v in params.items() if k.startswith("vcc_")}
    return summarise(evaluations, outdir, data_source=source, selected_models=rp.models, inputs=inputs, params=used, not_run=not_run)
