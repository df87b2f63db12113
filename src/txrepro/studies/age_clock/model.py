"""The scGPT age classifier of each protocol, and how it is saved and loaded.

repository: scgpt's whole TransformerModel fine-tuned, classifier = its ClsDecoder on the <cls>
embedding, 2 classes (softmax). article: the pretrained encoder frozen, mean over tokens +
LayerNorm + a GELU MLP head, 1 logit (sigmoid). Both expose `logit_old` = log-odds of old-age,
so evaluation and perturbation share one code path (softmax[:, 1] == sigmoid(z1 - z0)).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from txrepro.models.scgpt_checkpoint import (
    ScGPTArchitecture,
    build_transformer_model,
    load_checkpoint_dir,
    load_state_accounted,
    manifest_checksums,
    save_checkpoint_dir,
)
from txrepro.runtime import get_logger
from txrepro.studies.age_clock.config import STUDY, AgeClockConfig, config_from_dict

log = get_logger(__name__)

# What the public scGPT whole-human checkpoint holds beyond TransformerModel(do_mvc=False): the
# pretraining generator's flag encoder and MVC decoder; it has no classifier head (cls_decoder),
# see RCHENLAB/scGPT_fineTune_protocol issue 2 for the key lists.
PRETRAINED_UNUSED: tuple[str, ...] = ("flag_encoder.", "mvc_decoder.")
NEW_HEAD: tuple[str, ...] = ("cls_decoder.",)
CONFIG_KEY = "txrepro_age_clock"


class AgeClassifier(nn.Module):
    """scGPT encoder + the protocol's head; `logit_old(...)` is the log-odds of old-age."""

    def __init__(self, encoder: nn.Module, cfg: AgeClockConfig, d_model: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.style = cfg.model
        self.pad_id: int = int(encoder.encoder.embedding.padding_idx)
        if self.style == "frozen_avgpool_mlp":
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            layers: list[nn.Module] = [nn.LayerNorm(d_model)]
            width_in = d_model
            for _ in range(cfg.head_layers):
                layers += [nn.Linear(width_in, cfg.head_width), nn.GELU(), nn.Dropout(cfg.dropout)]
                width_in = cfg.head_width
            layers.append(nn.Linear(width_in, 1))
            self.head = nn.Sequential(*layers)
        elif self.style != "finetune_cls":
            raise ValueError(f"unknown model style {self.style!r}")

    def train(self, mode: bool = True) -> AgeClassifier:
        super().train(mode)
        if self.style == "frozen_avgpool_mlp":
            self.encoder.eval()  # frozen: no dropout in the encoder, ever
        return self

    def encode(self, src: Tensor, values: Tensor) -> Tensor:
        """Token outputs of the transformer (batch, seq, d_model); inference runs through fused
        attention (build_transformer_model, models.scgpt_inference).

        Without padding the mask is left out: an all-False mask gives the same result but sends
        PyTorch's encoder through nested tensors, about 3x slower on CPU.
        """
        mask = src.eq(self.pad_id)
        return self.encoder._encode(src, values, mask if bool(mask.any()) else None, None)

    def pooled(self, src: Tensor, values: Tensor) -> Tensor:
        """Mean over non-padding tokens (<cls> included): the article's average pooling."""
        out = self.encode(src, values)
        keep = (~src.eq(self.pad_id)).unsqueeze(-1).to(out.dtype)
        return (out * keep).sum(1) / keep.sum(1).clamp_min(1.0)

    def head_logit(self, pooled: Tensor) -> Tensor:
        return self.head(pooled).squeeze(-1)

    def class_logits(self, src: Tensor, values: Tensor) -> Tensor:
        """Repository: ClsDecoder on scGPT's cell embedding (the <cls> token unless re-pooled)."""
        out = self.encode(src, values)
        cell_emb = self.encoder._get_cell_emb_from_layer(out, values)
        return self.encoder.cls_decoder(cell_emb)

    def logit_old(self, src: Tensor, values: Tensor) -> Tensor:
        if self.style == "finetune_cls":
            z = self.class_logits(src, values)
            return z[:, 1] - z[:, 0]
        return self.head_logit(self.pooled(src, values))


def build_classifier(vocab: Any, arch: ScGPTArchitecture, cfg: AgeClockConfig) -> AgeClassifier:
    n_cls = 2 if cfg.model == "finetune_cls" else 1
    encoder = build_transformer_model(vocab, arch, n_cls=n_cls, dropout=cfg.dropout, cell_emb_style="cls")
    return AgeClassifier(encoder, cfg, arch.d_model)


def from_pretrained(
    checkpoint: str | os.PathLike[str],
    cfg: AgeClockConfig,
    *,
    verify_manifest: bool = False,
    skip_prefixes: Sequence[str] = PRETRAINED_UNUSED,
) -> tuple[AgeClassifier, Any, ScGPTArchitecture]:
    """A fresh classifier whose encoder is the pretrained checkpoint, every tensor accounted for.

    Layer sizes come from the checkpoint's args.json, as scgpt-age's scripts did: the network that
    ran was the checkpoint's (12 layers x 8 heads x 512 for whole-human), not the README's 4x4x128.
    """
    checksums = manifest_checksums(STUDY) if verify_manifest else None
    ckpt = load_checkpoint_dir(checkpoint, checksums=checksums)
    arch = ckpt.architecture
    model = build_classifier(ckpt.vocab, arch, cfg)
    report = load_state_accounted(
        model.encoder, ckpt.state_dict, source=Path(checkpoint) / "best_model.pt", skip_prefixes=skip_prefixes, new_prefixes=NEW_HEAD
    )
    log.info("pretrained encoder %dx%dx%d: %s", arch.nlayers, arch.nhead, arch.d_model, report.summary())
    return model, ckpt.vocab, arch


def save_classifier(directory: str | os.PathLike[str], model: AgeClassifier, vocab: Any, arch: ScGPTArchitecture, cfg: AgeClockConfig, extra: dict[str, Any] | None = None) -> Path:
    args = arch.to_args()
    args[CONFIG_KEY] = {"config": cfg.as_dict(), **(extra or {})}
    return save_checkpoint_dir(directory, model.state_dict(), args, vocab)


def load_classifier(directory: str | os.PathLike[str], map_location: str = "cpu") -> tuple[AgeClassifier, Any, AgeClockConfig, dict[str, Any]]:
    """A trained classifier folder (our own save): every tensor must load."""
    ckpt = load_checkpoint_dir(directory, map_location=map_location)
    meta = ckpt.args.get(CONFIG_KEY)
    if not isinstance(meta, dict):
        from txrepro.errors import InputError

        raise InputError(Path(directory) / "args.json", CONFIG_KEY, "a model folder written by `age_clock.py train`")
    cfg = config_from_dict(meta["config"])
    model = build_classifier(ckpt.vocab, ckpt.architecture, cfg)
    load_state_accounted(model, ckpt.state_dict, source=Path(directory) / "best_model.pt")
    model.eval()
    return model, ckpt.vocab, cfg, meta


def token_batch(gene_ids: np.ndarray, binned: np.ndarray, cls_id: int, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """scGPT inputs for cells that share one gene list: <cls> first with value 0, zeros included.

    Equals scgpt.tokenizer.tokenize_and_pad_batch(include_zero_gene=True, append_cls=True) when no
    gene needs padding (every cell has every selected gene); built as tensors directly.
    """
    n = binned.shape[0]
    src = torch.empty((n, gene_ids.size + 1), dtype=torch.long)
    src[:, 0] = cls_id
    src[:, 1:] = torch.from_numpy(np.asarray(gene_ids, dtype=np.int64))
    values = torch.zeros((n, gene_ids.size + 1), dtype=torch.float32)
    values[:, 1:] = torch.from_numpy(np.asarray(binned, dtype=np.float32))
    return src.to(device), values.to(device)
