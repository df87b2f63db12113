"""sage_net steps in order (the CLI and Nextflow call the same functions).

reproduce(): [preprocess-expression] -> prepare (main cohort, and the external cohort when given)
-> predixcan -> train-rsagenet -> train-psagenet -> attribute -> evaluate. Parameters are the
Nextflow params `sage_net_*`; in the `test` profile missing inputs mean "use the fixture".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path, write_json
from txrepro.io.controlled import redact_params
from txrepro.metrics.table import MetricRow
from txrepro.report.published import read_published
from txrepro.runtime import get_logger
from txrepro.studies.base import StudyRun, finish_study, missing_data_run
from txrepro.studies.sage_net import STUDY

log = get_logger(__name__)

STEPS: tuple[str, ...] = (
    "fixture", "index-vcf", "preprocess-expression", "prepare", "predixcan", "train-rsagenet", "train-psagenet", "attribute", "evaluate",
)

INPUT_KEYS = ("vcf", "fasta", "genes", "expression")
DEFAULTS: dict[str, Any] = {
    "sage_net_expression_is_adjusted": True,
    "sage_net_covariates": None,
    "sage_net_expression_pcs": 10,
    "sage_net_split_seed": 17,
    "sage_net_window": None,  # None: the config's input length (paper 40,000; tiny 1,000)
    "sage_net_anchor": "window_start",
    "sage_net_config": "paper",
    "sage_net_cohort": "ROSMAP",
    "sage_net_external_cohort": "GTEx",
    "sage_net_top_genes": 1000,
    "sage_net_maf": 0.01,
    "sage_net_alpha_grid": "all_individuals",
    "sage_net_seed": 42,
    "sage_net_max_epochs": None,
    "sage_net_attribution_gene": None,
    "sage_net_attribution_variant": None,
    "sage_net_ism_half_width": 100,
    "sage_net_require_phased": False,
    "sage_net_max_ref_mismatch": 0.05,
}


def preprocess_step(tpm: Path, covariates: Path | None, out: Path, *, n_pcs: int = 10, r2_cutoff: float = 0.9) -> Path:
    from txrepro.io.tables import read_table
    from txrepro.studies.sage_net.expression import adjust_expression, read_expression, require_unique_header

    tpm_df = read_expression(tpm, "TPM table")
    if (tpm_df.to_numpy() < 0).any():
        raise InputError(tpm, "TPM values", "non-negative TPM (log2(TPM+1) follows)", "negative values (already log-scaled or adjusted? then skip this step)")
    cov = read_table(covariates, what="covariates table", index_col=0) if covariates else None
    if covariates:
        require_unique_header(Path(covariates), "covariates table", "covariate columns")
    adjusted, report = adjust_expression(tpm_df, cov, n_pcs=n_pcs, r2_cutoff=r2_cutoff, covariates_path=covariates or Path("covariates"))
    with atomic_path(out) as tmp:
        adjusted.to_csv(tmp)
    write_json(out.with_suffix(".json"), vars(report))
    log.info("adjusted expression: %d genes x %d samples, %d PCs, covariates kept %s, dropped %s", report.n_genes, report.n_samples, report.n_pcs, report.kept, report.dropped)
    return out


def _published_lines(cohorts: dict[str, str]) -> dict[str, dict[str, float]]:
    pub = read_published()
    pub = pub[(pub["study"] == STUDY) & (pub["model"] == "predixcan")]
    out: dict[str, dict[str, float]] = {}
    for cohort, split in cohorts.items():
        for key in ("mean", "median"):
            hit = pub[(pub["dataset"] == cohort) & (pub["split"] == split) & (pub["metric"] == f"{key}_gene_pearson_top1000")]
            if not hit.empty:
                out.setdefault(cohort, {})[key] = float(hit["published"].iloc[0])
    return out


def evaluate_step(
    prepared: Path, predixcan: Path, rsagenet: Path, psagenet: Path, outdir: Path, *, fasta: Path | None = None,
    external: Path | None = None, attribution: Path | None = None, cohort: str = "ROSMAP", external_cohort: str = "GTEx",
    top_genes: int = 1000, device: str = "auto", data_source: str = "provided", params: Mapping[str, Any] | None = None,
) -> StudyRun:
    """Evaluate, draw the figures and write metrics.tsv / run_info.json (finish_study)."""
    from txrepro.studies.sage_net.data import Prepared
    from txrepro.studies.sage_net.evaluate import EvaluateParams, per_gene_table, run_evaluation
    from txrepro.studies.sage_net.figures import gene_pearson_figure, gene_scatter_figure, training_figure
    from txrepro.studies.sage_net.predixcan import PrediXcanResult

    main = Prepared(prepared, fasta)
    ext = Prepared(external, fasta) if external else None
    px = PrediXcanResult(predixcan)
    eparams = EvaluateParams(cohort=cohort, external_cohort=external_cohort, top_genes=top_genes, device=device)
    rows, results = run_evaluation(main, px, rsagenet, psagenet, outdir, eparams, ext)
    figures = []
    table = per_gene_table(results, px)
    lines = _published_lines({r.cohort: r.split_prefix for r in results})
    figures.append(gene_pearson_figure(table, lines, outdir / "sage_net_gene_pearson.png"))
    figures.append(gene_scatter_figure(table, outdir / "sage_net_gene_pearson_scatter.png"))
    histories = {name: pd.read_csv(Path(d) / "history.tsv", sep="\t") for name, d in (("r_sage_net", rsagenet), ("p_sage_net", psagenet))}
    best = json.loads((Path(psagenet) / "meta.json").read_text()).get("best_epoch")
    figures.append(training_figure(histories, outdir / "sage_net_training.png", best))
    if attribution is not None:
        summary = json.loads((Path(attribution) / "summary.json").read_text())
        rows.append(MetricRow(
            STUDY, cohort, "p_sage_net", "attribution", "ism_peak_distance_bp", float(summary["ism_peak_distance_bp"]), None,
            f"gene {summary['gene']}, variant {summary['variant']}: distance of the ISM peak from the variant (window {summary['ism_window']})",
        ))
        fig = Path(attribution) / "sage_net_attribution.png"
        if fig.is_file():  # beside the other figures, so one glob collects them (Nextflow, report)
            import shutil

            with atomic_path(outdir / fig.name) as tmp:
                shutil.copyfile(fig, tmp)
            figures.append(outdir / fig.name)
    inputs = {"prepared": str(prepared), "predixcan": str(predixcan), "rsagenet": str(rsagenet), "psagenet": str(psagenet)}
    if external:
        inputs["external_prepared"] = str(external)
    inputs |= {f"cohort_{k}": v for k, v in main.manifest.get("inputs", {}).items()}  # controlled ones: name + checksum (prepare)
    if ext is not None:
        inputs |= {f"external_cohort_{k}": v for k, v in ext.manifest.get("inputs", {}).items()}
    run_params = redact_params(dict(params or {}), with_checksum=True) | {"top_genes": top_genes, "cohort": cohort, "external_cohort": external_cohort}
    return finish_study(outdir, STUDY, rows, data_source=data_source, figures=figures, inputs=inputs, params=run_params)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------


BOOLEAN_KEYS = ("sage_net_expression_is_adjusted", "sage_net_require_phased")
INTEGER_KEYS = ("sage_net_expression_pcs", "sage_net_split_seed", "sage_net_window", "sage_net_top_genes", "sage_net_seed", "sage_net_max_epochs", "sage_net_ism_half_width")
FLOAT_KEYS = ("sage_net_maf", "sage_net_max_ref_mismatch")


def _as_bool(key: str, value: Any) -> bool:
    """Params files and command lines give 'false' as a string, which Python reads as true."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0", ""):
        return False
    raise InputError("--params-file", key, "true or false", repr(value))


