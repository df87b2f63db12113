"""STATE (arc-state's State Transition model) trained on the prepared HVG matrix and predicted as cells.

arc-state is driven through its own entry points: `load_hydra_config("tx", overrides)` builds the
`state tx train` configuration and `run_tx_train(cfg)` trains it (cell-load data module, Lightning
trainer, energy-distance loss), exactly as `state tx train` would. What this module adds:

* the training file cell-load reads: the prepared cells' `obsm['X_hvg']`, perturbation, batch and
  cell type, without the test perturbations' cells (they never reach the trainer), and the
  perturbation split as a cell-load TOML (`fewshot` validation genes);
* both published STATE rows from one schedule: arc-state trains with Adam at a constant learning
  rate, so "the model at step 10,700" (the fourth run's evaluated checkpoint) is a stage of the
  same run. We train to the smaller budget, keep that checkpoint, then let `run_tx_train` resume
  from it (its own resume path) up to the larger one;
* prediction as `state tx infer` does it (windows of `cell_set_len` control cells sharing one
  perturbation through `predict_step`, outputs clipped to [0, 14]), except that the control cells
  are the seeded sample every vcc model starts from, and the HVG predictions are lifted to all
  genes: each predicted cell keeps its control cell's values outside the HVGs (a predicted effect
  of 0 there), because cell-eval scores all 18,080 genes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_dir, remove_stale_temporaries, write_json
from txrepro.runtime import get_logger, progress
from txrepro.studies.vcc.data import PREPARED_H5AD, Prepared
from txrepro.studies.vcc.features import load_embedding_file
from txrepro.studies.vcc.models import CellPrediction, PredictionContext, Predictor, cells_from_control_rows
from txrepro.studies.vcc.params import StateParams

log = get_logger(__name__)

# Column names in the file cell-load reads (the names STATE's starter set uses).
PERT, BATCH, CELL_TYPE = "target_gene", "batch_var", "cell_type"
INPUT_FILE = "state_train.h5ad"
TOML_FILE = "split.toml"
CHECKPOINT = {"state": "state.ckpt", "state_more_steps": "state_more_steps.ckpt"}
TRAIN_INFO = "train_info.json"
LOSS_CSV = "training_log.csv"
PERT_MAP = "pert_onehot_map.pt"
RUN_ARTEFACTS = ("config.yaml", "var_dims.pkl", "batch_onehot_map.torch", "cell_type_onehot_map.torch")
# Said in the rows of a STATE run without perturbation features (summarise relabels those rows).
NO_FEATURES = ("trained without perturbation features (vcc_features or vcc_support_set: the starter set's ESM2_pert_features.pt), "
               "so the unseen test genes got untrained one-hot slots")


def hvg_columns(prepared: Prepared) -> np.ndarray:
    """Column indices of obsm['X_hvg'] in the all-gene matrix (prepare copies them in this order)."""
    import anndata.io as adio
    import h5py

    with h5py.File(prepared.h5ad, "r") as f:
        var = adio.read_elem(f["var"])
    if "highly_variable" not in var:
        raise InputError(prepared.h5ad, "var['highly_variable']", "the HVG flags `vcc.py prepare` writes", "missing")
    return np.flatnonzero(var["highly_variable"].to_numpy(dtype=bool))


def write_training_file(prepared: Prepared, path: Path, *, batch_col: str = "batch", block: int = 10_000) -> dict[str, Any]:
    """The cells STATE trains and validates on, in the layout cell-load reads.

    Test-perturbation cells are left out; their labels stay among the categories so a one-hot
    perturbation map still has a (never trained) slot for them. X stays empty: with
    output_space='gene' and embed_key='X_hvg' cell-load reads obsm['X_hvg'] only.
    """
    import anndata.io as adio
    import h5py
    import scipy.sparse as sp

    from txrepro.studies.vcc.h5ad_stream import CsrH5adWriter

    with h5py.File(prepared.h5ad, "r") as f:
        obs = adio.read_elem(f["obs"])
        var = adio.read_elem(f["var"])
        hvg = var.index[var["highly_variable"].to_numpy(dtype=bool)]
        x_hvg = f["obsm/X_hvg"]
        labels = obs[prepared.pert_col].astype(str).to_numpy()
        keep = ~np.isin(labels, list(prepared.split["test"]))
        n = int(keep.sum())
        batches = obs[batch_col].astype(str).to_numpy() if batch_col and batch_col in obs else np.full(len(obs), "batch0")
        cell_types = obs[CELL_TYPE].astype(str).to_numpy() if CELL_TYPE in obs else np.full(len(obs), "all")
        categories = sorted(set(labels))
        state_obs = pd.DataFrame(
            {
                PERT: pd.Categorical(labels[keep], categories=categories),
                BATCH: pd.Categorical(batches[keep]),
                CELL_TYPE: pd.Categorical(cell_types[keep]),
            },
            index=obs.index[keep].astype(str),
        )
        with CsrH5adWriter(path, n, hvg.size) as w:
            ds = w.create_obsm("X_hvg", hvg.size)
            pos = 0
            for start in range(0, len(obs), block):
                stop = min(len(obs), start + block)
                rows = np.asarray(x_hvg[start:stop], dtype=np.float32)[keep[start:stop]]
                ds[pos : pos + rows.shape[0]] = rows
                w.append(sp.csr_matrix((rows.shape[0], hvg.size), dtype=np.float32))
                pos += rows.shape[0]
            w.finish(state_obs, pd.DataFrame(index=pd.Index(hvg.astype(str), name="gene_name")), {"log1p": {}})
    return {"cells": n, "hvg": int(hvg.size), "cell_types": sorted(set(cell_types[keep]))}


def write_split_toml(path: Path, h5: Path, cell_types: list[str], val: list[str]) -> None:
    """cell-load's experiment TOML: one training dataset, validation perturbations per cell type."""
    lines = ["[datasets]", f"vcc = {json.dumps(str(h5))}", "", "[training]", 'vcc = "train"', "", "[zeroshot]", ""]
    for ct in cell_types:
        lines += [f"[fewshot.{json.dumps('vcc.' + ct)}]", f"val = {json.dumps(sorted(val))}", "test = []", ""]
    path.write_text("\n".join(lines))


