"""Shared test helpers: the repository root and a CLI runner that tests this checkout's code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("TXREPRO_NO_PROGRESS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")

try:  # one torch thread per test process: repeatable timings, and xdist workers share 2 cores
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


def cli_env() -> dict[str, str]:
    """Environment for subprocesses: this checkout's src/ first, bin/ on PATH (as Nextflow does)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(REPO / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["TXREPRO_NO_PROGRESS"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(args: list[str], cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `python -m txrepro ...` or a bin/ script (args[0] ending in .py) in a subprocess."""
    if args and args[0].endswith(".py"):
        cmd = [sys.executable, str(REPO / "bin" / args[0]), *args[1:]]
    else:
        cmd = [sys.executable, "-m", "txrepro", *args]
    res = subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res


def assert_one_line_error(res: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """A user error: exit status 2, one line on stderr, no traceback, naming what went wrong."""
    assert res.returncode == 2, f"exit {res.returncode}; stderr:\n{res.stderr}"
    lines = [ln for ln in res.stderr.strip().splitlines() if "error" in ln.lower()]
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def repo() -> Path:
    return REPO