def _params(params: Mapping[str, Any], profile: str) -> dict[str, Any]:
    """DEFAULTS < test-profile settings < the given params, typed as nextflow_schema.json types them."""
    p = dict(DEFAULTS)
    if profile == "test":
        p |= {"sage_net_config": "tiny", "sage_net_ism_half_width": 300}
    p |= {k: v for k, v in params.items() if k.startswith("sage_net_") and v is not None}
    for key, cast in [(k, _as_bool) for k in BOOLEAN_KEYS] + [(k, int) for k in INTEGER_KEYS] + [(k, float) for k in FLOAT_KEYS]:
        if p.get(key) is None:
            continue
        try:
            p[key] = cast(key, p[key]) if cast is _as_bool else cast(p[key])
        except (TypeError, ValueError):
            raise InputError("--params-file", key, f"a{'n integer' if cast is int else ' number'}", repr(p[key])) from None
    p["device"] = str(params.get("device") or "auto")  # the pipeline-wide --device
    return p


def _fixture_params(outdir: Path) -> dict[str, Any]:
    from txrepro.fixtures.sage_net import write_fixture

    fx = write_fixture(outdir / "fixture")
    return {
        "sage_net_vcf": fx["vcf"], "sage_net_fasta": fx["fasta"], "sage_net_genes": fx["genes"],
        # the fixture starts from TPM + known covariates so the preprocessing step runs; with six genes
        # expression PCs would absorb the planted genetic signal, so none are regressed out
        "sage_net_expression": fx["expression_tpm"], "sage_net_expression_is_adjusted": False, "sage_net_covariates": fx["covariates"],
        "sage_net_expression_pcs": 0,
        "sage_net_train_samples": fx["train_samples"], "sage_net_val_samples": fx["val_samples"], "sage_net_test_samples": fx["test_samples"],
        "sage_net_external_vcf": fx["external_vcf"], "sage_net_external_expression": fx["external_expression"],
        "sage_net_external_samples": fx["external_samples"],
    }


