"""Files a user hands in never run code, and a killed STATE training leaves nothing outside the output.

* A `--trained` folder is user input: its checkpoint and perturbation map load weights-only, so a
  pickle payload is refused in one line without running (the payload would create a marker file).
* STATE's scratch (cell-load's copy of the training cells, the Lightning run) lives beside the
  output, never in the temp folder; a run killed mid-training leaves it there and the next run
  into the same output removes it.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_one_line_error, cli_env, run_cli
from txrepro.fixtures.vcc import write_fixture
from txrepro.studies.vcc.params import DataParams
from txrepro.studies.vcc.preprocess import prepare

pytestmark = pytest.mark.slow


class _Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_payload(path: Path, marker: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": _Payload(marker)}, fh)


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    d = tmp_path_factory.mktemp("vcc_safety")
    fx = write_fixture(d / "fx", seed=0)
    prepare(fx["input"], d / "prep", dp=DataParams(n_hvg=20), test_genes_file=fx["test_genes"])
    return d


def test_crafted_state_checkpoint_is_refused_without_running_it(prep, tmp_path):
    trained = tmp_path / "state_model"
    trained.mkdir()
    (trained / "train_info.json").write_text(json.dumps({"hvg": 20, "stages": [{"row": "state", "steps": 1}], "params": {}}))
    marker = tmp_path / "PAYLOAD_RAN"
    _write_payload(trained / "state.ckpt", marker)
    res = run_cli(["vcc.py", "predict", "--prepared", str(prep / "prep"), "--model", "state", "--trained", str(trained),
                   "--outdir", str(tmp_path / "p"), "--device", "cpu"])
    assert_one_line_error(res, "state.ckpt", "weights-only")
    assert not marker.exists()
    assert not (tmp_path / "p" / "state_pred.h5ad").exists()


STATE_ARGS = ["--state-config", "tiny", "--state-set", "max_steps=4", "more_steps_step=2", "val_freq=2", "log_every=1", "--device", "cpu", "--threads", "1"]


def test_killed_state_training_leaves_nothing_in_tmp_and_a_rerun_cleans_up(prep, tmp_path):
    tmpdir = tmp_path / "tmpdir"  # the process's temp folder: must stay empty
    tmpdir.mkdir()
    env = {**cli_env(), "TMPDIR": str(tmpdir)}
    out = tmp_path / "run" / "state_model"
    cmd = [sys.executable, str(REPO / "bin" / "vcc.py"), "state-train", "--prepared", str(prep / "prep"), "--outdir", str(out), *STATE_ARGS]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    copy = out.parent / ".state_model.work" / "state_train.h5ad"
    try:
        deadline = time.monotonic() + 120
        while not copy.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert copy.exists(), "the training copy should be written beside the output"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # a killed run: no cleanup of its own
        proc.wait()
    assert list(tmpdir.iterdir()) == []  # the copy of the training data never went to the temp folder
    left = sorted(p.name for p in out.parent.iterdir())
    assert ".state_model.work" in left and any(n.startswith(".state_model.") and n.endswith(".tmp") for n in left), left

    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.parent.iterdir()) == ["state_model"]  # leftovers gone
    assert list(tmpdir.iterdir()) == []
    info = json.loads((out / "train_info.json").read_text())
    assert info["perturbation_features"] is False and "untrained one-hot slots" in info["features"]

    # the model trained without features predicts, and says its rows are not comparable
    pred = run_cli(["vcc.py", "predict", "--prepared", str(prep / "prep"), "--model", "state", "--trained", str(out),
                    "--outdir", str(tmp_path / "p"), "--device", "cpu"], check=True)
    assert pred.returncode == 0
    model_info = json.loads((tmp_path / "p" / "state_model.json").read_text())
    assert "untrained one-hot slots" in model_info["not_comparable"]

    # a crafted perturbation map beside a real checkpoint is refused too
    marker = tmp_path / "PAYLOAD_RAN"
    _write_payload(out / "pert_onehot_map.pt", marker)
    res = run_cli(["vcc.py", "predict", "--prepared", str(prep / "prep"), "--model", "state", "--trained", str(out),
                   "--outdir", str(tmp_path / "p2"), "--device", "cpu"])
    assert_one_line_error(res, "pert_onehot_map.pt", "weights-only")
    assert not marker.exists()


def test_stale_temporaries_of_a_killed_atomic_write_are_removed(tmp_path):
    from txrepro.io.atomic import remove_stale_temporaries

    (tmp_path / ".prepared.ab12.tmp").mkdir()  # atomic_dir(prepared) mid-write
    (tmp_path / ".prepared.old").mkdir()  # atomic_dir mid-swap
    (tmp_path / ".ridge_pred.x9.tmp.h5ad").write_text("partial")  # atomic_path(ridge_pred.h5ad)
    (tmp_path / ".prepared.work").mkdir()  # not an atomic temporary: kept
    (tmp_path / "prepared").mkdir()
    removed = remove_stale_temporaries(tmp_path / "prepared") + remove_stale_temporaries(tmp_path / "ridge_pred.h5ad")
    assert sorted(p.name for p in removed) == [".prepared.ab12.tmp", ".prepared.old", ".ridge_pred.x9.tmp.h5ad"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".prepared.work", "prepared"]
