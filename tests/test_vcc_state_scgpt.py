"""STATE (arc-state) and scGPT (TransformerGenerator) on the vcc fixture: training, prediction, checkpoints.

The e2e test (test_vcc_e2e.py) trains both through `reproduce` and scores them; here the pieces:
determinism, the HVG -> all-gene lifting, a flash-attn-named checkpoint loaded tensor for tensor,
vocabulary coverage, and the one-line errors.
"""

from __future__ import annotations

import json
from dataclasses import replace

import anndata as ad
import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from txrepro.errors import InputError
from txrepro.fixtures.vcc import write_fixture
from txrepro.metrics.table import metrics_frame
from txrepro.models.scgpt_checkpoint import ScGPTArchitecture, build_transformer_model, save_checkpoint_dir
from txrepro.models.torchtext_vocab import import_scgpt
from txrepro.studies.vcc.data import Prepared
from txrepro.studies.vcc.models import predict, sampled_controls
from txrepro.studies.vcc.params import SCGPT_PRESETS, STATE_PRESETS, DataParams, ModelParams, VccRunParams
from txrepro.studies.vcc.preprocess import prepare
from txrepro.studies.vcc.scgpt_perturb import finetune_scgpt
from txrepro.studies.vcc.state import hvg_columns, train_state
from txrepro.studies.vcc.summarise import missing_model_rows, scgpt_not_run

pytestmark = pytest.mark.slow

N_HVG = 40  # of 60 genes: 20 genes outside the HVGs exercise the lifting to all genes
NOT_IN_VOCAB = ("N01", "N02", "N03", "P1B4")
TINY_STATE = replace(STATE_PRESETS["tiny"], max_steps=12, more_steps_step=6, val_freq=6, log_every=2)
TINY_SCGPT = replace(SCGPT_PRESETS["tiny"], epochs=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("vcc_models_ml")
    fx = write_fixture(d / "fx", seed=0)
    prepare(fx["input"], d / "prep", dp=DataParams(n_hvg=N_HVG), test_genes_file=fx["test_genes"])
    return d, fx


@pytest.fixture(scope="module")
def checkpoint(world):
    """A tiny pretrained-style scGPT folder: TransformerModel weights saved under flash-attn names."""
    d, _ = world
    scgpt = import_scgpt()
    genes = [g for g in Prepared(d / "prep").var_names if g not in NOT_IN_VOCAB] + ["GENE_NOT_IN_DATA"]
    vocab = scgpt.tokenizer.GeneVocab(genes, specials=["<pad>", "<cls>", "<eoc>"])
    arch = ScGPTArchitecture(d_model=32, nhead=2, d_hid=32, nlayers=2)
    torch.manual_seed(0)
    model = build_transformer_model(vocab, arch)
    return save_checkpoint_dir(d / "ckpt", model.state_dict(), arch.to_args(), vocab, fused_attention_names=True)


def test_state_is_deterministic_and_lifts_hvg_predictions_to_all_genes(world):
    d, fx = world
    preds = []
    for run in ("a", "b"):
        out = train_state(d / "prep", d / f"state_{run}", params=TINY_STATE, features=fx["features"], device="cpu")
        info = json.loads((out / "train_info.json").read_text())
        assert info["hvg"] == N_HVG and [s["steps"] for s in info["stages"]] == [6, 12]
        h5, _ = predict(d / "prep", "state", d / f"pred_{run}", features=fx["features"], trained=out, device="cpu")
        preds.append(ad.read_h5ad(h5))
    a, b = preds
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())  # same seed, same cells, bit for bit
    prepared = Prepared(d / "prep")
    hvg = hvg_columns(prepared)
    other = np.setdiff1d(np.arange(prepared.var_names.size), hvg)
    assert hvg.size == N_HVG and other.size == 20
    ctrl = prepared.control_rows().X.toarray()
    labels = a.obs[prepared.pert_col].astype(str).to_numpy()
    x = a.X.toarray()
    for i, pert in enumerate(prepared.split["test"]):
        rows = x[labels == pert]
        basal = ctrl[sampled_controls_for(prepared, i, rows.shape[0])]
        np.testing.assert_array_equal(rows[:, other], np.maximum(basal[:, other], 0))  # effect 0 outside the HVGs
        assert not np.allclose(rows[:, hvg], basal[:, hvg])  # STATE changed the HVGs


def sampled_controls_for(prepared: Prepared, i: int, n: int) -> np.ndarray:
    from txrepro.studies.vcc.models import PredictionContext

    ctx = PredictionContext(prepared, ModelParams())
    return sampled_controls(ctx, i, n, prepared.control_rows().shape[0])


