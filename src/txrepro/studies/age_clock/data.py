"""prepare: validate the AgeAnno h5ad, label mid/old, split by donor, filter and select genes, bin.

Every check that can fail on user input runs here, before any model is built: age encoding,
Ensembl ids, genes missing from the checkpoint vocabulary, tissues without both age groups, a
donor on both sides of a given split. The output is one h5ad per protocol with raw counts of the
selected genes (X), log-normalised values (layers['log_norm'], for the logistic baseline), scGPT
bins (layers['binned']), labels and split in obs, and what was dropped and why in uns.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from txrepro.errors import InputError
from txrepro.io.anndata import read_h5ad_checked, require_counts, var_values
from txrepro.io.atomic import atomic_path
from txrepro.io.tables import read_table
from txrepro.models.gene_vocab import map_genes_to_vocab, read_vocab_json
from txrepro.paths import assets_dir
from txrepro.runtime import get_logger
from txrepro.studies.age_clock.binning import bin_rows
from txrepro.studies.age_clock.config import MID_AGE, NEGATIVE_CLASS, OLD_AGE, POSITIVE_CLASS, AgeClockConfig, InputColumns, config_from_dict

log = get_logger(__name__)

UNS_KEY = "age_clock_json"
# AgeAnno's other age groups: known, but outside the mid-vs-old task, so their cells are dropped.
OTHER_AGEANNO_GROUPS = ("youth", "young", "child", "infant", "supold", "centenarian")
_MITO = re.compile(r"^MT-", re.IGNORECASE)
_RIBO = re.compile(r"^(RP[SL]\d+(A|AL|L|X|Y\d?)?|RPLP[0-2]|RPSA)$", re.IGNORECASE)
_HAEMO = re.compile(r"^HB[ABDEGMQZ]\d*$", re.IGNORECASE)  # HBA1, HBB, HBG2...; not HBEGF, HBP1, HBS1L


def age_groups(values: pd.Series, path: str | os.PathLike[str], column: str) -> pd.Series:
    """'mid', 'old' or NA (outside the task) from ages in years or group names.

    Years: 20-59 mid, 60-100 old, others dropped. Names: anything starting with 'mid' or 'old'
    (AgeAnno sample names such as 'old3'), AgeAnno's other groups dropped; anything else is an
    unknown encoding. Bare 0/1 class ids are refused: the original code's age_id never said which
    class was old.
    """
    field = f"obs['{column}']"
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        uniq = set(np.unique(numeric.to_numpy()))
        if uniq <= {0, 1}:
            raise InputError(path, field, "ages in years or groups 'mid'/'old'", "only 0/1 class ids (which one is old is ambiguous)")
        years = numeric.to_numpy(dtype=float)
        out = np.full(len(years), None, dtype=object)
        out[(years >= MID_AGE[0]) & (years <= MID_AGE[1])] = NEGATIVE_CLASS
        out[(years >= OLD_AGE[0]) & (years <= OLD_AGE[1])] = POSITIVE_CLASS
        return pd.Series(out, index=values.index, dtype=object)
    text = values.astype(str).str.strip().str.lower()
    mid, old = text.str.startswith("mid").to_numpy(), text.str.startswith("old").to_numpy()
    unknown = ~(mid | old | text.str.startswith(OTHER_AGEANNO_GROUPS).to_numpy())
    if unknown.any():
        examples = ", ".join(repr(v) for v in pd.unique(values[unknown])[:3])
        raise InputError(path, field, "ages in years, or group names starting with 'mid' or 'old' (AgeAnno: youth/mid/old/supold)", examples)
    out = np.full(len(text), None, dtype=object)
    out[mid] = NEGATIVE_CLASS
    out[old] = POSITIVE_CLASS
    return pd.Series(out, index=values.index, dtype=object)


def qc_gene_mask(genes: Sequence[str]) -> np.ndarray:
    """True for mitochondrial, ribosomal and haemoglobin genes (dropped as in the paper)."""
    return np.array([bool(_MITO.match(g) or _RIBO.match(g) or _HAEMO.match(g)) for g in genes], dtype=bool)


def read_deg_genes(path: Path) -> list[str]:
    """AgeAnno 'Aging-related DEGs' genes, most significant first (min adjusted p over rows).

    The table is not UTF-8 throughout (a few cell-type names carry GBK bytes), so it is read as
    latin-1; gene symbols are ASCII either way.
    """
    df = read_table(path, ("gene", "p_val_adj"), what="AgeAnno DEG table", encoding="latin-1")
    best = df.groupby("gene")["p_val_adj"].min().reset_index()
    best = best.sort_values(["p_val_adj", "gene"], kind="stable")
    return best["gene"].astype(str).tolist()


def read_gene_list(path: Path) -> list[str]:
    """One symbol per line, or a table with a 'gene'/'hgnc'/'symbol' column."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "gene list", "an existing file", "nothing at this path")
    first = p.read_text(errors="replace").splitlines()[:1]
    if first and any(sep in first[0] for sep in ("\t", ",")):
        df = read_table(p, what="gene table", encoding="latin-1")
        for col in ("gene", "hgnc", "symbol", "gene_symbol"):
            if col in df.columns:
                return df[col].dropna().astype(str).tolist()
        raise InputError(p, "column 'gene'", "a column named gene, hgnc or symbol", f"columns {', '.join(map(str, df.columns))}")
    return [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def default_gene_table(cfg: AgeClockConfig) -> Path | None:
    if cfg.gene_source == "ageanno_degs":
        return assets_dir() / "ageanno_degs.csv"
    if cfg.gene_source == "age_genes_869":
        return assets_dir() / "ageanno_age_genes_869.txt"
    return None


def select_genes(candidates: Sequence[str], cfg: AgeClockConfig, gene_table: Path | None) -> list[str]:
    """The protocol's genes among `candidates` (already filtered and in the vocabulary)."""
    cand = list(candidates)
    have = set(cand)
    if cfg.gene_source == "random":
        # scgpt-age: np.random.seed(0); np.random.choice(genes, 3000, replace=False)
        n = min(cfg.n_genes or len(cand), len(cand))
        picked = set(np.random.RandomState(cfg.seed).choice(np.array(cand, dtype=object), n, replace=False))
        return [g for g in cand if g in picked]
    table = gene_table or default_gene_table(cfg)
    assert table is not None
    ranked = read_deg_genes(table) if cfg.gene_source == "ageanno_degs" else read_gene_list(table)
    chosen = [g for g in dict.fromkeys(ranked) if g in have]
    if cfg.n_genes is not None:
        chosen = chosen[: cfg.n_genes]
    keep = set(chosen)
    return [g for g in cand if g in keep]  # the data's gene order, as the original files had


def donor_split(obs: pd.DataFrame, cfg: AgeClockConfig, path: str | os.PathLike[str]) -> pd.Series:
    """train/val/test by donor within each tissue and age group (all cells of a donor on one side)."""
    rng = np.random.default_rng(cfg.seed)
    split = pd.Series("train", index=obs.index, dtype=object)
    for tissue in sorted(obs["tissue"].unique()):
        for group in (NEGATIVE_CLASS, POSITIVE_CLASS):
            sel = (obs["tissue"] == tissue) & (obs["age_group"] == group)
            donors = sorted(obs.loc[sel, "donor"].unique())
            n_test = max(1, int(round(cfg.test_donor_fraction * len(donors))))
            if len(donors) - n_test < 1:
                raise InputError(path, f"tissue '{tissue}'", f"at least 2 {group}-age donors for a donor-level train/test split", f"{len(donors)}")
            test = set(rng.permutation(np.array(donors, dtype=object))[:n_test])
            split[sel & obs["donor"].isin(test)] = "test"
    return _carve_validation(split, obs, cfg)


def _carve_validation(split: pd.Series, obs: pd.DataFrame, cfg: AgeClockConfig) -> pd.Series:
    """Validation cells from train, stratified by tissue and age group (the original had none)."""
    if cfg.select_on_test or cfg.val_fraction <= 0:
        return split
    rng = np.random.default_rng(cfg.seed + 1)
    split = split.copy()
    for _, idx in obs[split == "train"].groupby(["tissue", "age_group"], observed=True).groups.items():
        idx = np.array(sorted(idx))
        n_val = int(round(cfg.val_fraction * len(idx)))
        if n_val and len(idx) - n_val >= 1:
            split[rng.choice(idx, n_val, replace=False)] = "val"
    return split


def given_split(obs: pd.DataFrame, column: str, cfg: AgeClockConfig, path: str | os.PathLike[str]) -> pd.Series:
    values = obs[column].astype(str).str.strip().str.lower()
    bad = ~values.isin(["train", "val", "test"])
    if bad.any():
        raise InputError(path, f"obs['{column}']", "train, val or test", repr(values[bad].iloc[0]))
    sides = obs.assign(_s=values.where(values != "val", "train")).groupby(["tissue", "donor"], observed=True)["_s"].nunique()
    leaked = sides[sides > 1]
    if len(leaked):
        tissue, donor = leaked.index[0]
        raise InputError(path, f"obs['{column}']", "each donor's cells on one side of the train/test split", f"donor '{donor}' ({tissue}) in both train and test")
    if (values == "val").any() or cfg.select_on_test:
        return values.astype(object)
    return _carve_validation(values.astype(object), obs, cfg)


def _check_tissues(obs: pd.DataFrame, cfg: AgeClockConfig, path: str | os.PathLike[str]) -> tuple[list[str], dict[str, str]]:
    """Tissues kept; the article drops tissues with too few donors per age group, the repository
    protocol refuses a tissue without both age groups."""
    kept, excluded = [], {}
    for tissue, sub in obs.groupby("tissue", observed=True):
        donors = {g: sub.loc[sub["age_group"] == g, "donor"].nunique() for g in (NEGATIVE_CLASS, POSITIVE_CLASS)}
        if min(donors.values()) == 0 and cfg.min_donors_per_group <= 1:
            missing = NEGATIVE_CLASS if donors[NEGATIVE_CLASS] == 0 else POSITIVE_CLASS
            raise InputError(path, f"tissue '{tissue}'", "cells of both age groups (mid 20-59 and old 60-100) in every tissue", f"no {missing}-age cells")
        if min(donors.values()) < cfg.min_donors_per_group:
            excluded[str(tissue)] = f"{donors[NEGATIVE_CLASS]} mid / {donors[POSITIVE_CLASS]} old donors (< {cfg.min_donors_per_group})"
        else:
            kept.append(str(tissue))
    if not kept:
        raise InputError(path, "obs tissues", f"a tissue with at least {cfg.min_donors_per_group} donors per age group", f"none ({excluded})")
    return kept, excluded


def prepare(
    input_h5ad: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    out_h5ad: str | os.PathLike[str],
    cfg: AgeClockConfig,
    columns: InputColumns = InputColumns(),
    *,
    gene_table: str | os.PathLike[str] | None = None,
    tissues: Sequence[str] | None = None,
) -> Path:
    """Validate, label, split, filter, select, bin; write the prepared h5ad atomically."""
    path = Path(input_h5ad)
    obs_cols = [columns.age, columns.tissue, columns.donor] + [c for c in (columns.cell_id, columns.split) if c]
    adata = read_h5ad_checked(path, obs=obs_cols, var=[columns.gene] if columns.gene else [])
    require_counts(adata, path, layer=columns.layer)
    vocab = read_vocab_json(Path(checkpoint) / "vocab.json")
    genes = var_values(adata, columns.gene)
    dup = pd.Index(genes).duplicated()
    if dup.any():
        raise InputError(path, f"var['{columns.gene or 'index'}']", "unique gene symbols", f"{int(dup.sum())} duplicates such as {genes[dup][0]}")
    # Ensembl ids or foreign symbols stop here, before anything is computed.
    map_genes_to_vocab(genes, vocab, min_fraction=cfg.min_vocab_fraction, source=path, field=f"var['{columns.gene or 'index'}'] gene symbols")

    obs = pd.DataFrame(index=adata.obs_names.astype(str))
    obs["cell_id"] = adata.obs[columns.cell_id].astype(str).to_numpy() if columns.cell_id else obs.index.to_numpy()
    obs["tissue"] = adata.obs[columns.tissue].astype(str).to_numpy()
    obs["donor"] = adata.obs[columns.donor].astype(str).to_numpy()
    obs["age_group"] = age_groups(adata.obs[columns.age].reset_index(drop=True), path, columns.age).to_numpy()
    age_years = pd.to_numeric(adata.obs[columns.age], errors="coerce")
    if age_years.notna().all():
        obs["age"] = age_years.to_numpy(dtype=float)
    info: dict[str, Any] = {"input": str(path), "checkpoint": str(checkpoint), "positive_class": POSITIVE_CLASS, "config": cfg.as_dict()}
    info["cells_outside_task"] = int(obs["age_group"].isna().sum())
    cell_keep = obs["age_group"].notna().to_numpy()
    if tissues:
        unknown = sorted(set(tissues) - set(obs["tissue"]))
        if unknown:
            raise InputError(path, f"obs['{columns.tissue}']", f"the requested tissues {', '.join(tissues)}", f"no cells of {unknown[0]}")
        cell_keep &= obs["tissue"].isin(list(tissues)).to_numpy()
    obs = obs[cell_keep].copy()
    if obs.empty:
        raise InputError(path, f"obs['{columns.age}']", "cells aged 20-59 (mid) or 60-100 (old)", "none")
    mixed = obs.groupby(["tissue", "donor"], observed=True)["age_group"].nunique()
    if (mixed > 1).any():
        t, d = mixed[mixed > 1].index[0]
        raise InputError(path, f"obs['{columns.age}']", "one age group per donor", f"donor '{d}' ({t}) has mid and old cells")
    kept_tissues, excluded = _check_tissues(obs, cfg, path)
    info["excluded_tissues"] = excluded
    obs = obs[obs["tissue"].isin(kept_tissues)].copy()
    if columns.split:
        raw = adata.obs.loc[obs.index, columns.split].to_numpy()
        obs["split"] = given_split(obs.assign(**{columns.split: raw}), columns.split, cfg, path).to_numpy()
    else:
        obs["split"] = donor_split(obs, cfg, path).to_numpy()
    for side in ("train", "test"):
        groups = set(obs.loc[obs["split"] == side, "age_group"])
        if groups != {NEGATIVE_CLASS, POSITIVE_CLASS}:
            raise InputError(path, "split", f"both age groups in the {side} cells", f"only {sorted(groups)}")
    obs["label"] = (obs["age_group"] == POSITIVE_CLASS).astype(np.int64)

    counts = adata[obs.index].layers[columns.layer] if columns.layer else adata[obs.index].X
    counts = sp.csr_matrix(counts, dtype=np.float32)
    # Log-normalise on all genes of the cell (the paper's first step), before any gene is dropped.
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)
    log_norm = sp.diags(scale.astype(np.float32)) @ counts
    log_norm.data = np.log1p(log_norm.data)

    detected = np.asarray((counts > 0).mean(axis=0)).ravel()
    rare = detected < cfg.min_cell_fraction
    qc = qc_gene_mask(genes)
    in_vocab = np.array([g in vocab for g in genes])
    candidates = [g for g, r, q, v in zip(genes, rare, qc, in_vocab) if not r and not q and v]
    selected = select_genes(candidates, cfg, Path(gene_table) if gene_table else None)
    info["genes"] = {
        "input": int(len(genes)),
        "dropped_rare": int(rare.sum()),
        "dropped_mito_ribo_haemo": [str(g) for g in genes[qc & ~rare]],
        "not_in_vocabulary": [str(g) for g in genes[~in_vocab]],
        "candidates": len(candidates),
        "selected": len(selected),
        "gene_table": str(gene_table or default_gene_table(cfg) or "random"),
    }
    if len(selected) < 2:
        raise InputError(gene_table or default_gene_table(cfg) or path, "genes", "at least 2 of the protocol's genes in the data and vocabulary", str(len(selected)))
    if len(selected) + 1 > cfg.max_seq_len:
        log.warning("%d genes + <cls> exceed max_seq_len %d: scGPT would drop genes at random", len(selected), cfg.max_seq_len)
    col = pd.Index(genes).get_indexer(selected)
    counts_sel = counts[:, col].tocsr()
    log.info("binning %d cells x %d genes into %d bins", counts_sel.shape[0], counts_sel.shape[1], cfg.n_bins)
    binned = bin_rows(counts_sel, cfg.n_bins, seed=cfg.binning_seed)
    var = pd.DataFrame({"vocab_id": np.array([vocab[g] for g in selected], dtype=np.int64)}, index=pd.Index(selected))
    for name in ("tissue", "donor", "age_group", "split"):
        obs[name] = obs[name].astype("category")  # what anndata would convert them to on write, silently
    out = ad.AnnData(X=counts_sel, obs=obs, var=var, layers={"log_norm": log_norm[:, col].tocsr(), "binned": binned})
    out.uns[UNS_KEY] = json.dumps(info, sort_keys=True)
    n_split = obs["split"].value_counts().to_dict()
    log.info("prepared %s protocol: %d cells (%s), %d genes, tissues %s", cfg.protocol, len(obs), n_split, len(selected), kept_tissues)
    with atomic_path(out_h5ad) as tmp:
        out.write_h5ad(tmp)
    return Path(out_h5ad)


def read_prepared(path: str | os.PathLike[str]) -> tuple[ad.AnnData, dict[str, Any], AgeClockConfig]:
    """A prepared h5ad, its info and the config it was prepared with."""
    adata = read_h5ad_checked(path, obs=["label", "split", "tissue", "donor", "age_group"], var=["vocab_id"])
    if UNS_KEY not in adata.uns or "binned" not in adata.layers:
        raise InputError(path, f"uns['{UNS_KEY}']", "a file written by `age_clock.py prepare`")
    info = json.loads(str(adata.uns[UNS_KEY]))
    return adata, info, config_from_dict(info["config"])
