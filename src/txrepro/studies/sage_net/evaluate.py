"""Evaluation: per-gene r across held-out individuals for PrediXcan, p-SAGE-net and r-SAGE-net.

Gene set: the top min(N, available) genes by PrediXcan validation r (N = 1,000 as the published
reference), reported over all of them (the published PrediXcan number), over those on training
chromosomes (`_train_genes`: the paper's "train genes x test individuals", where p-SAGE-net
matches PrediXcan) and over those on test chromosomes (`_test_genes`: where it does not
generalise). Model outputs compared with observed values:
* PrediXcan: its prediction of the adjusted expression;
* p-SAGE-net: the deviation head against the z-score (per-gene r is invariant to the z transform);
* r-SAGE-net: the mean of its predictions on the two haplotypes (the original's
  `predict_from_personal` evaluation).
Per-individual r (across genes) compares predicted and observed expression; for p-SAGE-net the
prediction is mean head + deviation head x training s.d. (the original logged the mean head only,
which is the same for every individual; `median_individual_pearson_zscore` compares deviations).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path
from txrepro.metrics.table import MetricRow, not_computed
from txrepro.runtime import get_logger, resolve_device
from txrepro.studies.sage_net import STUDY
from txrepro.studies.sage_net.data import Prepared
from txrepro.studies.sage_net.metrics import pearson, per_gene_pearson, per_individual_pearson, summary
from txrepro.studies.sage_net.predict import SequenceProvider, VariantOptions, predict_psagenet, predict_rsagenet
from txrepro.studies.sage_net.predixcan import PrediXcanResult
from txrepro.studies.sage_net.train import load_model

log = get_logger(__name__)

MODELS = ("predixcan", "p_sage_net", "r_sage_net")
GENE_SETS = {"": None, "_train_genes": "train", "_test_genes": "test"}
# input QC counts in the report: these always (a zero is informative), the rest when non-zero
QC_ALWAYS = {
    "records", "alt_alleles", "multiallelic_records", "indel_alleles", "symbolic_alleles", "ref_mismatch_alleles",
    "missing_calls", "unphased_het_calls", "expression_samples_not_in_vcf", "off_contig_windows",
}
QC_KEYS = (
    ("records", None), ("alt_alleles", None), ("multiallelic_records", "records"), ("indel_alleles", "alt_alleles"),
    ("symbolic_alleles", "alt_alleles"), ("ref_mismatch_alleles", "ref_checked_alleles"), ("outside_region_alleles", "alt_alleles"),
    ("missing_calls", "genotype_calls"), ("unphased_het_calls", "genotype_calls"), ("haploid_calls", "genotype_calls"),
    ("overlap_skipped", "genotype_calls"), ("expression_samples_not_in_vcf", None), ("genes_on_missing_contigs", None),
    ("genes_without_expression", None), ("off_contig_windows", None),
)


@dataclass
class EvaluateParams:
    cohort: str = "ROSMAP"
    external_cohort: str = "GTEx"
    top_genes: int = 1000
    device: str = "auto"
    per_gene_rows_max: int = 10  # per-gene metric rows in the report when the gene set is this small


@dataclass
class CohortResult:
    cohort: str
    split_prefix: str
    genes: list[str]
    gene_split: list[str]
    samples: list[str]
    observed: np.ndarray  # [genes x individuals] adjusted expression
    observed_z: np.ndarray
    pred: dict[str, np.ndarray]  # model -> [genes x individuals] (prediction on the expression scale)
    pred_z: dict[str, np.ndarray]  # model -> deviation / z scale
    gene_r: dict[str, np.ndarray]


def _cohort_predictions(
    prepared: Prepared, predixcan: PrediXcanResult, genes: list[str], sample_idx: np.ndarray, p_model, r_model, device: str,
    batch: int, options: VariantOptions, main: Prepared, apply_predixcan: bool,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    mean_tr = main.mean[[main.gene_index[g] for g in genes]]
    sd_tr = main.sd[[main.gene_index[g] for g in genes]]
    seqs = SequenceProvider(prepared, options, maf_prepared=main)
    pred, pred_z = {}, {}
    if apply_predixcan:
        applied = [predixcan.apply(g, prepared.variants(g)) for g in genes]
        px = np.vstack([a if a is not None else np.full(len(prepared.samples), np.nan) for a in applied])
    else:
        px = np.vstack([predixcan.predictions(g) for g in genes])
    pred["predixcan"] = px[:, sample_idx]
    pred_z["predixcan"] = (pred["predixcan"] - mean_tr[:, None]) / sd_tr[:, None]
    mean_head, dev = predict_psagenet(p_model, seqs, genes, sample_idx, device, batch)
    scale = sd_tr if p_model.cfg.zscore else np.ones_like(sd_tr)
    pred["p_sage_net"] = mean_head[:, None] + dev * scale[:, None]
    pred_z["p_sage_net"] = dev if p_model.cfg.zscore else dev / sd_tr[:, None]
    _, personal = predict_rsagenet(r_model, seqs, genes, sample_idx, device, batch)
    pred["r_sage_net"] = personal
    pred_z["r_sage_net"] = (personal - mean_tr[:, None]) / sd_tr[:, None]
    return pred, pred_z


def evaluate_cohort(
    prepared: Prepared, main: Prepared, predixcan: PrediXcanResult, genes: list[str], p_model, r_model, *, external: bool,
    cohort: str, device: str, options: VariantOptions,
) -> CohortResult:
    sample_idx = prepared.split_idx("all" if external else "test")
    if len(sample_idx) < 3:
        raise InputError(prepared.path, "individuals", "at least 3 held-out individuals to correlate across", str(len(sample_idx)))
    genes = [g for g in genes if g in prepared.gene_index]
    rows = np.array([prepared.gene_index[g] for g in genes])
    observed = prepared.expr[rows][:, sample_idx]
    z_rows = np.array([main.gene_index[g] for g in genes])
    observed_z = (observed - main.mean[z_rows][:, None]) / main.sd[z_rows][:, None]
    pred, pred_z = _cohort_predictions(prepared, predixcan, genes, sample_idx, p_model, r_model, device, p_model.cfg.eval_batch_size, options, main, external)
    gene_r = {
        "predixcan": per_gene_pearson(pred["predixcan"], observed),
        "p_sage_net": per_gene_pearson(pred_z["p_sage_net"], observed_z),
        "r_sage_net": per_gene_pearson(pred["r_sage_net"], observed),
    }
    split_of = dict(zip(main.genes["gene_id"], main.genes["gene_split"]))
    return CohortResult(
        cohort, "all_individuals" if external else "test_individuals", genes, [split_of[g] for g in genes],
        [prepared.sample_ids[i] for i in sample_idx], observed, observed_z, pred, pred_z, gene_r,
    )


def metric_rows(res: CohortResult, top_n: int, n_available: int, per_gene_rows_max: int) -> list[MetricRow]:
    rows: list[MetricRow] = []
    top_note = f"top {len(res.genes)} genes by PrediXcan validation r (min({top_n}, {n_available} ranked genes))"
    split_arr = np.array(res.gene_split)
    for suffix, which in GENE_SETS.items():
        mask = np.ones(len(res.genes), bool) if which is None else split_arr == which
        split = res.split_prefix + suffix
        where = "all top genes" if which is None else f"top genes on {which} chromosomes"
        for model in MODELS:
            r = res.gene_r[model][mask]
            mean, median, n = summary(r)
            left_out = int(mask.sum()) - n
            note = f"{where}; {top_note}; per-gene Pearson across {len(res.samples)} individuals"
            if left_out:
                note += f"; {left_out} genes with a constant prediction left out"
            for metric, value in (("mean_gene_pearson_top1000", mean), ("median_gene_pearson_top1000", median)):
                if n == 0:
                    rows.append(not_computed(STUDY, res.cohort, model, split, metric, f"no gene with a defined r in {where}"))
                else:
                    rows.append(MetricRow(STUDY, res.cohort, model, split, metric, value, n, note))
    for model in MODELS:
        for metric, pred, obs in (
            ("median_individual_pearson", res.pred[model], res.observed),
            ("median_individual_pearson_zscore", res.pred_z[model], res.observed_z),
        ):
            if len(res.genes) < 3:
                rows.append(not_computed(STUDY, res.cohort, model, res.split_prefix, metric, "needs at least 3 genes"))
                continue
            _, median, n = summary(per_individual_pearson(pred, obs))
            rows.append(MetricRow(STUDY, res.cohort, model, res.split_prefix, metric, median, n, f"median over individuals of r across the {len(res.genes)} top genes"))
    if len(res.genes) <= per_gene_rows_max:
        for model in MODELS:
            for g, sp, r in zip(res.genes, res.gene_split, res.gene_r[model]):
                split = f"{res.split_prefix}_{sp}_genes"
                if np.isfinite(r):
                    rows.append(MetricRow(STUDY, res.cohort, model, split, f"gene_pearson_{g}", float(r), len(res.samples), f"gene {g} ({sp} chromosome)"))
                else:
                    rows.append(not_computed(STUDY, res.cohort, model, split, f"gene_pearson_{g}", "constant prediction"))
    return rows


def mean_expression_rows(main: Prepared, p_model, r_model, device: str, cohort: str, options: VariantOptions) -> list[MetricRow]:
    """Across-gene r of the reference-sequence predictions with training mean expression (all prepared genes)."""
    rows: list[MetricRow] = []
    seqs = SequenceProvider(main, options)
    for split in ("train", "test"):
        genes = main.genes_in(split)
        name = f"{split}_genes"
        if len(genes) < 3:
            for model in ("r_sage_net", "p_sage_net"):
                rows.append(not_computed(STUDY, cohort, model, name, "across_gene_pearson_mean_expression", f"needs at least 3 genes on {split} chromosomes ({len(genes)})"))
            continue
        target = main.mean[[main.gene_index[g] for g in genes]]
        one = main.train_idx[:1]
        r_ref, _ = predict_rsagenet(r_model, seqs, genes, one, device, 1)
        p_mean, _ = predict_psagenet(p_model, seqs, genes, one, device, 1)
        for model, pred in (("r_sage_net", r_ref), ("p_sage_net", p_mean)):
            rows.append(MetricRow(STUDY, cohort, model, name, "across_gene_pearson_mean_expression", pearson(pred, target), len(genes), f"reference sequence vs mean expression of training individuals, all prepared {split}-chromosome genes"))
    return rows


def qc_rows(prepared: Prepared, cohort: str) -> list[MetricRow]:
    qc = prepared.qc()
    qc["off_contig_windows"] = int(prepared.genes["off_contig"].sum()) if "off_contig" in prepared.genes else 0
    rows = []
    # model `vcf_qc` sorts after the three models, so the report lists the predictions first
    split = "prepare"
    for key, basis in QC_KEYS:
        if key not in qc or (key not in QC_ALWAYS and not qc[key]):
            continue
        n = int(qc[basis]) if basis and basis in qc else None
        note = f"count out of {n} {basis.replace('_', ' ')}" if n is not None else "count"
        rows.append(MetricRow(STUDY, cohort, "vcf_qc", split, key, float(qc[key]), n, note))
    return rows


def per_gene_table(results: list[CohortResult], predixcan: PrediXcanResult) -> pd.DataFrame:
    val_r = dict(zip(predixcan.table["gene_id"], predixcan.table["val_pearson"]))
    frames = []
    for res in results:
        frames.append(pd.DataFrame({
            "cohort": res.cohort, "individuals": res.split_prefix, "gene_id": res.genes, "gene_split": res.gene_split,
            "predixcan_val_pearson": [val_r.get(g, np.nan) for g in res.genes],
            **{f"{m}_pearson": res.gene_r[m] for m in MODELS}, "n_individuals": len(res.samples),
        }))
    return pd.concat(frames, ignore_index=True)


def run_evaluation(
    main: Prepared, predixcan: PrediXcanResult, rsagenet: Path, psagenet: Path, outdir: Path, params: EvaluateParams,
    external: Prepared | None = None,
) -> tuple[list[MetricRow], list[CohortResult]]:
    device = resolve_device(params.device)
    p_model, p_meta = load_model(psagenet, "psagenet", device)
    r_model, _ = load_model(rsagenet, "rsagenet", device)
    options = VariantOptions(**p_meta.get("variant_options", {}))
    ranked = predixcan.ranking()
    top = predixcan.top_genes(params.top_genes)
    if not top:
        raise InputError(predixcan.path, "ranked genes", "at least one gene with a PrediXcan validation r", "none")
    results = [evaluate_cohort(main, main, predixcan, top, p_model, r_model, external=False, cohort=params.cohort, device=device, options=options)]
    rows = metric_rows(results[0], params.top_genes, len(ranked), params.per_gene_rows_max)
    rows += mean_expression_rows(main, p_model, r_model, device, params.cohort, options)
    rows += qc_rows(main, params.cohort)
    if external is not None:
        if external.params.window != main.params.window or external.params.anchor != main.params.anchor:
            raise InputError(external.path, "window", f"the main cohort's window ({main.params.window} bp, {main.params.anchor})", f"{external.params.window} bp, {external.params.anchor}")
        ext = evaluate_cohort(external, main, predixcan, top, p_model, r_model, external=True, cohort=params.external_cohort, device=device, options=options)
        results.append(ext)
        rows += metric_rows(ext, params.top_genes, len(ranked), 0)
        rows += qc_rows(external, params.external_cohort)
    else:
        for metric in ("mean_gene_pearson_top1000", "median_gene_pearson_top1000"):
            for model in MODELS:
                rows.append(not_computed(STUDY, params.external_cohort, model, "all_individuals", metric, "no external cohort given (sage_net_external_vcf)"))
    outdir.mkdir(parents=True, exist_ok=True)
    table = per_gene_table(results, predixcan)
    with atomic_path(outdir / "per_gene_pearson.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    with atomic_path(outdir / "predictions.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{f"{r.cohort}__{k}__{m}": v for r in results for k, d in (("pred", r.pred), ("pred_z", r.pred_z)) for m, v in d.items()},
                     **{f"{r.cohort}__observed": r.observed for r in results}, **{f"{r.cohort}__genes": np.array(r.genes) for r in results},
                     **{f"{r.cohort}__samples": np.array(r.samples) for r in results})
    with atomic_path(outdir / "best_epochs.json") as tmp:
        tmp.write_text(json.dumps({"p_sage_net": p_meta.get("best_epoch")}) + "\n")
    return rows, results
