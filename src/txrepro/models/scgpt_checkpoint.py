"""scGPT checkpoint directories: load, verify, map flash-attn key names, and account for every tensor.

A scGPT model-zoo checkpoint is a folder with `args.json` (architecture and training settings),
`best_model.pt` (a state dict) and `vocab.json` (token -> id). The public checkpoints were saved
with flash-attn's fused attention (`self_attn.Wqkv.*`), whereas a model built without flash-attn
uses `nn.MultiheadAttention` (`self_attn.in_proj_*`). Loaders that keep only the keys whose names
and shapes match (as scgpt-age's did) then drop every pretrained attention weight without a word.
Here every checkpoint tensor is either loaded, or deliberately skipped by a prefix the caller names,
or the load fails with one line naming the checkpoint and the first offending tensors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_dir
from txrepro.io.checksum import verify_checksum
from txrepro.io.manifest import read_manifest
from txrepro.models.gene_vocab import read_vocab_json
from txrepro.models.scgpt_inference import fuse_attention
from txrepro.models.torchtext_vocab import import_scgpt
from txrepro.runtime import get_logger

log = get_logger(__name__)

ARGS_FILE = "args.json"
WEIGHTS_FILE = "best_model.pt"
VOCAB_FILE = "vocab.json"
CHECKPOINT_FILES: tuple[str, ...] = (ARGS_FILE, WEIGHTS_FILE, VOCAB_FILE)

# flash-attn's FlashMHA packs q, k and v into one Linear `Wqkv` with the same [q; k; v] row layout
# as nn.MultiheadAttention's in_proj, so a rename is exact; out_proj has the same name in both.
_FUSED_TO_TORCH: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(.*\.self_attn\.)Wqkv\.weight$"), r"\1in_proj_weight"),
    (re.compile(r"(.*\.self_attn\.)Wqkv\.bias$"), r"\1in_proj_bias"),
)
_TORCH_TO_FUSED: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(.*\.self_attn\.)in_proj_weight$"), r"\1Wqkv.weight"),
    (re.compile(r"(.*\.self_attn\.)in_proj_bias$"), r"\1Wqkv.bias"),
)


class CheckpointError(InputError):
    """A checkpoint whose tensors do not fit the model (one line, names the checkpoint)."""


@dataclass(frozen=True)
class ScGPTArchitecture:
    """The TransformerModel sizes a checkpoint's args.json fixes (scGPT's key names in comments)."""

    d_model: int  # embsize
    nhead: int  # nheads
    d_hid: int  # d_hid
    nlayers: int  # nlayers
    nlayers_cls: int = 3  # n_layers_cls
    n_bins: int = 51  # n_bins
    pad_token: str = "<pad>"  # pad_token
    pad_value: int = -2  # pad_value
    input_emb_style: str = "continuous"  # input_emb_style
    max_seq_len: int | None = None  # max_seq_len (pretraining length, informative only)

    @classmethod
    def from_args(cls, args: Mapping[str, Any], source: str | os.PathLike[str] = ARGS_FILE) -> ScGPTArchitecture:
        required = {"embsize": "d_model", "nheads": "nhead", "d_hid": "d_hid", "nlayers": "nlayers"}
        for key in required:
            if key not in args:
                raise InputError(source, f"key '{key}'", "scGPT args.json with embsize, nheads, d_hid and nlayers")
        return cls(
            d_model=int(args["embsize"]),
            nhead=int(args["nheads"]),
            d_hid=int(args["d_hid"]),
            nlayers=int(args["nlayers"]),
            nlayers_cls=int(args.get("n_layers_cls", 3)),
            n_bins=int(args.get("n_bins", 51)),
            pad_token=str(args.get("pad_token", "<pad>")),
            pad_value=int(args.get("pad_value", -2)),
            input_emb_style=str(args.get("input_emb_style", "continuous")),
            max_seq_len=int(args["max_seq_len"]) if args.get("max_seq_len") is not None else None,
        )

    def to_args(self) -> dict[str, Any]:
        """scGPT's args.json names, so a saved folder loads in scGPT's own tools too."""
        out: dict[str, Any] = {
            "embsize": self.d_model,
            "nheads": self.nhead,
            "d_hid": self.d_hid,
            "nlayers": self.nlayers,
            "n_layers_cls": self.nlayers_cls,
            "n_bins": self.n_bins,
            "pad_token": self.pad_token,
            "pad_value": self.pad_value,
            "input_emb_style": self.input_emb_style,
        }
        if self.max_seq_len is not None:
            out["max_seq_len"] = self.max_seq_len
        return out


@dataclass(frozen=True)
class ScGPTCheckpoint:
    """A loaded checkpoint folder; `state_dict` keeps the file's own key names."""

    directory: Path
    args: dict[str, Any]
    vocab: Any  # scgpt.tokenizer.GeneVocab
    state_dict: dict[str, torch.Tensor]

    @property
    def architecture(self) -> ScGPTArchitecture:
        return ScGPTArchitecture.from_args(self.args, self.directory / ARGS_FILE)


