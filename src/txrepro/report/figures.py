"""Figure conventions shared by every study: PNG, 150 dpi, titled, labelled axes."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: containers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from txrepro.io.atomic import atomic_path  # noqa: E402

DPI = 150
VERDICT_COLOURS = {
    "reproduced": "#1b9e77",
    "better": "#7570b3",
    "worse": "#d95f02",
    "differs": "#e6ab02",
    "no published value": "#999999",
    "not computed": "#cccccc",
}


def check_figure(fig: plt.Figure) -> None:
    """Refuse figures a reviewer cannot read: no title, or a data axis without labels."""
    has_suptitle = fig._suptitle is not None and fig._suptitle.get_text().strip()
    axes = [ax for ax in fig.get_axes() if ax.get_visible() and ax.has_data()]
    if not axes:
        raise ValueError("figure has no axes with data")
    for ax in axes:
        if not (has_suptitle or ax.get_title().strip()):
            raise ValueError("figure needs a title (suptitle or axes title)")
        if getattr(ax, "name", "") == "rectilinear" and not ax.get_label().startswith("<colorbar>"):
            if not ax.get_xlabel().strip() and not ax.get_ylabel().strip():
                raise ValueError(f"axes '{ax.get_title()}' needs axis labels")


def save_png(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    """Check, then write atomically at 150 dpi and close the figure."""
    path = Path(path)
    if path.suffix != ".png":
        raise ValueError(f"figures are PNG files, got {path.name}")
    check_figure(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


FIXTURE_MARK = " [fixture]"


def overview_labels(rows: pd.DataFrame) -> pd.Series:
    """'study · dataset · model · metric', marked when the row ran on the synthetic fixture."""
    label = rows["study"] + " · " + rows["dataset"] + " · " + rows["model"] + " · " + rows["metric"]
    if "data" in rows:
        label = label.where(rows["data"] != "fixture", label + FIXTURE_MARK)
    return label


def reproduction_overview(summary: pd.DataFrame, path: str | os.PathLike[str]) -> Path | None:
    """One dot per published number: (reproduced - published) in units of its tolerance.

    Scale-free, so accuracies, overall scores and edge counts share one axis; the shaded band is
    'reproduced'. Returns None when no published number was computed.
    """
    rows = summary[summary["published"].notna() & summary["reproduced"].notna()].copy()
    if rows.empty:
        return None
    tol = rows["tolerance"].where(rows["tolerance"] > 0, np.nan)
    scale = tol.fillna(rows["published"].abs().where(rows["published"] != 0, 1.0) * 0.05)
    rows["z"] = ((rows["reproduced"] - rows["published"]) / scale).clip(-6, 6)
    rows["label"] = overview_labels(rows)
    fixture = rows["label"].str.endswith(FIXTURE_MARK).to_numpy()
    height = max(3.0, 0.22 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height))
    ax.axvspan(-1, 1, color="#1b9e77", alpha=0.12, label="within tolerance")
    ax.axvline(0, color="black", lw=0.8)
    y = np.arange(len(rows))[::-1]
    for verdict, colour in VERDICT_COLOURS.items():
        m = (rows["verdict"] == verdict).to_numpy()
        if m.any():
            ax.scatter(rows["z"].to_numpy()[m], y[m], color=colour, label=verdict, zorder=3, s=28)
    ax.set_yticks(y, rows["label"], fontsize=7)
    ax.set_xlim(-6.5, 6.5)
    ax.set_xlabel("(reproduced − published) / tolerance  [tolerance units, clipped at ±6]")
    ax.set_ylabel("published number")
    title = "Reproduced versus published, every published number"
    if fixture.any():  # the summary says it too; the figure travels alone in slides and reviews
        title += "\n[fixture]: synthetic inputs with planted truth, a test of the pipeline, not of the paper"
    ax.set_title(title, fontsize=10 if fixture.any() else None)
    ax.legend(loc="lower right", fontsize=7, frameon=True)
    return save_png(fig, path)
