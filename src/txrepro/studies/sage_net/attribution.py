"""Attributions of p-SAGE-net's deviation head around one variant of one gene.

As the paper's Figs S4-S6 (SAGEnet/attributions.py `save_gene_ism`): the variant is inserted
into both haplotypes of the reference window (the original's VariantDataset), then
* in-silico mutagenesis (ISM) of every position within `half_width` bp of the variant, all four
  bases, scored as f(x) - mean_b f(x with base b at that position) (mean-centred, as the original's
  `mean_center_attributions`), and
* gradient x input over the whole window (mean-centred gradient at the observed base).
Two ISM scores: `ism_personal` mutates the personal sequence only (both haplotypes; the original
mutated the maternal channels), `ism` ("joint") puts the same base into the reference and the
personal input, which is the attribution of the predicted deviation itself (see `ism`). The
original's ISM function cannot run as published (undefined names, a p-SAGE-net branch that never
matches the lower-cased model type, the minus-strand index off by one): docs/studies/sage_net.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_dir, write_json
from txrepro.runtime import get_logger, resolve_device
from txrepro.studies.sage_net.data import Prepared
from txrepro.studies.sage_net.genome import BASES
from txrepro.studies.sage_net.model import PSageNet, one_hot
from txrepro.studies.sage_net.predixcan import PrediXcanResult
from txrepro.studies.sage_net.sequences import build_haplotypes, reference_sequence
from txrepro.studies.sage_net.train import load_model, selected_genes
from txrepro.studies.sage_net.variants import GeneVariants

log = get_logger(__name__)


@dataclass
class AttributionParams:
    gene: str | None = None  # default: the top PrediXcan gene on the training chromosomes
    variant: str | None = None  # 1-based position, or pos:ref:alt; default: the gene's largest |PrediXcan coef|
    half_width: int = 100
    device: str = "auto"
    top_genes: int = 1000
    batch_size: int = 64


def choose_target(main: Prepared, predixcan: PrediXcanResult, params: AttributionParams) -> tuple[str, int]:
    """(gene, row of the variant in the gene's variant matrix)."""
    gene = params.gene
    if gene is None:
        train = selected_genes(main, predixcan, params.top_genes)["train"]
        if not train:
            raise InputError(predixcan.path, "ranked genes", "a top-ranked gene on the training chromosomes to attribute", "none")
        gene = train[0]
    main.gene_row(gene)
    gv = main.variants(gene)
    usable = np.flatnonzero(gv.insertable() & gv.in_window)
    if usable.size == 0:
        raise InputError(main.path, f"variants of gene {gene!r}", "at least one insertable variant in the window", "none")
    if params.variant is None:
        w = predixcan.weights[predixcan.weights["gene_id"] == gene]
        if w.empty:
            return gene, int(usable[0])
        best = w.iloc[int(np.argmax(np.abs(w["coef"].to_numpy())))]
        params_variant = f"{int(best.pos)}:{best.ref}:{best.alt}"
    else:
        params_variant = params.variant
    parts = params_variant.split(":")
    try:
        pos1 = int(parts[-3] if len(parts) >= 3 else parts[-1])
    except ValueError:
        raise InputError("--variant", "variant", "a 1-based position or pos:ref:alt (optionally contig:pos:ref:alt)", repr(params_variant)) from None
    cand = [i for i in usable if gv.pos[i] + 1 == pos1 and (len(parts) < 3 or (gv.ref[i] == parts[-2].upper() and gv.alt[i] == parts[-1].upper()))]
    if not cand:
        raise InputError("--variant", f"variant {params_variant!r}", f"an insertable variant in the window of {gene}", "not found")
    return gene, int(cand[0])


def _single_variant(gv: GeneVariants, row: int) -> GeneVariants:
    return GeneVariants(
        pos=gv.pos[[row]], ref=gv.ref[[row]], alt=gv.alt[[row]], flags=np.zeros(1, np.uint8), in_window=np.ones(1, bool),
        haps=np.ones((1, 1, 2), np.uint8),
    )


@torch.no_grad()
def ism(model: PSageNet, ref: np.ndarray, personal: np.ndarray, positions: np.ndarray, device: str, batch_size: int, joint: bool) -> tuple[float, np.ndarray]:
    """(f(x), outputs [positions x 4]) of the deviation head.

    `joint=False`: mutate the personal sequence (both haplotypes), as the original mutated the
    personal input. `joint=True`: put the same base into the reference and the personal sequence,
    which asks what the predicted *deviation* depends on: context shared by both inputs largely
    cancels in fc0(reference) - fc0(personal), while at the variant itself every base makes the two
    identical, so the score there is the variant's own effect.
    """
    def run(r: np.ndarray, p: np.ndarray) -> np.ndarray:
        rt = one_hot(torch.from_numpy(np.ascontiguousarray(r))).to(device)
        pt = one_hot(torch.from_numpy(np.ascontiguousarray(p))).to(device)
        return model(rt, pt, pt)[:, 1].double().cpu().numpy()

    base = float(run(ref[None], personal[None])[0])
    # a "mutation" that changes neither input is f(x) itself: skip it
    jobs = [(p, b) for p in positions for b in range(4) if not (personal[p] == b and (not joint or ref[p] == b))]
    out = np.full(len(positions) * 4, base)
    where = {(p, b): i * 4 + b for i, p in enumerate(positions) for b in range(4)}
    for s in range(0, len(jobs), batch_size):
        chunk = jobs[s : s + batch_size]
        pers = np.repeat(personal[None], len(chunk), axis=0)
        refs = np.repeat(ref[None], len(chunk), axis=0)
        for k, (p, b) in enumerate(chunk):
            pers[k, p] = b
            if joint:
                refs[k, p] = b
        out[[where[j] for j in chunk]] = run(refs, pers)
    return base, out.reshape(len(positions), 4)


def gradient_x_input(model: PSageNet, ref: torch.Tensor, personal: np.ndarray, device: str) -> np.ndarray:
    x = one_hot(torch.from_numpy(personal[None].copy())).to(device)
    mat = x.clone().requires_grad_(True)
    pat = x.clone().requires_grad_(True)
    model(ref, mat, pat)[0, 1].backward()
    g = (mat.grad + pat.grad)[0].double().cpu().numpy()  # [4, L]
    g = g - g.mean(axis=0, keepdims=True)
    return (g * x[0].double().cpu().numpy()).sum(axis=0)


def run_attribution(main: Prepared, predixcan: PrediXcanResult, psagenet: Path, outdir: Path, params: AttributionParams) -> dict:
    device = resolve_device(params.device)
    model, _ = load_model(psagenet, "psagenet", device)
    gene, row = choose_target(main, predixcan, params)
    gw = main.window(gene)
    gv = main.variants(gene)
    codes = main.region_codes(gw)
    ref_codes = reference_sequence(codes, gw)
    personal = build_haplotypes(codes, gw, _single_variant(gv, row), np.array([0]))[0, 0]
    v_idx = gw.index_in_window(int(gv.pos[row]))
    tss_idx = gw.index_in_window(gw.tss)
    lo, hi = max(0, v_idx - params.half_width), min(gw.length, v_idx + params.half_width + 1)
    positions = np.arange(lo, hi)
    ref_t = one_hot(torch.from_numpy(ref_codes[None].copy())).to(device)
    attrs, peaks = {}, {}
    for mode, joint in (("ism", True), ("ism_personal", False)):
        f0, scores = ism(model, ref_codes, personal, positions, device, params.batch_size, joint)
        attrs[mode] = f0 - scores.mean(axis=1)  # mean-centred at the observed base
        peaks[mode] = int(positions[int(np.argmax(np.abs(attrs[mode])))])
    gxi = gradient_x_input(model, ref_t, personal, device)
    peak_g = int(np.argmax(np.abs(gxi)))
    label = f"{gw.fasta_contig}:{int(gv.pos[row]) + 1}:{gv.ref[row]}:{gv.alt[row]}"
    summary = {
        "gene": gene, "strand": gw.strand, "variant": label, "variant_index": int(v_idx), "tss_index": int(tss_idx),
        "ism_window": [int(lo), int(hi)], "ism_peak_index": peaks["ism"], "ism_peak_distance_bp": abs(peaks["ism"] - v_idx),
        "ism_personal_peak_index": peaks["ism_personal"], "ism_personal_peak_distance_bp": abs(peaks["ism_personal"] - v_idx),
        "gradient_x_input_peak_index": peak_g, "gradient_x_input_peak_distance_bp": abs(peak_g - v_idx),
        "deviation_with_variant": f0, "params": asdict(params),
    }
    table = pd.DataFrame({
        "index": np.arange(gw.length), "offset_from_tss_bp": np.arange(gw.length) - tss_idx,
        "personal_base": [BASES[c] for c in personal], "reference_base": [BASES[c] for c in ref_codes], "gradient_x_input": gxi,
    })
    for mode, values in attrs.items():
        table[mode] = np.nan
        table.loc[positions, mode] = values
    from txrepro.studies.sage_net.figures import attribution_figure

    with atomic_dir(outdir) as tmp:
        table.to_csv(tmp / "attribution.tsv", sep="\t", index=False)
        write_json(tmp / "summary.json", summary)
        attribution_figure(table, summary, tmp / "sage_net_attribution.png")
    log.info("attribution for %s around %s: ISM peak %d bp from the variant", gene, label, summary["ism_peak_distance_bp"])
    return summary
