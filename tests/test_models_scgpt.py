"""Shared scGPT support (txrepro.models): torchtext stand-in, checkpoint loading, gene mapping."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import cli_env
from txrepro.errors import ChecksumError, InputError
from txrepro.io.checksum import file_digest
from txrepro.models.gene_vocab import looks_like_ensembl, map_genes_to_vocab
from txrepro.models.scgpt_checkpoint import (
    CheckpointError,
    ScGPTArchitecture,
    build_transformer_model,
    load_checkpoint_dir,
    load_state_accounted,
    manifest_checksums,
    save_checkpoint_dir,
)
from txrepro.models.torchtext_vocab import Vocab, import_scgpt, vocab

TINY = ScGPTArchitecture(d_model=32, nhead=2, d_hid=32, nlayers=2, n_bins=11)
SPECIALS = ["<pad>", "<cls>", "<eoc>"]
GENES = ["TP53", "CDKN2A", "IL6", "APOE", "FOXO3", "SIRT1"]


@pytest.fixture(scope="module")
def scgpt():
    return import_scgpt()


def gene_vocab(scgpt, genes=GENES):
    return scgpt.tokenizer.GeneVocab(list(genes), specials=SPECIALS)


# --- torchtext.vocab stand-in -------------------------------------------------------------------


def test_stand_in_is_what_scgpt_imported(scgpt):
    import torchtext.vocab as tv

    assert getattr(tv, "__txrepro_stand_in__", False)
    assert issubclass(scgpt.tokenizer.GeneVocab, Vocab)


def test_vocab_lookup_default_insert_append():
    v = vocab({"a": 3, "b": 2, "rare": 1, "c": 2}, min_freq=2, specials=["<pad>"])
    assert v.get_itos() == ["<pad>", "a", "b", "c"]
    assert v["b"] == 2 and "rare" not in v and len(v) == 4
    with pytest.raises(RuntimeError, match="default index is not set"):
        v["zzz"]
    v.set_default_index(0)
    assert v["zzz"] == 0 and v.get_default_index() == 0
    assert v(["c", "zzz"]) == [3, 0] == v.lookup_indices(["c", "zzz"])
    v.insert_token("new", 1)  # later tokens shift by one, as in torchtext's C++ Vocab
    assert v.get_itos() == ["<pad>", "new", "a", "b", "c"] and v["c"] == 4
    v.append_token("d")
    assert v["d"] == 5 and v.lookup_token(5) == "d" and v.lookup_tokens([1, 2]) == ["new", "a"]
    with pytest.raises(RuntimeError, match="already exists"):
        v.append_token("a")
    with pytest.raises(RuntimeError, match="already exists"):
        v.insert_token("a", 0)
    with pytest.raises(RuntimeError, match="out of bounds"):
        v.insert_token("x", 99)
    with pytest.raises(RuntimeError, match="out of bounds"):
        v.lookup_token(6)
    assert vocab({"x": 1}, specials=["<pad>"], special_first=False).get_itos() == ["x", "<pad>"]


def test_gene_vocab_json_round_trip(scgpt, tmp_path):
    v = gene_vocab(scgpt)
    assert v.get_itos()[:3] == SPECIALS and v["<pad>"] == 0
    assert v["NOT_A_GENE"] == v["<pad>"]  # GeneVocab's silent default: why gene_vocab.py exists
    v.save_json(tmp_path / "vocab.json")
    back = scgpt.tokenizer.GeneVocab.from_file(tmp_path / "vocab.json")
    assert back.get_stoi() == v.get_stoi() and back.get_default_index() == v["<pad>"]
    # from_dict inserts by id order even when the JSON lists tokens out of order
    shuffled = dict(sorted(v.get_stoi().items(), key=lambda kv: kv[0]))
    assert scgpt.tokenizer.GeneVocab.from_dict(shuffled).get_itos() == v.get_itos()


def test_stand_in_only_when_real_torchtext_is_absent_or_broken(tmp_path):
    good = tmp_path / "good" / "torchtext"
    bad = tmp_path / "bad" / "torchtext"
    for d in (good, bad):
        d.mkdir(parents=True)
    (good / "__init__.py").write_text("")
    (good / "vocab.py").write_text("REAL = True\n")
    (bad / "__init__.py").write_text("raise OSError('libtorchtext.so: undefined symbol')\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from txrepro.models.torchtext_vocab import install_torchtext_stand_in as i;"
        "print(i(), getattr(sys.modules['torchtext.vocab'], 'REAL', False))"
    )
    out = {}
    for name in ("good", "bad"):
        res = subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], env=cli_env(), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        out[name] = res.stdout.split()
    assert out["good"] == ["False", "True"]  # a working torchtext is left alone
    assert out["bad"] == ["True", "False"]  # a broken one is replaced by the stand-in


# --- checkpoint folders -------------------------------------------------------------------------


def tiny_model(scgpt, seed: int, n_cls: int = 2):
    torch.manual_seed(seed)
    return build_transformer_model(gene_vocab(scgpt), TINY, n_cls=n_cls, dropout=0.1)


def write_fused_checkpoint(scgpt, path, seed=0, extra=None):
    model = tiny_model(scgpt, seed)
    state = dict(model.state_dict())
    state.update(extra or {})
    save_checkpoint_dir(path, state, TINY.to_args(), gene_vocab(scgpt), fused_attention_names=True)
    return model


def test_fused_checkpoint_loads_every_tensor(scgpt, tmp_path):
    source = write_fused_checkpoint(scgpt, tmp_path / "ckpt")
    on_disk = torch.load(tmp_path / "ckpt" / "best_model.pt", weights_only=True)
    fused = [k for k in on_disk if ".Wqkv." in k]
    assert len(fused) == 2 * TINY.nlayers and not any("in_proj" in k for k in on_disk)

    ckpt = load_checkpoint_dir(tmp_path / "ckpt")
    assert ckpt.architecture == TINY and len(ckpt.vocab) == len(GENES) + 3
    target = tiny_model(scgpt, seed=1)
    report = load_state_accounted(target, ckpt.state_dict)
    assert len(report.loaded) == len(on_disk) and len(report.renamed) == len(fused)
    assert not report.skipped and not report.fresh
    for key, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], tensor), key

    # The original scgpt-age loader kept only keys whose name and shape matched: every fused
    # attention tensor was dropped, and the model kept its random attention weights.
    naive = tiny_model(scgpt, seed=1)
    model_dict = naive.state_dict()
    kept = {k: v for k, v in ckpt.state_dict.items() if k in model_dict and v.shape == model_dict[k].shape}
    assert set(ckpt.state_dict) - set(kept) == set(fused)
    model_dict.update(kept)
    naive.load_state_dict(model_dict)
    in_proj = "transformer_encoder.layers.0.self_attn.in_proj_weight"
    assert not torch.equal(naive.state_dict()[in_proj], source.state_dict()[in_proj])


def test_unplaced_or_misshapen_tensors_fail_loudly(scgpt, tmp_path):
    write_fused_checkpoint(scgpt, tmp_path / "ckpt", extra={"mvc_decoder.W.weight": torch.zeros(3, 3)})
    ckpt = load_checkpoint_dir(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="1 without one: mvc_decoder.W.weight"):
        load_state_accounted(tiny_model(scgpt, 1), ckpt.state_dict)
    report = load_state_accounted(tiny_model(scgpt, 1), ckpt.state_dict, skip_prefixes=("mvc_decoder.",))
    assert report.skipped == ("mvc_decoder.W.weight",)

    # a new 3-class head: the checkpoint's 2-class head differs in shape
    with pytest.raises(CheckpointError, match="shapes"):
        load_state_accounted(tiny_model(scgpt, 1, n_cls=3), ckpt.state_dict, skip_prefixes=("mvc_decoder.",))
    report = load_state_accounted(tiny_model(scgpt, 1, n_cls=3), ckpt.state_dict, skip_prefixes=("mvc_decoder.",), new_prefixes=("cls_decoder.",))
    assert report.fresh and all(k.startswith("cls_decoder.") for k in report.fresh)

    # a model parameter the checkpoint lacks
    state = {k: v for k, v in ckpt.state_dict.items() if not k.startswith("transformer_encoder.layers.1.")}
    with pytest.raises(CheckpointError, match="missing: transformer_encoder.layers.1"):
        load_state_accounted(tiny_model(scgpt, 1), state, skip_prefixes=("mvc_decoder.",))


def test_checkpoint_checksums_and_bad_folders(scgpt, tmp_path):
    write_fused_checkpoint(scgpt, tmp_path / "ckpt")
    good = {"vocab.json": "sha256:" + file_digest(tmp_path / "ckpt" / "vocab.json")}
    load_checkpoint_dir(tmp_path / "ckpt", checksums=good)
    with pytest.raises(ChecksumError, match="best_model.pt"):
        load_checkpoint_dir(tmp_path / "ckpt", checksums={"best_model.pt": "sha256:" + "0" * 64})
    assert set(manifest_checksums("age_clock")) == {"args.json", "best_model.pt", "vocab.json"}

    (tmp_path / "ckpt" / "vocab.json").write_text(json.dumps({"<pad>": 0, "A": 2}))
    with pytest.raises(InputError, match="consecutive token ids"):
        load_checkpoint_dir(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "args.json").unlink()
    with pytest.raises(InputError, match="args.json"):
        load_checkpoint_dir(tmp_path / "ckpt")


# --- gene -> vocabulary mapping -----------------------------------------------------------------


def test_gene_mapping_counts_unmapped_and_enforces_floor(scgpt):
    v = gene_vocab(scgpt)
    m = map_genes_to_vocab(["TP53", "NOVEL1", "IL6", "FOXO3"], v, min_fraction=0.7)
    assert m.n_mapped == 3 and m.unmapped == ("NOVEL1",) and m.ids[1] == -1 and m.ids[0] == v["TP53"]
    with pytest.raises(InputError, match=r"at least 80% .*3 of 4 \(75.0%\); unmapped e.g. NOVEL1"):
        map_genes_to_vocab(["TP53", "NOVEL1", "IL6", "FOXO3"], v, min_fraction=0.8, source="x.h5ad")
    ens = ["ENSG00000141510", "ENSG00000147889.18", "TP53"]
    assert looks_like_ensembl(ens) and not looks_like_ensembl(GENES)
    with pytest.raises(InputError, match="Ensembl ids"):
        map_genes_to_vocab(ens, v)
    assert map_genes_to_vocab(["A", "B"], {"A": 0, "B": 1}).n_mapped == 2  # plain dicts work too


# --- fused-attention inference ------------------------------------------------------------------


def _tokens(n_tokens: int, rows: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random gene ids (1..n_tokens-1 after the specials) and bins; rows padded after `lengths`."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    src = torch.randint(3, n_tokens, (rows, width), generator=g)
    values = torch.randint(0, 11, (rows, width), generator=g).float()
    pad = torch.arange(width)[None, :] >= torch.tensor(lengths)[:, None]
    return src.masked_fill(pad, 0), values.masked_fill(pad, -2.0), pad


@pytest.mark.parametrize("padded", [False, True])
def test_fused_encode_equals_scgpt_encode(scgpt, padded):
    from txrepro.models.scgpt_inference import FusedAttentionEncoder, torch_attention

    model = tiny_model(scgpt, seed=3).eval()
    assert isinstance(model.transformer_encoder, FusedAttentionEncoder)
    lengths = [7, 5, 7, 2] if padded else [7] * 4
    src, values, pad = _tokens(len(GENES) + 3, 4, lengths)
    mask = pad if padded else None
    with torch.no_grad():
        assert model.transformer_encoder.fused()
        ours = model._encode(src, values, mask, None)
        with torch_attention(model):
            assert not model.transformer_encoder.fused()
            theirs = model._encode(src, values, mask, None)  # PyTorch's nested-tensor path when padded
        assert model.transformer_encoder.fused()  # restored
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    if padded:
        assert (ours[pad] == 0).all() and (ours[~pad].abs().sum(-1) > 0).all()


def test_fused_encoder_keeps_the_checkpoint_layout(scgpt):
    """Same parameters and state-dict keys as nn.TransformerEncoder: checkpoints load either way."""
    import copy

    fused = tiny_model(scgpt, seed=2)
    plain = copy.deepcopy(fused)
    plain.transformer_encoder = plain.transformer_encoder.torch_encoder
    assert list(fused.state_dict()) == list(plain.state_dict())
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in plain.parameters())
    twin = copy.deepcopy(fused)  # deep copies (best-epoch snapshots) keep the layers shared inside
    assert twin.transformer_encoder.torch_encoder.layers is twin.transformer_encoder.layers


@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_fused_layer_equals_torch_layer(norm_first, activation):
    from txrepro.models.scgpt_inference import _layer

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 24, dropout=0.3, activation=activation, batch_first=True, norm_first=norm_first).eval()
    x = torch.randn(3, 9, 16)
    attend = torch.ones(3, 1, 1, 9, dtype=torch.bool)
    attend[1, ..., 6:] = False
    with torch.no_grad():
        torch.testing.assert_close(_layer(layer, x, None), layer(x), atol=1e-5, rtol=1e-5)
        masked = _layer(layer, x, attend)
        expect = layer(x, src_key_padding_mask=~attend[:, 0, 0, :])
    keep = attend[:, 0, 0, :]
    torch.testing.assert_close(masked[keep], expect[keep], atol=1e-5, rtol=1e-5)


def test_training_and_autograd_go_through_pytorch(scgpt):
    model = tiny_model(scgpt, seed=1)
    enc = model.transformer_encoder
    src, values, _ = _tokens(len(GENES) + 3, 2, [7, 7])
    assert not model.train().transformer_encoder.fused()  # dropout: PyTorch's own layers
    torch.manual_seed(0)
    a = model._encode(src, values, None, None)
    torch.manual_seed(0)
    b = enc.torch_encoder(model.encoder(src) + model.value_encoder(values))
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # the very same computation as before
    model.eval()
    assert not enc.fused()  # grad enabled and weights that want it
    for p in model.parameters():
        p.requires_grad_(False)
    assert enc.fused()  # a frozen encoder (the article protocol) is fused
    assert not model._encode(src, values, None, None).requires_grad