def test_scgpt_zero_shot_and_finetuned_from_a_fused_checkpoint(world, checkpoint):
    d, _ = world
    prepared = Prepared(d / "prep")
    h5z, jz = predict(d / "prep", "scgpt_zero_shot", d / "pz", device="cpu", scgpt=TINY_SCGPT, scgpt_checkpoint=checkpoint)
    note = json.loads(jz.read_text())["features"]
    # every pretrained encoder/transformer tensor loaded, the 4 attention in_proj tensors via their flash-attn names
    assert "4 renamed from flash-attn names" in note and "RANDOM" not in note
    out = finetune_scgpt(d / "prep", d / "ft", params=TINY_SCGPT, checkpoint=checkpoint, device="cpu")
    info = json.loads((out / "train_info.json").read_text())
    hist = np.loadtxt(out / "training_log.csv", delimiter=",", skiprows=1)
    assert hist[-1, 1] < hist[0, 1] < info["initial_train_loss"]  # fine-tuning lowers the training loss
    candidates = set(prepared.var_names[hvg_columns(prepared)]) | {g for s in prepared.split.values() for g in s}
    expected_unmapped = sorted(candidates & set(NOT_IN_VOCAB))
    assert info["genes"]["unmapped"] == len(expected_unmapped) > 0
    assert sorted(info["genes"]["unmapped_examples"]) == expected_unmapped
    h5f, _ = predict(d / "prep", "scgpt_finetuned", d / "pf", device="cpu", trained=out)
    z, f = ad.read_h5ad(h5z), ad.read_h5ad(h5f)
    assert z.shape == f.shape and np.isfinite(f.X.data).all()
    # fine-tuning brings predicted test pseudobulks closer to the real ones
    real = prepared.rows_of(prepared.split["test"])
    lab = lambda a: a.obs[prepared.pert_col].astype(str).to_numpy()  # noqa: E731
    err = {name: np.mean([np.abs(np.asarray(a.X[lab(a) == p].mean(0)) - np.asarray(real.X[lab(real) == p].mean(0))).mean()
                          for p in prepared.split["test"]]) for name, a in (("zero", z), ("fine", f))}
    assert err["fine"] < err["zero"]


def test_scgpt_vocabulary_floor_and_missing_checkpoint_fail_in_one_line(world, checkpoint):
    d, _ = world
    with pytest.raises(InputError, match=r"vocab.json.*at least 99% of the genes.*unmapped e.g."):
        predict(d / "prep", "scgpt_zero_shot", d / "px", device="cpu", scgpt=replace(TINY_SCGPT, min_gene_fraction=0.99),
                scgpt_checkpoint=checkpoint)
    with pytest.raises(InputError, match="no pretrained scGPT checkpoint"):
        predict(d / "prep", "scgpt_zero_shot", d / "px", device="cpu", scgpt=TINY_SCGPT)
    res = run_cli(["vcc.py", "predict", "--prepared", str(d / "prep"), "--model", "scgpt_zero_shot", "--outdir", str(d / "px")])
    assert_one_line_error(res, "vcc_scgpt_checkpoint", "vcc_scgpt_allow_random_init")
    assert not (d / "px" / "scgpt_zero_shot_pred.h5ad").exists()


def test_scgpt_rows_without_checkpoint_are_not_computed_with_the_reason():
    reasons = scgpt_not_run({})
    assert set(reasons) == {"scgpt_zero_shot", "scgpt_finetuned"}
    rows = metrics_frame(missing_model_rows(["cell_mean"], None, reasons))
    sc = rows[rows["model"].str.startswith("scgpt")]
    assert len(sc) == 8 and sc["value"].isna().all() and sc["notes"].str.contains("no pretrained scGPT checkpoint").all()
    assert scgpt_not_run({"vcc_scgpt_allow_random_init": "true"}) == {}
    assert scgpt_not_run({"vcc_scgpt_checkpoint": "/some/folder"}) == {}
    # the test profile runs them from random initialisation, the full profile does not
    assert VccRunParams.from_params({}, "test").scgpt_allow_random_init
    assert not VccRunParams.from_params({}, "full").scgpt_allow_random_init
    assert VccRunParams.from_params({"vcc_state_max_steps": "50"}, "test").state.max_steps == 50
    with pytest.raises(InputError, match="vcc_state_config"):
        VccRunParams.from_params({"vcc_state_config": "huge"})


def test_scgpt_checksums_are_recorded_for_vcc_and_checked_by_default():
    """Real runs check the whole-human checkpoint (the same files age_clock uses); the test profile does not."""
    from txrepro.models.scgpt_checkpoint import CHECKPOINT_FILES, manifest_checksums
    from txrepro.studies.vcc.params import VccRunParams

    vcc = manifest_checksums("vcc")
    assert set(vcc) == set(CHECKPOINT_FILES) and vcc == manifest_checksums("age_clock")
    assert VccRunParams.from_params({}, profile="full").scgpt_verify_checksums
    assert not VccRunParams.from_params({}, profile="test").scgpt_verify_checksums
    assert not VccRunParams.from_params({"vcc_scgpt_verify_checksums": "false"}, profile="full").scgpt_verify_checksums


def test_scgpt_generator_inference_is_fused_and_equals_pytorch_attention():
    from txrepro.models.scgpt_inference import FusedAttentionEncoder, torch_attention
    from txrepro.studies.vcc.scgpt_perturb import _build_generator

    scgpt = import_scgpt()
    vocab = scgpt.tokenizer.GeneVocab([f"G{i}" for i in range(12)], specials=["<pad>", "<cls>", "<eoc>"])
    torch.manual_seed(0)
    model = _build_generator(vocab, {"embsize": 32, "nheads": 2, "d_hid": 32, "nlayers": 2}, dropout=0.2).eval()
    assert isinstance(model.transformer_encoder, FusedAttentionEncoder)
    ids = torch.arange(3, 15).repeat(5, 1)
    values = torch.rand(5, 12) * 3
    flags = torch.zeros(5, 12, dtype=torch.long)
    flags[torch.arange(5), torch.arange(5)] = 1
    mask = torch.zeros(5, 12, dtype=torch.bool)  # vcc's call: an all-False padding mask
    kw = dict(src_key_padding_mask=mask, CLS=False, CCE=False, MVC=False, ECS=False)
    with torch.no_grad():
        fused = model(ids, values, flags, **kw)["mlm_output"]
        with torch_attention(model):
            reference = model(ids, values, flags, **kw)["mlm_output"]
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
