"""Verdicts: reproduced (within tolerance), better, worse, differs, no published value, not computed."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from txrepro.metrics.table import KEY_COLUMNS, NOT_COMPUTED_PREFIX

VERDICTS = ("reproduced", "better", "worse", "differs", "no published value", "not computed")

SUMMARY_COLUMNS = (
    "study", "dataset", "model", "split", "metric", "reproduced", "published", "difference", "tolerance",
    "direction", "verdict", "data", "n", "source", "notes",
)


def verdict_for(reproduced: float, published: float, tolerance: float, direction: str) -> str:
    """Within tolerance is `reproduced`; outside it the direction says better or worse.

    `differs` is for numbers that have no better side (an edge count): outside tolerance they
    only differ.
    """
    diff = reproduced - published
    if abs(diff) <= tolerance + 1e-12:
        return "reproduced"
    if direction == "none":
        return "differs"
    if direction == "higher":
        return "better" if diff > 0 else "worse"
    return "better" if diff < 0 else "worse"


def compare(
    reproduced: pd.DataFrame,
    published: pd.DataFrame,
    *,
    data_sources: Mapping[str, str] | None = None,
    study_status: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Join reproduced and published numbers on study/dataset/model/split/metric.

    Every published row appears: without a reproduced number it is `not computed`, with the
    study's reason (`study_status`) or the row's own `not computed:` note. Reproduced rows with
    no published counterpart are kept as `no published value`.
    """
    data_sources = data_sources or {}
    study_status = study_status or {}
    key = list(KEY_COLUMNS)
    rep = reproduced.rename(columns={"value": "reproduced", "notes": "rep_notes"})
    pub = published.rename(columns={"notes": "pub_notes"})
    merged = pub.merge(rep, on=key, how="outer", indicator="source_side")

    ran = reproduced[reproduced["value"].notna()] if not reproduced.empty else reproduced
    ran_datasets = ran.groupby("study")["dataset"].agg(lambda d: sorted(set(d))).to_dict() if not ran.empty else {}
    ran_models = ran.groupby(["study", "dataset"])["model"].agg(set).to_dict() if not ran.empty else {}

    def missing_reason(study: str, dataset: str, model: str) -> str:
        """Why a published number has no reproduced value, as precisely as the run allows."""
        if study in study_status:
            return study_status[study]
        if study in ran_datasets and dataset not in ran_datasets[study]:
            return f"dataset {dataset} not in this run (this run: {', '.join(ran_datasets[study])})"
        if (study, dataset) in ran_models and model not in ran_models[(study, dataset)]:
            return f"model {model} not run on {dataset}"
        return "missing from the run"

    rows = []
    for r in merged.itertuples(index=False):
        rec = {c: getattr(r, c) for c in key}
        has_pub = r.source_side in ("both", "left_only")
        has_rep = r.source_side in ("both", "right_only")
        rep_value = float(r.reproduced) if has_rep and pd.notna(r.reproduced) else np.nan
        rep_notes = str(r.rep_notes) if has_rep and isinstance(r.rep_notes, str) else ""
        rec.update(
            reproduced=rep_value,
            published=float(r.published) if has_pub else np.nan,
            tolerance=float(r.tolerance) if has_pub else np.nan,
            direction=r.direction if has_pub else "",
            source=r.source if has_pub else "",
            n=r.n if has_rep else pd.NA,
            data=data_sources.get(r.study, "not run"),
        )
        # The run's notes first, then the published table's, labelled so a reader can tell them apart.
        pub_notes = f"published: {r.pub_notes}" if has_pub and isinstance(r.pub_notes, str) and r.pub_notes else ""
        notes = [n for n in (rep_notes, pub_notes) if n]
        if np.isnan(rep_value):
            reason = rep_notes[len(NOT_COMPUTED_PREFIX):] if rep_notes.startswith(NOT_COMPUTED_PREFIX) else missing_reason(r.study, r.dataset, r.model)
            rec["verdict"] = "not computed"
            rec["difference"] = np.nan
            notes = [f"{NOT_COMPUTED_PREFIX}{reason}"] + [n for n in notes if not n.startswith(NOT_COMPUTED_PREFIX)]
        elif not has_pub:
            rec["verdict"] = "no published value"
            rec["difference"] = np.nan
        else:
            rec["verdict"] = verdict_for(rep_value, rec["published"], rec["tolerance"], rec["direction"])
            rec["difference"] = rep_value - rec["published"]
        rec["notes"] = "; ".join(notes)
        rows.append(rec)

    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    order = {s: i for i, s in enumerate(["age_clock", "gpo_vae", "vcc", "sage_net", "drugseq"])}
    out["_o"] = out["study"].map(order)
    out["_p"] = out["published"].isna()  # published rows first within a study
    out = out.sort_values(["_o", "_p", "dataset", "model", "split", "metric"], kind="stable").drop(columns=["_o", "_p"])
    return out.reset_index(drop=True)
