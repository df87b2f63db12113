"""Seeds, devices, threads and progress: the few knobs every study turns the same way."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

T = TypeVar("T")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str) -> logging.Logger:
    """A module logger; `configure_logging` decides where it goes."""
    return logging.getLogger(name)


def configure_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    # Third-party libraries are chatty at INFO; keep our own log readable.
    for noisy in ("numba", "matplotlib", "h5py", "fsspec", "PIL", "lightning", "pytorch_lightning"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def prepare_task_environment(workdir: str | None = None) -> None:
    """Inside a Nextflow task, point caches at the task folder before any library reads them.

    Containers run as the calling user with a HOME that is often unwritable (`/`), so matplotlib,
    numba, triton and Hugging Face caches would fail or land on shared disks. Nextflow exports
    NXF_TASK_WORKDIR in every task; outside a task nothing changes.
    """
    workdir = workdir or os.environ.get("NXF_TASK_WORKDIR")
    if not workdir:
        return
    cache = os.path.join(workdir, ".cache")
    for var, sub in (
        ("XDG_CACHE_HOME", ""),
        ("MPLCONFIGDIR", "matplotlib"),
        ("NUMBA_CACHE_DIR", "numba"),
        ("TRITON_CACHE_DIR", "triton"),
        ("HF_HOME", "huggingface"),
        ("TORCH_HOME", "torch"),
    ):
        os.environ.setdefault(var, os.path.join(cache, sub) if sub else cache)
    home = os.environ.get("HOME", "")
    if not home or not os.access(home, os.W_OK):
        os.environ["HOME"] = workdir


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) so CPU runs are bit-for-bit repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:  # torch is optional for studies that do not train networks
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def deterministic_torch() -> None:
    """Ask torch for deterministic kernels; on CPU this makes repeated runs identical."""
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """Every GPU-capable step's `--device`, resolved by `resolve_device`."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def resolve_device(device: str = "auto") -> str:
    """`auto` means CUDA when present, else CPU; an explicit `cuda` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from txrepro.errors import InputError

        raise InputError("--device", "device", "'auto' or 'cpu' on a machine without CUDA", device)
    return device


def set_threads(n_threads: int | None) -> None:
    """Cap torch's CPU threads (None keeps torch's default); child processes inherit the cap."""
    if n_threads is None:
        return
    import torch

    n = max(1, int(n_threads))
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """tqdm progress on stderr; TXREPRO_NO_PROGRESS=1 silences it (CI logs, tests)."""
    if os.environ.get("TXREPRO_NO_PROGRESS") == "1":
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, file=sys.stderr, mininterval=2.0)
