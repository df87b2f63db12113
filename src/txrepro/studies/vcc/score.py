"""`vcc.py score`: a reviewer's own predictions scored by both evaluators, without `prepare`.

Takes a real h5ad and a prediction h5ad as `cell-eval run` takes them: log-normalised values
(decimals in [0, 15)), or integer counts, which are normalised to the median total and log1p'd
first, as cell-eval does with each file. Both files need the perturbation column with control cells
and the same genes in the same order; the prediction must cover exactly the real perturbations.
An optional baseline prediction (e.g. `cell-eval baseline`'s cell-mean file) gives the overall
scores. Everything is streamed like `evaluate` (one group of cells in memory at a time).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path, write_json
from txrepro.metrics.table import metrics_frame, write_metrics
from txrepro.runtime import get_logger
from txrepro.studies.vcc.data import read_gene_list
from txrepro.studies.vcc.evaluate import CELL_EVAL_METRICS, DatasetStats, _nanmean, cell_eval_metrics, dataset_stats_h5ad, project_metrics
from txrepro.studies.vcc.h5ad_stream import CsrH5adWriter, CsrRows, iter_row_blocks
from txrepro.studies.vcc.params import DATASET, PUBLISHED_SHAPE, default_test_genes_path, option

log = get_logger(__name__)

LOG_MAX = 15.0  # cell-eval's guess_is_lognorm: decimals at or above this are not log1p data
FRACTION = 1e-3  # cell-eval's epsilon for "has decimals"
BASELINE_NAME = "baseline"
SCORE_JSON = "score.json"


@dataclass(frozen=True)
class ScoredFile:
    csr: Path  # the normalised-log matrix as CSR on disk (the file itself when it already is)
    labels: np.ndarray
    var_names: pd.Index
    normalised_here: bool


def _scan(x: Any, n: int, chunk: int, path: Path, param: str) -> tuple[bool, float]:
    """(has decimals, max) over every stored value; NaN, inf and negatives are refused."""
    has_dec, vmax = False, 0.0
    for start, stop, block in iter_row_blocks(x, n, chunk):
        v = block.data
        if v.size == 0:
            continue
        if not np.isfinite(v).all():
            raise InputError(path, "X", f"finite expression ({param})", f"NaN or inf in rows {start}-{stop - 1}")
        if v.min() < 0:
            raise InputError(path, "X", f"log-normalised (>= 0) or count data ({param})", f"negative values in rows {start}-{stop - 1}")
        has_dec = has_dec or bool((np.modf(v)[0] > FRACTION).any())
        vmax = max(vmax, float(v.max()))
    return has_dec, vmax


def read_scored_file(path: str | Path, workdir: Path, name: str, *, pert_col: str, control: str, param: str, chunk: int = 5_000) -> ScoredFile:
    """Check one input and return it as normalised-log CSR on disk (normalising counts as cell-eval does)."""
    import anndata as ad

    from txrepro.studies.vcc.preprocess import normalise_log1p_block

    p = Path(path)
    if not p.is_file():
        raise InputError(p, f"{name} h5ad ({param})", "an existing .h5ad file", "nothing at this path")
    try:
        adata = ad.read_h5ad(p, backed="r")
    except Exception as exc:  # h5py/anndata raise many types for a corrupt file
        raise InputError(p, f"{name} h5ad ({param})", "a readable AnnData .h5ad", type(exc).__name__) from None
    try:
        if pert_col not in adata.obs.columns:
            raise InputError(p, f"obs['{pert_col}']", f"a perturbation column ({option('--pert-col', 'vcc_pert_col')})",
                             f"obs columns {list(adata.obs.columns)[:8]}")
        labels = adata.obs[pert_col].astype(str).to_numpy()
        if control not in set(labels):
            raise InputError(p, f"obs['{pert_col}']", f"control cells labelled '{control}' ({option('--control', 'vcc_control')})", "none")
        if not adata.var_names.is_unique:
            raise InputError(p, "var_names", "unique gene names", f"duplicates {adata.var_names[adata.var_names.duplicated()][:3].tolist()}")
        if adata.X is None or getattr(adata.X, "format", None) == "csc":
            raise InputError(p, "X", "a CSR or dense matrix", "CSC or none; convert with adata.X = adata.X.tocsr()")
        n = adata.n_obs
        has_dec, vmax = _scan(adata.X, n, chunk, p, param)
        if has_dec and vmax >= LOG_MAX:
            raise InputError(p, "X", f"log-normalised values in [0, {LOG_MAX:g}) or integer counts, as cell-eval accepts",
                             f"decimals up to {vmax:.4g} (normalised but not log1p'd, or mixed scales?)")
        var_names = adata.var_names.copy()
        out = workdir / f"{name}.h5ad"
        if has_dec:
            try:
                with CsrRows(p):
                    return ScoredFile(p, labels, var_names, False)
            except ValueError:  # not CSR on disk: a CSR copy, values unchanged
                with CsrH5adWriter(out, n, adata.n_vars, dtype=np.float32) as w:
                    for _, _, block in iter_row_blocks(adata.X, n, chunk):
                        w.append(block.astype(np.float32))
                    w.finish(pd.DataFrame(index=adata.obs_names.copy()), pd.DataFrame(index=var_names))
                return ScoredFile(out, labels, var_names, False)
        # integer counts: cell-eval normalises each file to its median total, then log1p
        totals = np.empty(n, dtype=np.float32)
        for start, stop, block in iter_row_blocks(adata.X, n, chunk):
            totals[start:stop] = np.asarray(block.astype(np.float64).sum(axis=1)).ravel()
        target = np.median(totals)
        log.info("%s: integer counts; normalize_total to the median %.1f and log1p, as cell-eval does", p.name, target)
        with CsrH5adWriter(out, n, adata.n_vars) as w:
            for start, stop, block in iter_row_blocks(adata.X, n, chunk):
                w.append(normalise_log1p_block(block, totals[start:stop], target))
            w.finish(pd.DataFrame(index=adata.obs_names.copy()), pd.DataFrame(index=var_names))
        return ScoredFile(out, labels, var_names, True)
    finally:
        adata.file.close()


def _check_pair(real: ScoredFile, other: ScoredFile, path: Path, control: str, pert_col: str, param: str) -> None:
    if not other.var_names.equals(real.var_names):
        raise InputError(path, f"var_names ({param})", f"the real file's {real.var_names.size} genes in the same order", f"{other.var_names.size} genes")
    want = set(real.labels) - {control}
    have = set(other.labels) - {control}
    missing, extra = sorted(want - have), sorted(have - want)
    if missing or extra:
        raise InputError(path, f"obs['{pert_col}'] ({param})", "cells for exactly the real file's perturbations",
                         f"missing {missing[:5]}" if missing else f"unexpected {extra[:5]}")


def published_split_mismatches(real: ScoredFile, control: str) -> list[str]:
    """How a real file differs from the published test split (30 genes + controls, 18,080 genes)."""
    out = []
    perts = sorted(set(real.labels) - {control})
    if perts != sorted(read_gene_list(default_test_genes_path())):
        out.append(f"{len(perts)} perturbations, not the published 30 test genes")
    if real.var_names.size != PUBLISHED_SHAPE[1]:
        out.append(f"{real.var_names.size:,} genes, not {PUBLISHED_SHAPE[1]:,}")
    if control != "non-targeting":
        out.append(f"control '{control}', not 'non-targeting'")
    return out


def _evaluation(real: DatasetStats, pred: DatasetStats, pert_col: str, var_names: pd.Index, workdir: Path, threads: int,
                info: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame, Any]:
    proj = project_metrics(real, pred)
    ce_per, ce_agg = cell_eval_metrics(real, pred, pert_col=pert_col, var_names=var_names, workdir=workdir, threads=threads)
    import polars as pl

    ce_mean = ce_agg.filter(pl.col("statistic") == "mean").to_dicts()[0]
    ev = {
        "n_perturbations": len(proj),
        "project": {"DES": _nanmean(proj["DES"]), "PDS": float(proj["PDS"].mean()), "MAE": float(proj["MAE"].mean()),
                    "n_DES": int(proj["DES"].notna().sum())},
        "cell_eval": {m: float(ce_mean[m]) for m in CELL_EVAL_METRICS},
        "model_info": info,
    }
    return ev, proj.merge(ce_per, on="perturbation", how="left"), ce_agg


def score(
    real: str | Path,
    pred: str | Path,
    outdir: str | Path,
    *,
    pert_col: str = "target_gene",
    control: str = "non-targeting",
    model: str = "prediction",
    dataset: str = "user",
    baseline: str | Path | None = None,
    threads: int = 1,
) -> Path:
    """Score `pred` against `real` with both evaluators; writes metrics.tsv, <model>_per_perturbation.tsv, score.json."""
    from txrepro.studies.vcc.summarise import score_rows

    import re

    outdir = Path(outdir)
    for value, param in ((model, option("--model", "vcc_score_model")), (dataset, option("--dataset", "vcc_score_dataset"))):
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
            raise InputError("params", param, "a name of letters, digits and _ . + -", repr(value))
    if model == BASELINE_NAME:
        raise InputError("params", option("--model", "vcc_score_model"), f"a name other than '{BASELINE_NAME}' (the baseline's rows)", repr(model))
    outdir.mkdir(parents=True, exist_ok=True)
    workdir = outdir / ".score.work"  # under the output; a re-run removes what a killed one left
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    try:
        kw = {"pert_col": pert_col, "control": control}
        r = read_scored_file(real, workdir, "real", param=option("--real", "vcc_score_real"), **kw)
        published = dataset == DATASET
        if published:
            why = published_split_mismatches(r, control)
            if why:
                raise InputError("params", option("--dataset", "vcc_score_dataset"),
                                 f"'{DATASET}' only for the published 30-gene test split of the VCC training file", f"{Path(real).name}: " + "; ".join(why))
        files = {model: (pred, option("--pred", "vcc_score_pred"))}
        if baseline:
            files[BASELINE_NAME] = (baseline, option("--baseline", "vcc_score_baseline"))
        scored = {}
        for name, (path, param) in files.items():
            f = read_scored_file(path, workdir, name, param=param, **kw)
            _check_pair(r, f, Path(path), control, pert_col, param)
            scored[name] = f
        real_stats = dataset_stats_h5ad(r.csr, r.labels, pert_col, control, threads)
        evals, per, agg = {}, {}, {}
        for name, f in scored.items():
            stats = dataset_stats_h5ad(f.csr, f.labels, pert_col, control, threads)
            note = f"scored by `vcc.py score`: {Path(files[name][0]).name} against {Path(real).name}"
            if f.normalised_here or r.normalised_here:
                note += " (integer counts normalised to the median total + log1p, as cell-eval does)"
            evals[name], per[name], agg[name] = _evaluation(real_stats, stats, pert_col, r.var_names, workdir, threads, {"features": note})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = score_rows(evals, agg, dataset=dataset, published=published, baseline=BASELINE_NAME,
                      baseline_note=f"the baseline predictions {Path(baseline).name}" if baseline else "",
                      no_baseline="no baseline predictions given (--baseline, parameter vcc_score_baseline)")
    for name in evals:
        with atomic_path(outdir / f"{name}_per_perturbation.tsv") as tmp:
            per[name].to_csv(tmp, sep="\t", index=False)
    write_json(outdir / SCORE_JSON, {"real": Path(real).name, "pred": Path(pred).name, "baseline": Path(baseline).name if baseline else None,
                                     "dataset": dataset, "published_dataset": published, "model": model, "evaluations": evals})
    out = write_metrics(metrics_frame(rows), outdir / "metrics.tsv")
    ev = evals[model]
    log.info("%s: DES %.4f PDS %.4f MAE %.4f | cell-eval overlap %.4f pds_l1 %.4f mae %.4f", model, ev["project"]["DES"], ev["project"]["PDS"],
             ev["project"]["MAE"], *(ev["cell_eval"][m] for m in CELL_EVAL_METRICS))
    return out


def read_score(outdir: str | Path) -> dict[str, Any]:
    return json.loads((Path(outdir) / SCORE_JSON).read_text())