def _q(value: Any) -> str:
    """A Hydra override value: quoted, so paths and labels with special characters pass unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def hydra_overrides(sp: StateParams, *, toml: Path, control: str, features: Path | None, output_dir: Path, max_steps: int, seed: int) -> list[str]:
    """`state tx train` overrides: the project's state_sm model, our data and split, no wandb."""
    bb = "model.kwargs.transformer_backbone_kwargs"
    kv = {
        "data.kwargs.toml_config_path": str(toml),
        "data.kwargs.embed_key": "X_hvg",
        "data.kwargs.output_space": "gene",
        "data.kwargs.pert_col": PERT,
        "data.kwargs.batch_col": BATCH,
        "data.kwargs.cell_type_key": CELL_TYPE,
        "data.kwargs.control_pert": control,
        "data.kwargs.num_workers": 0,  # cell-load defaults to 12 workers
        "data.kwargs.pin_memory": False,
        "data.kwargs.perturbation_features_file": str(features) if features else None,
        "training.batch_size": sp.batch_size,
        "training.lr": sp.lr,
        "training.max_steps": max_steps,
        "training.val_freq": sp.val_freq,
        "training.ckpt_every_n_steps": sp.val_freq,
        "+training.log_every_n_steps": sp.log_every,
        "training.gradient_clip_val": sp.grad_clip,
        "training.train_seed": seed,
        "training.wandb_track": False,
        "model.kwargs.cell_set_len": sp.cell_set_len,
        "model.kwargs.hidden_dim": sp.hidden_dim,
        "model.kwargs.n_encoder_layers": sp.n_encoder_layers,
        "model.kwargs.n_decoder_layers": sp.n_decoder_layers,
        "model.kwargs.blur": sp.blur,
        f"{bb}.num_hidden_layers": sp.n_layers,
        f"{bb}.num_attention_heads": sp.n_heads,
        f"{bb}.num_key_value_heads": sp.n_heads,
        f"{bb}.head_dim": sp.head_dim,
        f"{bb}.intermediate_size": sp.intermediate_size,
        f"{bb}.bidirectional_attention": sp.bidirectional,
        "use_wandb": False,
        "output_dir": str(output_dir),
        "name": "run",
        "overwrite": False,
    }
    return ["model=state_sm", *(f"{k}={_q(v)}" for k, v in kv.items())]