def reproduce(outdir: Path, *, profile: str, params: dict) -> StudyRun:
    from txrepro.studies.sage_net.attribution import AttributionParams, run_attribution
    from txrepro.studies.sage_net.config import get_config
    from txrepro.studies.sage_net.data import PrepareInputs, PrepareParams, Prepared, prepare
    from txrepro.studies.sage_net.predixcan import PrediXcanParams, PrediXcanResult, run_predixcan
    from txrepro.studies.sage_net.train import TrainParams, train_psagenet, train_rsagenet

    outdir = Path(outdir)
    p = _params(params, profile)
    data_source = "provided"
    given = [k for k in INPUT_KEYS if p.get(f"sage_net_{k}")]
    if given and len(given) < len(INPUT_KEYS):
        missing = next(k for k in INPUT_KEYS if k not in given)
        raise InputError("--params-file", f"sage_net_{missing}", f"all of {', '.join('sage_net_' + k for k in INPUT_KEYS)} (or none: the fixture / not computed)", "missing")
    if not given:
        if profile == "full":
            return missing_data_run(outdir, STUDY, params={k: str(v) for k, v in p.items()})
        p |= _fixture_params(outdir)
        data_source = "fixture"
    cfg = get_config(p["sage_net_config"])
    window = int(p["sage_net_window"] or cfg.input_len)
    work = outdir / "work"
    work.mkdir(parents=True, exist_ok=True)

    def path(key: str) -> Path | None:
        return Path(p[key]) if p.get(key) else None

    expression = path("sage_net_expression")
    if not p["sage_net_expression_is_adjusted"]:
        expression = preprocess_step(expression, path("sage_net_covariates"), work / "expression_adjusted.csv", n_pcs=int(p["sage_net_expression_pcs"]))
    pparams = PrepareParams(
        window=window, anchor=p["sage_net_anchor"], cohort=p["sage_net_cohort"], split_seed=int(p["sage_net_split_seed"]),
        # like the Nextflow process: an unindexed or plain-gzip VCF is indexed in a temporary copy
        max_ref_mismatch=p["sage_net_max_ref_mismatch"], require_phased=p["sage_net_require_phased"], index_vcf=True,
    )
    prepare(
        PrepareInputs(
            vcf=path("sage_net_vcf"), fasta=path("sage_net_fasta"), genes=path("sage_net_genes"), expression=expression,
            train_samples=path("sage_net_train_samples"), val_samples=path("sage_net_val_samples"), test_samples=path("sage_net_test_samples"),
            train_genes=path("sage_net_train_genes"), val_genes=path("sage_net_val_genes"), test_genes=path("sage_net_test_genes"),
        ),
        work / "prepared", pparams,
    )
    external = None
    if p.get("sage_net_external_vcf") and p.get("sage_net_external_expression"):
        eparams = PrepareParams(**{**vars(pparams), "role": "external", "cohort": p["sage_net_external_cohort"]})
        prepare(
            PrepareInputs(vcf=path("sage_net_external_vcf"), fasta=path("sage_net_fasta"), genes=path("sage_net_genes"),
                          expression=path("sage_net_external_expression"), samples=path("sage_net_external_samples")),
            work / "external_prepared", eparams,
        )
        external = work / "external_prepared"
    main = Prepared(work / "prepared")
    run_predixcan(main, work / "predixcan", PrediXcanParams(maf_threshold=float(p["sage_net_maf"]), alpha_grid=p["sage_net_alpha_grid"]))
    px = PrediXcanResult(work / "predixcan")
    tparams = TrainParams(seed=int(p["sage_net_seed"]), device=p["device"], top_genes=int(p["sage_net_top_genes"]),
                          max_epochs=int(p["sage_net_max_epochs"]) if p.get("sage_net_max_epochs") else None)
    train_rsagenet(main, work / "rsagenet", cfg, tparams)
    train_psagenet(main, px, work / "psagenet", cfg, tparams, work / "rsagenet")
    run_attribution(main, px, work / "psagenet", work / "attribution", AttributionParams(
        gene=p["sage_net_attribution_gene"], variant=p["sage_net_attribution_variant"], half_width=int(p["sage_net_ism_half_width"]),
        device=p["device"], top_genes=int(p["sage_net_top_genes"]),
    ))
    return evaluate_step(
        work / "prepared", work / "predixcan", work / "rsagenet", work / "psagenet", outdir, external=external, attribution=work / "attribution",
        cohort=p["sage_net_cohort"], external_cohort=p["sage_net_external_cohort"], top_genes=int(p["sage_net_top_genes"]),
        device=p["device"], data_source=data_source, params={k: str(v) for k, v in p.items()},
    )
