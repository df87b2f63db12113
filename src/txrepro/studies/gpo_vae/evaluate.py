"""The `evaluate` step: ATE metrics against both references, the training-mean baseline, the
CausalBench GRN statistics, reference-network precision/recall, the exported GRN and the figures."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import precision_recall_curve

from txrepro.io.atomic import atomic_path, write_json
from txrepro.metrics.table import MetricRow, not_computed
from txrepro.runtime import get_logger, seed_everything
from txrepro.studies.gpo_vae import figures
from txrepro.studies.gpo_vae.ate import ate_metrics, data_ate, model_ate
from txrepro.studies.gpo_vae.data import log_normalised
from txrepro.studies.gpo_vae.features import dense, load_prepared
from txrepro.studies.gpo_vae.grn import (
    CausalBenchEvaluator,
    edge_table,
    load_reference_networks,
    perturbed_gene_ids,
    precision_recall,
    predicted_edges,
)
from txrepro.studies.gpo_vae.train import load_checkpoint

log = get_logger(__name__)
STUDY = "gpo_vae"
ATE_ORDER = ("ATE_pearson", "ATE_r2", "ATE_pearson_top20", "ATE_r2_top20", "jaccard_top20", "jaccard_top50")


@dataclass
class EvaluationOutputs:
    rows: list[MetricRow]
    figures: list[Path] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def _ate_rows(dataset: str, model: str, split: str, reference: np.ndarray, predicted: np.ndarray, notes: str, top_k: tuple[int, ...]) -> list[MetricRow]:
    m = ate_metrics(reference, predicted, top_k)
    rows = []
    for k in ATE_ORDER:
        if k not in m.values:
            continue
        note = notes
        if k.startswith("jaccard_top") and int(k.removeprefix("jaccard_top")) >= m.n_genes:
            note += f"; k capped at {m.n_genes} genes (trivially 1)"
        rows.append(MetricRow(STUDY, dataset, model, split, k, m.values[k], m.n_perturbations, note))
    return rows


def evaluate(
    prepared: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    *,
    dataset: str,
    reference_networks: str | os.PathLike[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
    ate_particles: int | None = None,
    dataset_note: str = "",
) -> EvaluationOutputs:
    """Compute every gpo_vae metric of one trained model and write the GRN, tables and figures."""
    outdir = Path(outdir)
    ds = load_prepared(prepared, seed=seed, training_inputs=False)
    ids = perturbed_gene_ids(ds.adata.obs)
    parsed = load_reference_networks(reference_networks, ids, prepared)
    net, cfg, payload = load_checkpoint(checkpoint, ds, device)
    ev = cfg.evaluate
    seed_everything(seed)
    rows: list[MetricRow] = []
    out = EvaluationOutputs(rows)
    base_note = f"seed {seed}; config {cfg.name}" + (f"; {dataset_note}" if dataset_note else "")

    # --- ATE -------------------------------------------------------------------------------------
    X = dense(ds.adata.X).astype(np.float64)
    labels = ds.adata.obs["T"].astype(str).to_numpy()
    split = ds.adata.obs["split"].astype(str).to_numpy()
    perts = ds.perturbations
    n_particles = int(ate_particles or ev.ate_particles)
    dosages = torch.stack([ds.dosage_of(p) for p in perts])
    pred = model_ate(net, dosages, n_particles=n_particles, batch_particles=ev.ate_batch_particles, seed=seed, device=device)
    all_mask = (ds.adata.obs["total_qc"].to_numpy() == 0) if ev.ate_qc_pass_only else None
    ref_all = data_ate(X, labels, perts, all_mask)
    note_all = f"reference from all cells (train included), as the original eval.py; {n_particles} particles; {base_note}"
    if ev.ate_qc_pass_only:
        note_all += "; QC-passing cells only"
    rows += _ate_rows(dataset, "gpo_vae", "all_cells", ref_all, pred, note_all, ev.top_k)
    test_perts = [p for p in perts if ((labels == p) & (split == "test")).any() and ((labels == p) & (split == "train")).any()]
    idx = [perts.index(p) for p in test_perts]
    ref_test = data_ate(X, labels, test_perts, split == "test")
    baseline = data_ate(X, labels, test_perts, split == "train")
    rows += _ate_rows(dataset, "gpo_vae", "test_cells", ref_test, pred[idx], f"held-out reference from test cells only; {n_particles} particles; {base_note}", ev.top_k)
    rows += _ate_rows(dataset, "train_mean_baseline", "test_cells", ref_test, baseline,
                      "per-perturbation mean of training cells minus training controls, scored on the held-out reference", ev.top_k)
    ate_frames = {
        "reference_all_cells": pd.DataFrame(ref_all, index=perts, columns=ds.genes),
        "model": pd.DataFrame(pred, index=perts, columns=ds.genes),
        "reference_test_cells": pd.DataFrame(ref_test, index=test_perts, columns=ds.genes),
        "train_mean_baseline": pd.DataFrame(baseline, index=test_perts, columns=ds.genes),
    }
    for name, frame in ate_frames.items():
        path = outdir / "ate" / f"{name}.tsv"
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, sep="\t", float_format="%.6g")
        out.files[f"ate_{name}"] = path
    from scipy.stats import pearsonr

    out.figures.append(figures.ate_scatter({
        "model vs all-cells reference (published protocol)": (ref_all, pred, pearsonr(ref_all.ravel(), pred.ravel())[0]),
        "model vs test-cells reference": (ref_test, pred[idx], pearsonr(ref_test.ravel(), pred[idx].ravel())[0]),
        "training-mean baseline vs test-cells reference": (ref_test, baseline, pearsonr(ref_test.ravel(), baseline.ravel())[0]),
    }, outdir / "figures" / f"gpo_vae_{dataset}_ate_scatter.png"))

    # --- GRN: statistics on test cells ---------------------------------------------------------------
    prob = net.edge_probabilities().cpu().numpy().astype(np.float64)
    k = ds.n_perturbed
    T = len(ds.treatments)
    edges = predicted_edges(prob, ev.edge_threshold, self_loops=ev.grn_self_loops)
    test_rows = split == "test"
    expr = log_normalised(X[test_rows], [ds.genes.index(t) for t in ds.treatments])
    # The original draws false-omission pairs from its evaluation universe, perturbed + FC3 genes,
    # even where the model's extra treatments came from another column (FC2 for Adamson).
    var = ds.adata.var
    universe = k + (int((var["FC3"].astype(bool) & ~var.index.isin(ds.perturbations)).sum()) if "FC3" in var else T - k)
    evaluator = CausalBenchEvaluator(expr, labels[test_rows], ds.treatments, k, p_value_threshold=ev.p_value_threshold, n_universe=universe)
    stats = evaluator.evaluate(edges, max_path_length=ev.max_path_length, omission_estimation_size=ev.omission_estimation_size, seed=seed)
    block_edges = [(a, b) for a, b in edges if a < k and b < k]
    loops = "self-loops included" if ev.grn_self_loops else "self-loops excluded"
    grn_note = f"edges with probability > {ev.edge_threshold} in the perturbed x perturbed block, {loops}; test cells; {base_note}"
    og = stats.output_graph
    rows.append(MetricRow(STUDY, dataset, "gpo_vae", "test_cells", "num_edges", float(len(block_edges)), k, grn_note))
    if og.wasserstein:
        rows.append(MetricRow(STUDY, dataset, "gpo_vae", "test_cells", "mean_wasserstein", og.mean_wasserstein, len(og.wasserstein), grn_note))
    else:
        rows.append(not_computed(STUDY, dataset, "gpo_vae", "test_cells", "mean_wasserstein", "no predicted edge between perturbed genes"))
    rows.append(MetricRow(STUDY, dataset, "gpo_vae", "test_cells", "true_positives", float(og.true_positives), len(block_edges), grn_note))
    rows.append(MetricRow(STUDY, dataset, "gpo_vae", "test_cells", "false_positives", float(og.false_positives), len(block_edges), grn_note))
    rows.append(MetricRow(STUDY, dataset, "gpo_vae", "test_cells", "false_omission_rate", stats.false_omission_rate, stats.n_random_pairs,
                          f"original estimator: significant pairs among {stats.n_random_pairs} random pairs of the treatment universe "
                          "(only perturbed x perturbed pairs testable; predicted pairs not skipped); " + base_note))
    if stats.n_random_pairs and np.isfinite(stats.negative_mean_wasserstein):
        rows.append(MetricRow(STUDY, dataset, "gpo_vae", "test_cells", "negative_mean_wasserstein", stats.negative_mean_wasserstein,
                              len(stats.random_tests.wasserstein), "mean Wasserstein of the tested random pairs; " + base_note))
    if stats.n_block_pairs:
        rows.append(MetricRow(STUDY, dataset, "gpo_vae", "test_cells", "false_omission_rate_perturbed_block", stats.false_omission_rate_block,
                              stats.n_block_pairs, "extension: random non-edges between perturbed genes off the predicted path closure; " + base_note))
    for length, res in enumerate(stats.paths, start=2):
        n_new = res.true_positives + res.false_positives
        note = f"pairs first connected in closure round {length - 1} (paths up to length {2 ** (length - 1)}), perturbed block; {base_note}"
        rows.append(MetricRow(STUDY, dataset, "gpo_vae", "test_cells", f"true_positives_paths_round{length - 1}", float(res.true_positives), n_new, note))
        rows.append(MetricRow(STUDY, dataset, "gpo_vae", "test_cells", f"false_positives_paths_round{length - 1}", float(res.false_positives), n_new, note))
        if res.wasserstein:
            rows.append(MetricRow(STUDY, dataset, "gpo_vae", "test_cells", f"mean_wasserstein_paths_round{length - 1}", res.mean_wasserstein, n_new, note))
    full = int((prob > ev.edge_threshold).sum())
    rows.append(MetricRow(STUDY, dataset, "gpo_vae", "learned_grn", "num_edges_full", float(full), T * T,
                          f"all T x T entries with probability > {ev.edge_threshold} (the original eval.py count, extended genes included)"))
    out.figures.append(figures.wasserstein_histogram(og.wasserstein, stats.random_tests.wasserstein, outdir / "figures" / f"gpo_vae_{dataset}_edge_wasserstein.png"))

    # --- GRN: reference networks ---------------------------------------------------------------------
    perturbed = ds.perturbations
    pred_ids = {(ids[perturbed[a]], ids[perturbed[b]]) for a, b in block_edges} if ids else set()
    curves = {}
    if parsed:
        pooled = set().union(*parsed.values())
        block = prob[:k, :k].copy()
        cand = [(a, b) for a in range(k) for b in range(k) if ev.grn_self_loops or a != b]
        scores = np.array([block[a, b] for a, b in cand])
        for name, ref in {**parsed, "pool": pooled}.items():
            if not ev.grn_self_loops:
                ref = {(a, b) for a, b in ref if a != b}
            precision, recall, hit = precision_recall(pred_ids, ref)
            note = f"{len(pred_ids)} predicted and {len(ref)} reference edges among perturbed genes; {hit} shared; {base_note}"
            rows.append(MetricRow(STUDY, dataset, "gpo_vae", "learned_grn", f"precision_{name}", precision, len(pred_ids), note))
            rows.append(MetricRow(STUDY, dataset, "gpo_vae", "learned_grn", f"recall_{name}", recall, len(ref), note))
            y = np.array([(ids[perturbed[a]], ids[perturbed[b]]) in ref for a, b in cand])
            if y.any() and not y.all():
                p_curve, r_curve, _ = precision_recall_curve(y, scores)
                curves[name] = (p_curve, r_curve, (precision, recall))
    else:
        for metric in ("precision_pool", "recall_pool"):
            rows.append(not_computed(STUDY, dataset, "gpo_vae", "learned_grn", metric, "no reference networks given (gpo_vae_reference_networks)"))
    out.figures.append(figures.pr_curves(curves, outdir / "figures" / f"gpo_vae_{dataset}_grn_pr_curve.png"))
    out.figures.append(figures.grn_heatmap(prob, k, outdir / "figures" / f"gpo_vae_{dataset}_grn_probabilities.png", ds.treatments))

    table = edge_table(prob, ds.treatments, k, ids, ev.edge_threshold)
    path = outdir / "grn_edges.tsv"
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    out.files["grn_edges"] = path
    path = outdir / "grn_probabilities.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, probability=prob.astype(np.float32), treatments=np.array(ds.treatments), n_perturbed=k)
    out.files["grn_probabilities"] = path
    write_json(outdir / "evaluation_summary.json", {
        "dataset": dataset, "seed": seed, "ate_particles": n_particles, "n_perturbations": len(perts),
        "n_test_perturbations": len(test_perts), "n_treatments": T, "n_perturbed": k,
        "edges_block": len(block_edges), "edges_full": full, "reference_networks": str(reference_networks or ""),
        "checkpoint_best_epoch": payload["result"]["best_epoch"],
    })
    out.figures = [f for f in out.figures if f is not None]
    return out
