"""The `prepare` step: a Perturb-seq counts h5ad -> the prepared h5ad the model trains on.

CausalBench-style steps of the original data modules (studies.md gpo_vae section 1): QC metrics,
strong perturbations from the Replogle/Adamson summary statistics, cells with a real knockdown,
perturbations with enough cells, FC3 extra genes, the cell-level 64/16/20 split and optimal-transport
control pairing. Every step whose output the input already carries (the authors' preprocessed
h5ads) is skipped, and the prepared file records which steps ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from txrepro.errors import InputError
from txrepro.io.anndata import read_h5ad_checked, require_counts
from txrepro.io.atomic import atomic_path
from txrepro.io.tables import read_table
from txrepro.runtime import get_logger
from txrepro.studies.gpo_vae.config import CONTROL_LABEL, DataConfig
from txrepro.studies.gpo_vae.qc import QC_METRICS, qc_flags, qc_metrics

log = get_logger(__name__)

MATCHED_COLUMN = "matched_ctrl_idx_0_ot"  # the original's `matched_ctrl_idx_{seed}_{mode}` with seed 0
STATS_COLUMNS = (
    "genetic perturbation",
    "Number of DEGs (anderson-darling)",
    "percent knockdown",
    "number of cells (filtered)",
)
SPLITS = ("train", "val", "test")


@dataclass
class PrepareReport:
    """What `prepare` did, for run_info and the log."""

    n_cells: int
    n_perturbations: int
    n_extra_genes: int
    n_phenotype_genes: int
    steps_run: list[str] = field(default_factory=list)
    steps_skipped: list[str] = field(default_factory=list)


def treatment_labels(genes: pd.Series) -> pd.Series:
    """The original's `T`: every label containing 'non-targeting' becomes the control label."""
    g = genes.astype(str)
    return g.where(~g.str.contains(CONTROL_LABEL, regex=False), CONTROL_LABEL)


def read_perturb_h5ad(path: str | os.PathLike[str]) -> ad.AnnData:
    """Read the input and check what every later step needs: labels, controls, counts."""
    adata = read_h5ad_checked(path, obs=("gene",))
    use_gene_symbols(adata)
    labels = treatment_labels(adata.obs["gene"])
    if not (labels == CONTROL_LABEL).any():
        examples = ", ".join(map(repr, labels.unique()[:5]))
        raise InputError(path, "obs['gene']", f"control cells labelled '{CONTROL_LABEL}'", f"no control cells (labels such as {examples})")
    if (labels != CONTROL_LABEL).sum() == 0:
        raise InputError(path, "obs['gene']", "perturbed cells besides the controls", "only control cells")
    require_counts(adata, path)
    if adata.var_names.has_duplicates:
        raise InputError(path, "var_names", "unique gene symbols", f"duplicates such as {adata.var_names[adata.var_names.duplicated()][0]!r}")
    return adata


def use_gene_symbols(adata: ad.AnnData) -> None:
    """Replogle's raw files index var by gene id with the symbol in var['gene_name']: index by
    symbol, made unique, as the original `get_qc_annotation` does (the id is kept in var['gene_id']).

    obs['gene'] holds symbols, and the knockdown filter, the OT cost and the MT-/RPS/RPL/HB QC
    fractions all look genes up by symbol, so without this no perturbed gene is found.
    """
    if "gene_name" not in adata.var.columns:
        return
    symbols = adata.var["gene_name"].astype(str).to_numpy()
    if np.array_equal(symbols, adata.var_names.to_numpy(dtype=str)):
        return
    old = adata.var_names.to_numpy(dtype=str)
    adata.var = adata.var.drop(columns=["gene_name"])
    if "gene_id" not in adata.var.columns:
        adata.var["gene_id"] = old
    adata.var_names = pd.Index(symbols, name=None)
    n_dup = int(adata.var_names.duplicated().sum())
    adata.var_names_make_unique()
    log.info("var indexed by var['gene_name'] (gene symbols) instead of ids such as %s; %d repeated symbols made unique",
             old[0] if len(old) else "", n_dup)


def check_reference_networks(location: str | os.PathLike[str], obs: pd.DataFrame, source: str | os.PathLike[str]) -> None:
    """Read every reference edge list and map it to the perturbed genes (what evaluate does later)."""
    from txrepro.studies.gpo_vae.grn import load_reference_networks, perturbed_gene_ids

    load_reference_networks(location, perturbed_gene_ids(obs), source)