@dataclass(frozen=True)
class LoadReport:
    """Where every checkpoint tensor went (model key names)."""

    loaded: tuple[str, ...]
    renamed: dict[str, str] = field(default_factory=dict)  # checkpoint key -> model key
    skipped: tuple[str, ...] = ()  # checkpoint keys dropped on purpose (skip/new prefixes)
    fresh: tuple[str, ...] = ()  # model keys left at their initial values (new modules)

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} tensors loaded ({len(self.renamed)} renamed from flash-attn names), "
            f"{len(self.skipped)} skipped on purpose, {len(self.fresh)} model tensors newly initialised"
        )


def manifest_checksums(study: str, files: Sequence[str] = CHECKPOINT_FILES) -> dict[str, str]:
    """Checksums that assets/data_manifest.tsv records for a study's checkpoint files, by file name."""
    df = read_manifest()
    rows = df[(df["study"] == study) & df["file"].isin(list(files)) & (df["checksum"] != "")]
    return {str(r.file): str(r.checksum) for r in rows.itertuples(index=False)}


def read_args(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / ARGS_FILE
    if not path.is_file():
        raise InputError(path, ARGS_FILE, "a scGPT checkpoint folder with args.json, best_model.pt and vocab.json", "no args.json")
    try:
        args = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise InputError(path, ARGS_FILE, "a JSON object") from None
    if not isinstance(args, dict):
        raise InputError(path, ARGS_FILE, "a JSON object", type(args).__name__)
    return args


def read_vocab(path: str | os.PathLike[str]) -> Any:
    """scgpt's GeneVocab from a vocab.json (default index <pad>, as scGPT sets it)."""
    scgpt = import_scgpt()
    return scgpt.tokenizer.GeneVocab.from_dict(read_vocab_json(path))


def _unwrap_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file (plain, or under 'model_state_dict', or DDP 'module.')."""
    if isinstance(obj, Mapping) and "model_state_dict" in obj and isinstance(obj["model_state_dict"], Mapping):
        obj = obj["model_state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(path, WEIGHTS_FILE, "a PyTorch state dict (name -> tensor)", type(obj).__name__)
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_checkpoint_dir(
    directory: str | os.PathLike[str],
    *,
    checksums: Mapping[str, str] | None = None,
    map_location: str | torch.device = "cpu",
) -> ScGPTCheckpoint:
    """Read args.json, vocab.json and best_model.pt, verifying any checksum given per file name.

    `map_location` defaults to CPU: GPU-saved checkpoints otherwise fail to load on CPU-only hosts.
    """
    d = Path(directory)
    if not d.is_dir():
        raise InputError(d, "checkpoint", "a folder with args.json, best_model.pt and vocab.json", "no such folder")
    for name in CHECKPOINT_FILES:
        if not (d / name).is_file():
            raise InputError(d / name, name, "a scGPT checkpoint folder with args.json, best_model.pt and vocab.json", "missing")
    for name, spec in (checksums or {}).items():
        if (d / name).is_file():
            verify_checksum(d / name, spec)
    args = read_args(d)
    vocab = read_vocab(d / VOCAB_FILE)
    try:
        raw = torch.load(d / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or non-tensor pickle
        raise InputError(d / WEIGHTS_FILE, WEIGHTS_FILE, "a PyTorch state dict saved with torch.save", type(exc).__name__) from None
    state = _unwrap_state(raw, d / WEIGHTS_FILE)
    log.info("checkpoint %s: %d tensors, vocabulary of %d tokens", d, len(state), len(vocab))
    return ScGPTCheckpoint(d, args, vocab, state)


def rename_fused_attention_keys(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """flash-attn names -> nn.MultiheadAttention names; returns the new dict and old -> new names."""
    out: dict[str, torch.Tensor] = {}
    renamed: dict[str, str] = {}
    for key, tensor in state.items():
        new = key
        for pattern, repl in _FUSED_TO_TORCH:
            if pattern.match(key):
                new = pattern.sub(repl, key)
                renamed[key] = new
                break
        if new in out:
            raise ValueError(f"checkpoint has both {key} and a tensor named {new}")
        out[new] = tensor
    return out, renamed


def fuse_attention_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """nn.MultiheadAttention names -> flash-attn names (how the public checkpoints were saved)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        new = key
        for pattern, repl in _TORCH_TO_FUSED:
            if pattern.match(key):
                new = pattern.sub(repl, key)
                break
        out[new] = tensor
    return out


def _examples(keys: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_state_accounted(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str | os.PathLike[str] = WEIGHTS_FILE,
    skip_prefixes: Sequence[str] = (),
    new_prefixes: Sequence[str] = (),
) -> LoadReport:
    """Load `state` into `model` so that no checkpoint tensor is dropped without being named.

    - flash-attn fused names are renamed to PyTorch's first;
    - checkpoint tensors under `skip_prefixes` (modules the model does not build, e.g.
      `mvc_decoder.`) or `new_prefixes` (modules the task replaces, e.g. a classifier head
      `cls_decoder.`) are skipped and reported;
    - model tensors under `new_prefixes` keep their initial values;
    - anything else that does not match by name and shape raises CheckpointError.
    """
    renamed_state, renamed = rename_fused_attention_keys(state)
    model_state = model.state_dict()
    dropped_on_purpose = tuple(skip_prefixes) + tuple(new_prefixes)
    loaded: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    unknown: list[str] = []
    wrong_shape: list[str] = []
    for key, tensor in renamed_state.items():
        if dropped_on_purpose and key.startswith(dropped_on_purpose):
            skipped.append(key)
        elif key not in model_state:
            unknown.append(key)
        elif tuple(tensor.shape) != tuple(model_state[key].shape):
            wrong_shape.append(f"{key} {tuple(tensor.shape)} vs model {tuple(model_state[key].shape)}")
        else:
            loaded[key] = tensor
    not_loaded = [k for k in model_state if k not in loaded]
    fresh = [k for k in not_loaded if new_prefixes and k.startswith(tuple(new_prefixes))]
    missing = [k for k in not_loaded if k not in fresh]
    if unknown:
        raise CheckpointError(source, "state dict", "every checkpoint tensor to have a place in the model", f"{len(unknown)} without one: {_examples(unknown)}")
    if wrong_shape:
        raise CheckpointError(source, "state dict", "checkpoint tensor shapes equal to the model's", f"{len(wrong_shape)} differ: {_examples(wrong_shape, 2)}")
    if missing:
        raise CheckpointError(source, "state dict", "a tensor for every pretrained model parameter", f"{len(missing)} missing: {_examples(missing)}")
    full = dict(model_state)
    for key, tensor in loaded.items():
        full[key] = tensor.to(dtype=model_state[key].dtype, device=model_state[key].device)
    model.load_state_dict(full, strict=True)
    report = LoadReport(tuple(loaded), renamed, tuple(skipped), tuple(fresh))
    log.info("checkpoint %s: %s", source, report.summary())
    return report


def build_transformer_model(
    vocab: Any,
    arch: ScGPTArchitecture,
    *,
    n_cls: int = 1,
    dropout: float = 0.2,
    cell_emb_style: str = "cls",
    **kwargs: Any,
) -> torch.nn.Module:
    """scgpt's TransformerModel with PyTorch attention (flash-attn is GPU-only and optional), fused
    at inference (models.scgpt_inference).

    Extra keyword arguments go to TransformerModel unchanged (do_mvc, explicit_zero_prob, ...).
    """
    scgpt = import_scgpt()
    model = scgpt.model.TransformerModel(
        ntoken=len(vocab),
        d_model=arch.d_model,
        nhead=arch.nhead,
        d_hid=arch.d_hid,
        nlayers=arch.nlayers,
        nlayers_cls=arch.nlayers_cls,
        n_cls=n_cls,
        vocab=vocab,
        dropout=dropout,
        pad_token=arch.pad_token,
        pad_value=arch.pad_value,
        input_emb_style=arch.input_emb_style,
        n_input_bins=arch.n_bins,
        cell_emb_style=cell_emb_style,
        use_fast_transformer=False,
        **kwargs,
    )
    return fuse_attention(model)


def save_checkpoint_dir(
    directory: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    args: Mapping[str, Any],
    vocab: Any,
    *,
    fused_attention_names: bool = False,
) -> Path:
    """Write args.json, best_model.pt and vocab.json atomically (the layout scGPT's tools read).

    `fused_attention_names=True` saves attention weights under flash-attn's names, as the public
    checkpoints are; tests use it to build a realistic tiny checkpoint.
    """
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    if fused_attention_names:
        state = fuse_attention_keys(state)
    stoi = vocab.get_stoi() if hasattr(vocab, "get_stoi") else dict(vocab)
    with atomic_dir(directory) as tmp:
        (tmp / ARGS_FILE).write_text(json.dumps(dict(args), indent=2, sort_keys=True) + "\n")
        (tmp / VOCAB_FILE).write_text(json.dumps(stoi, indent=2) + "\n")
        torch.save(state, tmp / WEIGHTS_FILE)
    return Path(directory)