@contextlib.contextmanager
def _arc_state_environment(device: str, scratch: Path | None = None) -> Iterator[None]:
    """No wandb, no network; arc-state's chatter to stderr so stdout keeps our result lines.

    `run_tx_train` picks the GPU whenever CUDA is visible; `device='cpu'` hides it for the run.
    `scratch`: torch's compile caches go there (under the output) instead of the temp folder.
    """
    from unittest import mock

    import torch

    env = {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if scratch is not None:
        env.update({"TORCHINDUCTOR_CACHE_DIR": str(scratch / "torchinductor"), "TRITON_CACHE_DIR": str(scratch / "triton")})
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    hide_gpu = mock.patch.object(torch.cuda, "is_available", return_value=False) if device == "cpu" else contextlib.nullcontext()
    try:
        with contextlib.redirect_stdout(sys.stderr), hide_gpu:
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check_features(prepared: Prepared, features: Path | None) -> str:
    """Every perturbation needs a vector: cell-load would silently use zeros for a missing one."""
    if features is None:
        return "one-hot perturbations: " + NO_FEATURES
    needed = sorted({*prepared.split["train"], *prepared.split["val"], *prepared.split["test"]})
    feats = load_embedding_file(features, needed)
    return f"perturbation features from {Path(features).name} ({feats.matrix.shape[1]}-d per target gene)"


def work_folder(outdir: Path) -> Path:
    """Scratch space beside the output (never /tmp): cell-load's copy of the training cells, the run."""
    return outdir.parent / f".{outdir.name}.work"


def clean_leftovers(outdir: Path) -> None:
    """Remove what a killed run into `outdir` left: its scratch folder and unfinished output."""
    shutil.rmtree(work_folder(outdir), ignore_errors=True)
    remove_stale_temporaries(outdir)


def save_perturbation_map(src: Path, dst: Path) -> None:
    """arc-state's perturbation map (gene -> vector) re-saved with plain str keys.

    arc-state pickles numpy string keys, which `torch.load(weights_only=True)` refuses; this file
    was written a moment ago by the run in our own scratch folder, so numpy scalars are allowed
    for this one read. What `predict` later reads is plain tensors under str keys.
    """
    import torch

    with torch.serialization.safe_globals([np._core.multiarray.scalar, np.dtype, type(np.dtype("U"))]):
        raw = torch.load(src, map_location="cpu", weights_only=True)
    torch.save({str(k): v.detach().clone() for k, v in raw.items()}, dst)


def train_state(
    prepared_dir: str | Path,
    outdir: str | Path,
    *,
    params: StateParams = StateParams(),
    features: str | Path | None = None,
    seed: int = 42,
    batch_col: str = "batch",
    device: str = "auto",
) -> Path:
    """Train one STATE schedule; writes state.ckpt and state_more_steps.ckpt (and the run's maps)."""
    from txrepro.runtime import resolve_device

    t0 = time.perf_counter()
    prepared = Prepared(prepared_dir)
    features = Path(features) if features else None
    device = resolve_device(device)
    if params.max_steps < 1 or params.more_steps_step < 1:
        raise InputError("params", "vcc_state_max_steps / vcc_state_more_steps_step", "positive step counts", f"{params.max_steps} / {params.more_steps_step}")
    if not prepared.split["train"]:
        raise InputError(prepared.folder, "split.json", "at least one training perturbation", "none")
    feature_note = _check_features(prepared, features)
    budgets = sorted({("state_more_steps", params.more_steps_step), ("state", params.max_steps)}, key=lambda kv: (kv[1], kv[0]))
    outdir = Path(outdir)
    clean_leftovers(outdir)
    work = work_folder(outdir)
    work.mkdir(parents=True)
    with atomic_dir(outdir) as tmp, _removed_after(work):
        info = write_training_file(prepared, work / INPUT_FILE, batch_col=batch_col)
        write_split_toml(work / TOML_FILE, work / INPUT_FILE, info["cell_types"], prepared.split["val"])
        shutil.copy(work / TOML_FILE, tmp / TOML_FILE)
        run_dir = work / "run"
        stages = []
        for row, steps in progress(budgets, "vcc STATE training stages", len(budgets)):
            log.info("STATE (%s preset): training to step %d for the `%s` row on %s", params.config, steps, row, device)
            _run_tx_train(hydra_overrides(params, toml=work / TOML_FILE, control=prepared.control, features=features,
                                          output_dir=work, max_steps=steps, seed=seed), device, work)
            final = run_dir / "checkpoints" / "final.ckpt"
            shutil.copy(final, tmp / CHECKPOINT[row])
            # the next stage resumes from exactly this state (run_tx_train resumes from last.ckpt)
            shutil.copy(final, run_dir / "checkpoints" / "last.ckpt")
            final.unlink()
            stages.append({"row": row, "steps": steps, "checkpoint": CHECKPOINT[row]})
        for name in RUN_ARTEFACTS:
            if (run_dir / name).exists():
                shutil.copy(run_dir / name, tmp / name)
        save_perturbation_map(run_dir / PERT_MAP, tmp / PERT_MAP)
        history = _loss_history(run_dir / "version_0" / "metrics.csv")
        history.to_csv(tmp / LOSS_CSV, index=False)
        write_json(tmp / TRAIN_INFO, {
            "model": "arc-state StateTransitionPerturbationModel",
            "arc_state_version": _version("arc-state"),
            "cell_load_version": _version("cell-load"),
            "params": asdict(params),
            "seed": seed,
            "device": device,
            "features": feature_note,
            "perturbation_features": bool(features),
            "training_cells": info["cells"],
            "hvg": info["hvg"],
            "stages": stages,
            "final_train_loss": _last(history, "train_loss"),
            "final_val_loss": _last(history, "val_loss"),
            "seconds": round(time.perf_counter() - t0, 2),
        })
    log.info("STATE trained in %.1f s (%s)", time.perf_counter() - t0, ", ".join(f"{s['row']}@{s['steps']}" for s in stages))
    return outdir


@contextlib.contextmanager
def _removed_after(folder: Path) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_tx_train(overrides: list[str], device: str, scratch: Path) -> None:
    from state.__main__ import load_hydra_config
    from state._cli import run_tx_train

    with _arc_state_environment(device, scratch):
        cfg = load_hydra_config("tx", overrides)
        run_tx_train(cfg)


def _loss_history(csv: Path) -> pd.DataFrame:
    """Training and validation loss by step, from the run's CSV log (one row per step logged)."""
    if not csv.is_file():
        return pd.DataFrame(columns=["step", "train_loss", "val_loss"])
    df = pd.read_csv(csv)
    cols = [c for c in ("train_loss", "val_loss") if c in df]
    out = df.groupby("step", as_index=False)[cols].mean() if cols else pd.DataFrame({"step": []})
    return out


def _last(df: pd.DataFrame, col: str) -> float | None:
    if col not in df:
        return None
    s = df[col].dropna()
    return float(s.iloc[-1]) if len(s) else None


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def read_train_info(model_dir: str | Path) -> dict[str, Any]:
    d = Path(model_dir)
    f = d / TRAIN_INFO
    if not d.is_dir() or not f.is_file():
        raise InputError(d, TRAIN_INFO, "the output folder of `vcc.py state-train`", "missing")
    return json.loads(f.read_text())


class StatePredictor(Predictor):
    """One of the two STATE rows, from a `state-train` folder (ctx.trained)."""

    name = "state"

    def predict(self, ctx: PredictionContext) -> CellPrediction:
        import torch

        from txrepro.runtime import resolve_device

        if ctx.trained is None:
            raise InputError("command line", "trained model (--trained; Nextflow passes the training step's folder)", f"the output folder of `vcc.py state-train` for model {self.name}", "not given")
        info = read_train_info(ctx.trained)
        ckpt = Path(ctx.trained) / CHECKPOINT[self.name]
        if not ckpt.is_file():
            raise InputError(ckpt.parent, ckpt.name, "a checkpoint written by `vcc.py state-train`", "missing")
        device = resolve_device(ctx.device)
        with _arc_state_environment(device):
            from state.tx.models.state_transition import StateTransitionPerturbationModel

            # weights_only: a crafted checkpoint must not run code (tensors, numbers, strings only)
            model = _safe_load(ckpt, "a Lightning checkpoint written by `vcc.py state-train`",
                               lambda: StateTransitionPerturbationModel.load_from_checkpoint(str(ckpt), map_location=device, weights_only=True))
        model.eval()
        map_file = Path(ctx.trained) / PERT_MAP
        pert_map = _safe_load(map_file, "a dict gene -> tensor written by `vcc.py state-train`",
                              lambda: torch.load(map_file, map_location="cpu", weights_only=True))
        if not isinstance(pert_map, dict):
            raise InputError(map_file.parent, map_file.name, "a dict gene -> tensor written by `vcc.py state-train`", type(pert_map).__name__)
        missing = [g for g in ctx.test if g not in pert_map]
        if missing:
            raise InputError(ctx.trained, "pert_onehot_map.pt", "a perturbation vector for every test gene", f"missing {', '.join(missing[:5])}")
        columns = hvg_columns(ctx.prepared)
        if columns.size != int(info["hvg"]):
            raise InputError(ctx.trained, TRAIN_INFO, f"a model trained on these {columns.size} HVGs", f"{info['hvg']} HVGs")
        set_len = int(model.cell_sentence_len)
        clip = float(info["params"].get("predict_clip", 14.0))

        def predict_block(i: int, basal: np.ndarray) -> np.ndarray:
            vec = pert_map[ctx.test[i]].float()
            out = []
            with torch.no_grad():
                for s in range(0, basal.shape[0], set_len):
                    win = torch.from_numpy(basal[s : s + set_len]).to(device)
                    batch = {"ctrl_cell_emb": win, "pert_emb": vec.unsqueeze(0).repeat(win.shape[0], 1).to(device),
                             "pert_name": [ctx.test[i]] * win.shape[0]}
                    out.append(model.predict_step(batch, batch_idx=0, padded=False)["preds"].float().cpu().numpy())
            return np.clip(np.vstack(out), 0.0, clip)

        step = next(s["steps"] for s in info["stages"] if s["row"] == self.name)
        note = (f"arc-state {info['arc_state_version']} ST model ({info['params']['config']} preset, {step:,} steps, "
                f"{info['features']}); HVGs predicted by STATE, other genes kept at the sampled control cells' values (effect 0)")
        extra: dict[str, Any] = {"features": note, "steps": step, "checkpoint": ckpt.name, "train_info": info}
        if not info.get("perturbation_features", "one-hot" not in str(info.get("features", ""))):
            extra["not_comparable"] = NO_FEATURES
        return cells_from_control_rows(ctx, columns, predict_block, extra)


def _safe_load(path: Path, expected: str, load: Any) -> Any:
    """Run a weights-only load; anything it refuses (pickled objects, a corrupt file) is one line."""
    import pickle

    try:
        return load()
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, AttributeError, TypeError) as exc:
        why = "objects other than tensors (refused: weights-only load)" if isinstance(exc, pickle.UnpicklingError) else type(exc).__name__
        raise InputError(path.parent, path.name, expected, why) from None


class StateMoreStepsPredictor(StatePredictor):
    name = "state_more_steps"