def require_perturbed_in_var(adata: ad.AnnData, path: str | os.PathLike[str]) -> None:
    """The OT cost and the GRN are defined over the perturbed genes, so each must be a var gene."""
    labels = treatment_labels(adata.obs["gene"])
    perturbed = sorted(set(labels) - {CONTROL_LABEL})
    missing = [g for g in perturbed if g not in adata.var_names]
    if missing:
        raise InputError(
            path, "var_names", "every perturbed gene of obs['gene'] among the var genes (or summary statistics to filter them)",
            f"{len(missing)} of {len(perturbed)} missing, such as {', '.join(missing[:3])}",
        )


def read_summary_stats(path: str | os.PathLike[str], sheet: str | None = None) -> pd.DataFrame:
    """Replogle supplementary table: CSV/TSV, or a sheet of the published summary_stats.xlsx
    (TabB_K562_day6_summary_stat, TabC_RPE1_summary_statistic)."""
    p = Path(path)
    if p.suffix.lower() in (".xlsx", ".xls"):
        if not p.is_file():
            raise InputError(p, "summary statistics", "an existing file", "nothing at this path")
        try:
            book = pd.ExcelFile(p, engine="openpyxl")
        except Exception as exc:  # openpyxl raises several types for a corrupt workbook
            raise InputError(p, "summary statistics", "a readable xlsx workbook", type(exc).__name__) from None
        if sheet is not None and sheet not in book.sheet_names:
            raise InputError(p, f"sheet '{sheet}'", f"one of {', '.join(book.sheet_names)}")
        df = book.parse(sheet if sheet is not None else 0)
        missing = [c for c in STATS_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(p, f"column '{missing[0]}'", f"columns {', '.join(STATS_COLUMNS)}")
        return _numeric_stats(df, f"{p} (sheet {sheet or book.sheet_names[0]!r})")
    return _numeric_stats(read_table(p, STATS_COLUMNS, what="summary statistics"), str(p))


def _numeric_stats(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """The three filter columns as numbers; text or an empty cell is one line naming column and row.

    Rows are counted as a spreadsheet shows them: the header is row 1, the first data row is row 2.
    """
    for col in STATS_COLUMNS[1:]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if bad.size:
            i = int(bad[0])
            value = df[col].iloc[i]
            shown = "an empty cell" if pd.isna(value) else repr(str(value))
            raise InputError(source, f"column '{col}'", "a number in every row",
                             f"{shown} on row {i + 2} ({bad.size} such row{'s' if bad.size > 1 else ''})")
        df[col] = values.astype(float)
    df["genetic perturbation"] = df["genetic perturbation"].astype(str).str.strip()
    return df


def strong_perturbations(stats: pd.DataFrame, cfg: DataConfig) -> set[str]:
    """CausalBench's strong perturbations: > 50 DEGs, knockdown <= -30 %, > 25 filtered cells.

    Each kept name is returned as written (the Adamson table holds gene ids) and, when it has
    underscores, also as its second field: the Replogle sheets name a perturbation
    `<n>_<GENE>_<guides>_<gene id>` and the RPE1/K562 modules match `s.split('_')[1]` to obs['gene'].
    """
    keep = stats[
        (stats["Number of DEGs (anderson-darling)"] > cfg.strong_min_degs)
        & (stats["percent knockdown"] <= cfg.strong_max_knockdown)
        & (stats["number of cells (filtered)"] > cfg.strong_min_cells)
    ]
    names = set(keep["genetic perturbation"].astype(str))
    return names | {n.split("_")[1] for n in names if n.count("_") >= 1 and n.split("_")[1]}


def knockdown_mask(adata: ad.AnnData, labels: pd.Series, percentile: float) -> np.ndarray:
    """Cells whose own target count is <= the control cells' percentile (raw counts, as the original).

    Perturbations whose target is not a var gene keep all their cells, as the original.
    """
    keep = np.ones(adata.n_obs, dtype=bool)
    ctrl = (labels == CONTROL_LABEL).to_numpy()
    var_index = {g: i for i, g in enumerate(adata.var_names)}
    for gene in sorted(set(labels) - {CONTROL_LABEL}):
        if gene not in var_index:
            continue
        col = adata.X[:, var_index[gene]]
        col = np.asarray(col.todense()).ravel() if sp.issparse(col) else np.asarray(col).ravel()
        thresh = np.percentile(col[ctrl], percentile)
        cells = (labels == gene).to_numpy()
        keep[cells] = col[cells] <= thresh
    return keep


def amount_mask(adata: ad.AnnData, labels: pd.Series, min_cells: int) -> np.ndarray:
    """Keep controls and perturbations of var genes with more than `min_cells` cells."""
    counts = labels.value_counts()
    ok = {g for g, n in counts.items() if n > min_cells and (g == CONTROL_LABEL or g in set(adata.var_names))}
    return labels.isin(ok).to_numpy()


def fc3_genes(adata: ad.AnnData, labels: pd.Series, cfg: DataConfig) -> tuple[list[str], np.ndarray]:
    """Per perturbation the top Wilcoxon gene with |logFC| > 3 and padj < 0.01 (union), plus HVGs.

    scanpy on normalise_total + log1p, reference = controls, as `get_perturbed_annotation`.
    """
    import scanpy as sc

    work = ad.AnnData(X=adata.X.copy(), obs=pd.DataFrame({"T": labels.to_numpy()}, index=adata.obs_names), var=pd.DataFrame(index=adata.var_names))
    work.X = work.X.astype(np.float32)
    sc.pp.normalize_total(work)
    sc.pp.log1p(work)
    try:
        sc.pp.highly_variable_genes(work, batch_key="T")
        hvg = work.var["highly_variable"].to_numpy()
    except Exception as exc:  # tiny inputs can defeat the binning of the seurat flavour
        log.warning("highly_variable_genes failed (%s); highly_variable set to False", type(exc).__name__)
        hvg = np.zeros(work.n_vars, dtype=bool)
    sc.tl.rank_genes_groups(work, groupby="T", method="wilcoxon", reference=CONTROL_LABEL)
    chosen: set[str] = set()
    for pert in sorted(set(labels) - {CONTROL_LABEL}):
        df = sc.get.rank_genes_groups_df(work, group=pert)
        lfc, padj = df["logfoldchanges"], df["pvals_adj"]
        if cfg.fc3_rule == "rpe1_original":
            sel = (lfc < -cfg.fc3_min_abs_logfc) | ((lfc > cfg.fc3_min_abs_logfc) & (padj < cfg.fc3_max_padj))
        else:
            sel = ((lfc < -cfg.fc3_min_abs_logfc) | (lfc > cfg.fc3_min_abs_logfc)) & (padj < cfg.fc3_max_padj)
        names = df.loc[sel, "names"].astype(str).tolist()
        if names:
            chosen.add(names[0])
    return sorted(chosen), hvg


def cell_split(n_cells: int, random_state: int = 0) -> np.ndarray:
    """64/16/20: train_test_split(0.8) of positions, then train_test_split(0.8) of the train part."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(n_cells)
    train_idx, test_idx = train_test_split(idx, train_size=0.8, random_state=random_state)
    train_idx, val_idx = train_test_split(train_idx, train_size=0.8, random_state=random_state)
    split = np.empty(n_cells, dtype=object)
    split[train_idx], split[val_idx], split[test_idx] = "train", "val", "test"
    return split.astype(str)


def perturbation_split(labels: pd.Series, random_state: int = 0) -> np.ndarray:
    """Extension (not in the paper): 20 % of perturbations held out entirely as test.

    Controls follow the 64/16/20 cell split; the other perturbations split their cells 80/20 into
    train/val. The held-out perturbations' GRN rows and embeddings are then never trained.
    """
    from sklearn.model_selection import train_test_split

    labels = labels.astype(str).reset_index(drop=True)
    perts = np.array(sorted(set(labels) - {CONTROL_LABEL}))
    seen, held = train_test_split(perts, test_size=0.2, random_state=random_state)
    split = np.empty(len(labels), dtype=object)
    ctrl = np.flatnonzero(labels == CONTROL_LABEL)
    split[ctrl] = cell_split(len(ctrl), random_state)
    for p in held:
        split[np.flatnonzero(labels == p)] = "test"
    seen_idx = np.flatnonzero(labels.isin(set(seen)))
    tr, va = train_test_split(seen_idx, train_size=0.8, random_state=random_state)
    split[tr], split[va] = "train", "val"
    return split.astype(str)


def log_normalised(X: np.ndarray | sp.spmatrix, columns: list[int] | None = None) -> np.ndarray:
    """scanpy normalize_total (target = median cell total) + log1p, dense float32.

    Totals always come from every gene; `columns` selects genes before densifying, so a large
    sparse matrix is never made dense as a whole.
    """
    import scanpy as sc

    work = ad.AnnData(X=X.astype(np.float32))
    sc.pp.normalize_total(work)
    sc.pp.log1p(work)
    Y = work.X if columns is None else work.X[:, columns]
    return np.asarray(Y.todense()) if sp.issparse(Y) else np.asarray(Y)


def _check_existing_columns(adata: ad.AnnData, path: str | os.PathLike[str], labels: pd.Series) -> None:
    if "split" in adata.obs:
        bad = ~adata.obs["split"].astype(str).isin(SPLITS)
        if bad.any():
            raise InputError(path, "obs['split']", "train, val or test", repr(adata.obs["split"].astype(str)[bad].iloc[0]))
    if MATCHED_COLUMN in adata.obs:
        try:
            idx = adata.obs[MATCHED_COLUMN].astype(np.int64).to_numpy()
        except (ValueError, TypeError):
            raise InputError(path, f"obs['{MATCHED_COLUMN}']", "positional indices of control cells (integers)") from None
        if idx.min() < 0 or idx.max() >= adata.n_obs:
            raise InputError(path, f"obs['{MATCHED_COLUMN}']", f"positions 0..{adata.n_obs - 1}", f"{idx.min()}..{idx.max()}")
        if not (labels.to_numpy()[idx] == CONTROL_LABEL).all():
            raise InputError(path, f"obs['{MATCHED_COLUMN}']", "positions of control cells", "positions of perturbed cells")


def prepare(
    input_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    cfg: DataConfig,
    *,
    summary_stats: str | os.PathLike[str] | None = None,
    summary_sheet: str | None = None,
    reference_networks: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> PrepareReport:
    """Run the preprocessing steps the input still needs and write the prepared h5ad atomically.

    Reference networks, when given, are read and matched to the input's perturbed genes first: the
    evaluation needs them only after training, so a bad folder must stop the run here.
    """
    adata = read_perturb_h5ad(input_path)
    if reference_networks:
        check_reference_networks(reference_networks, adata.obs, input_path)
    stats = read_summary_stats(summary_stats, summary_sheet or cfg.summary_sheet) if summary_stats else None
    adata.obs["gene"] = adata.obs["gene"].astype(str)
    labels = treatment_labels(adata.obs["gene"])
    if stats is None:
        require_perturbed_in_var(adata, input_path)
    run: list[str] = []
    skipped: list[str] = []

    # The original sorts cells by perturbation (its QC chunking and filters regroup them); the
    # positional split below depends on that order. A stable sort keeps within-group order.
    order = np.argsort(adata.obs["gene"].to_numpy(), kind="stable")
    if not np.array_equal(order, np.arange(adata.n_obs)) and MATCHED_COLUMN not in adata.obs:
        adata = adata[order].copy()
        labels = treatment_labels(adata.obs["gene"])
    _check_existing_columns(adata, input_path, labels)

    has_qc = all(c in adata.obs for c in QC_METRICS)
    if stats is not None:
        strong = strong_perturbations(stats, cfg) | {CONTROL_LABEL}
        by_symbol = labels.isin(strong)
        by_id = adata.obs["gene_id"].astype(str).isin(strong) if "gene_id" in adata.obs else pd.Series(False, index=labels.index)
        keep = (by_symbol | by_id | (labels == CONTROL_LABEL)).to_numpy()
        if not (keep & (labels != CONTROL_LABEL).to_numpy()).any():
            raise InputError(summary_stats, "genetic perturbation", "strong perturbations named like obs['gene'] or obs['gene_id']",
                             "none of the input's perturbations passes the filters")
    if not has_qc:
        metrics = qc_metrics(adata, adata.obs["gene"], n_chunks=cfg.scrublet_chunks, n_prin_comps=cfg.scrublet_n_prin_comps, use_gpu=device.startswith("cuda"))
        for c in metrics.columns:
            adata.obs[c] = metrics[c].to_numpy()
        run.append("qc_metrics")
    else:
        skipped.append("qc_metrics (present in input)")

    n_before = adata.n_obs
    if stats is not None:
        adata = adata[keep].copy()
        labels = treatment_labels(adata.obs["gene"])
        kd = knockdown_mask(adata, labels, cfg.knockdown_percentile)
        adata = adata[kd].copy()
        labels = treatment_labels(adata.obs["gene"])
        am = amount_mask(adata, labels, cfg.min_cells_per_perturbation)
        dropped = sorted(set(labels[~am]) - {CONTROL_LABEL})
        if dropped:
            log.info("dropping %d perturbations with <= %d cells or a target outside var: %s", len(dropped),
                     cfg.min_cells_per_perturbation, ", ".join(dropped[:10]))
        adata = adata[am].copy()
        labels = treatment_labels(adata.obs["gene"])
        if (labels != CONTROL_LABEL).sum() == 0:
            raise InputError(input_path, "obs['gene']", f"perturbations with more than {cfg.min_cells_per_perturbation} cells with a real knockdown",
                             "none left after filtering")
        run.append("strong_perturbation_filters")
    else:
        skipped.append("strong_perturbation_filters (no summary statistics)")
    filtered = adata.n_obs != n_before
    if filtered:
        for col in ("split", MATCHED_COLUMN):  # positional columns no longer valid
            if col in adata.obs:
                log.warning("filters removed cells: recomputing obs['%s']", col)
                del adata.obs[col]

    flags, thresholds = qc_flags(adata.obs, cfg.qc_threshold)
    for c in flags.columns:
        adata.obs[c] = flags[c].to_numpy()

    if cfg.extra_genes_column not in adata.var:
        extra, hvg = fc3_genes(adata, labels, cfg)
        adata.var[cfg.extra_genes_column] = adata.var_names.isin(extra)
        if "highly_variable" not in adata.var:
            adata.var["highly_variable"] = hvg
        run.append("fc3_genes")
    else:
        skipped.append(f"fc3_genes (var['{cfg.extra_genes_column}'] present)")

    if "split" not in adata.obs:
        if cfg.split_mode == "perturbations":
            adata.obs["split"] = perturbation_split(labels, cfg.split_random_state)
        else:
            adata.obs["split"] = cell_split(adata.n_obs, cfg.split_random_state)
        run.append(f"split ({cfg.split_mode})")
    else:
        skipped.append("split (present in input)")
    adata.obs["split"] = adata.obs["split"].astype(str)
    for s in SPLITS:
        if not ((adata.obs["split"] == s) & (labels == CONTROL_LABEL)).any():
            raise InputError(input_path, "obs['split']", f"control cells in the {s} split", "none")

    perturbed = sorted(set(labels) - {CONTROL_LABEL})
    require_perturbed_in_var(adata, input_path)
    if MATCHED_COLUMN not in adata.obs:
        from txrepro.studies.gpo_vae.pairing import pair_controls

        cols = [adata.var_names.get_loc(g) for g in perturbed]
        adata.obs[MATCHED_COLUMN] = pair_controls(
            log_normalised(adata.X, cols), labels.to_numpy(), adata.obs["split"].to_numpy(), control_label=CONTROL_LABEL,
            epsilon=cfg.ot_epsilon, cost_scale=cfg.ot_cost_scale, device=device,
        )
        run.append("ot_pairing")
    else:
        skipped.append("ot_pairing (present in input)")
    adata.obs[MATCHED_COLUMN] = adata.obs[MATCHED_COLUMN].astype(np.int64)

    extra = sorted(set(adata.var_names[adata.var[cfg.extra_genes_column].astype(bool).to_numpy()]) - set(perturbed))
    treatments = perturbed + extra
    if cfg.phenotype_genes == "treatments":
        adata = adata[:, treatments].copy()
    adata.obs["T"] = labels.to_numpy()
    adata.uns["gpo_vae"] = {
        "treatments": treatments,
        "n_perturbed": len(perturbed),
        "control_label": CONTROL_LABEL,
        "qc_thresholds": thresholds,
        "steps_run": run,
        "steps_skipped": skipped,
        "split_mode": cfg.split_mode if any(r.startswith("split") for r in run) else "input",
        "input": str(input_path),
    }
    if not sp.issparse(adata.X):
        adata.X = sp.csr_matrix(adata.X)
    adata.X = adata.X.astype(np.float32)
    with atomic_path(out_path) as tmp:
        adata.write_h5ad(tmp)
    report = PrepareReport(adata.n_obs, len(perturbed), len(extra), adata.n_vars, run, skipped)
    log.info("prepared %d cells, %d perturbations, %d extra genes, %d phenotype genes; ran %s; skipped %s",
             report.n_cells, report.n_perturbations, report.n_extra_genes, report.n_phenotype_genes, run, skipped)
    return report
