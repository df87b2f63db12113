"""vcc on real public data: 10x PBMC cells shipped inside the scanpy wheel, scored through `vcc.py score`.

Data: `scanpy/datasets/10x_pbmc68k_reduced.h5ad` (installed with scanpy, pinned in
requirements/lock-cpu.txt): 700 real PBMCs from 10x Genomics' 68k PBMC data set; `.raw` holds the
log-normalised expression of 765 real genes with the odd names real data has (HLA-DRB1, MT-ND3,
RP11-782C8.1, TMBIM4-1, EPB41L4A-AS1). It has no perturbations, so the test plants labels: each
cell's annotated type (`bulk_labels`: names with '+', '/', '-' and spaces, e.g.
"CD4+/CD45RA+/CD25- Naive T") becomes its "target gene", and "Dendritic" plays the control. Each
type's cells are split in two seeded halves: one half is the real file, the other the prediction,
so the prediction is independent real cells of the same populations (planted truth: every type is
identified, PDS 1 by hand); a second prediction with the type labels rotated must lose that.

Checked against cell-eval run directly on the same files (MetricsEvaluator, profile vcc) and a
hand computation (numpy) of the project evaluator's PDS and MAE. Runs in about 20 s.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from txrepro.metrics.table import read_metrics

COL = "target_gene"
CONTROL = "Dendritic"


@pytest.fixture(scope="module")
def pbmc(tmp_path_factory):
    import scanpy as sc

    d = tmp_path_factory.mktemp("vcc_pbmc")
    raw = sc.datasets.pbmc68k_reduced().raw.to_adata()  # log-normalised, 765 real genes
    labels = raw.obs["bulk_labels"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    half = np.zeros(raw.n_obs, dtype=bool)
    for lab in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == lab))
        half[idx[: idx.size // 2]] = True
    files = {}
    for name, mask in (("real", half), ("pred", ~half)):
        a = ad.AnnData(raw.X[mask].copy(), obs=pd.DataFrame({COL: pd.Categorical(labels[mask])}, index=raw.obs_names[mask]),
                       var=pd.DataFrame(index=raw.var_names.copy()))
        a.write_h5ad(d / f"{name}.h5ad")
        files[name] = a
    types = sorted(set(labels) - {CONTROL})
    rotated = files["pred"].copy()
    rotation = dict(zip(types, types[1:] + types[:1], strict=True))
    rotated.obs[COL] = pd.Categorical([rotation.get(x, x) for x in rotated.obs[COL].astype(str)])
    rotated.write_h5ad(d / "rotated.h5ad")
    files["rotated"] = rotated
    return d, files, types


def _hand(real: ad.AnnData, pred: ad.AnnData) -> tuple[float, float]:
    def means(a):
        x = a.X.toarray()
        lab = a.obs[COL].astype(str).to_numpy()
        return {g: x[lab == g].mean(axis=0, dtype=np.float64) for g in set(lab)}

    r, p = means(real), means(pred)
    perts = sorted(set(r) - {CONTROL})
    dr = {g: r[g] - r[CONTROL] for g in perts}
    dp = {g: p[g] - p[CONTROL] for g in perts}
    pds = []
    for g in perts:
        sims = [dp[g] @ dr[h] / (np.linalg.norm(dp[g]) * np.linalg.norm(dr[h])) for h in perts]
        pds.append(1 - sum(s > sims[perts.index(g)] for s in sims) / len(perts))
    # MAE over the top 2,000 genes by mean |real effect|: all 765 genes here
    return float(np.mean(pds)), float(np.mean([np.abs(p[g] - r[g]).mean() for g in perts]))


def test_real_pbmc_cells_scored_like_cell_eval(pbmc, tmp_path):
    from cell_eval import MetricsEvaluator

    d, files, types = pbmc
    assert {"HLA-DRB1", "MT-ND3", "RP11-782C8.1", "TMBIM4-1"} <= set(files["real"].var_names)
    assert "CD4+/CD45RA+/CD25- Naive T" in types
    out = tmp_path / "score"
    # one run scores both: the rotated labels go in as the baseline (rows of model `baseline`)
    run_cli(["vcc.py", "score", "--real", str(d / "real.h5ad"), "--pred", str(d / "pred.h5ad"), "--baseline", str(d / "rotated.h5ad"),
             "--control", CONTROL, "--model", "pbmc_halves", "--dataset", "pbmc68k_reduced", "--outdir", str(out)], check=True)
    m = read_metrics(out / "metrics.tsv").set_index(["model", "metric"])["value"]
    for pred, model in (("pred", "pbmc_halves"), ("rotated", "baseline")):
        ev = MetricsEvaluator(adata_pred=files[pred].copy(), adata_real=files["real"].copy(), control_pert=CONTROL, pert_col=COL,
                              num_threads=1, outdir=str(tmp_path / f"ce_{pred}"))
        ce = ev.compute(profile="vcc", write_csv=False)[0].to_pandas()
        for metric in ("overlap_at_N", "discrimination_score_l1", "mae"):
            assert m[(model, f"cell_eval_{metric}")] == pytest.approx(ce[metric].mean(), rel=1e-5, abs=1e-7), (pred, metric)
        pds, mae = _hand(files["real"], files[pred])
        assert m[(model, "PDS")] == pytest.approx(pds, abs=1e-12), pred
        assert m[(model, "MAE")] == pytest.approx(mae, rel=1e-5), pred
        per = pd.read_csv(out / f"{model}_per_perturbation.tsv", sep="\t")
        assert sorted(per["perturbation"]) == types  # odd labels pass through unchanged
    # planted truth: independent cells of the same types identify (nearly) every type, rotated labels do not;
    # the two smallest T-cell subtypes (4 and 9 cells per half) are the ones real noise can swap
    assert m[("pbmc_halves", "PDS")] > 0.9 and m[("baseline", "PDS")] < 0.7
    assert m[("pbmc_halves", "cell_eval_discrimination_score_l1")] > m[("baseline", "cell_eval_discrimination_score_l1")]
    assert m[("pbmc_halves", "DES")] > m[("baseline", "DES")]
    assert m[("pbmc_halves", "overall_score")] > 0  # scaled against the rotated labels
