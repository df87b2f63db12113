"""Every container recipe is pinned, and its Python lock really resolves (pip --dry-run, CPU)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

IMAGES = sorted(p.parent.name for p in (REPO / "containers").glob("*/Dockerfile"))
FROM = re.compile(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", re.M)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: '{line}' is not pinned with =="
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_there_are_images():
    assert "report" in IMAGES


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_bases_are_digest_pinned(image):
    text = (REPO / "containers" / image / "Dockerfile").read_text()
    bases = FROM.findall(text)
    assert bases, "no FROM line"
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I))
    for base in bases:
        if base in stages:
            continue
        assert DIGEST.search(base), f"{image}: base image {base} is not pinned by digest"
    syntax = text.splitlines()[0]
    assert syntax.startswith("# syntax=") and DIGEST.search(syntax), "the Dockerfile frontend must be pinned by digest"
    assert f"containers/{image}/requirements.lock" in text, "the image must install its lock file"


@pytest.mark.parametrize("image", IMAGES)
def test_lock_matches_the_tested_environment(image):
    """Images run what CI tests: every pin equals requirements/lock-cpu.txt where both have it."""
    lock = lock_pins(REPO / "containers" / image / "requirements.lock")
    ci = lock_pins(REPO / "requirements" / "lock-cpu.txt")
    ci["torch"] = "2.13.0"
    differ = {n: (v, ci[n]) for n, v in lock.items() if n in ci and ci[n] != v}
    assert not differ, f"{image}: pins differ from requirements/lock-cpu.txt: {differ}"


@pytest.mark.parametrize("image", IMAGES)
def test_lock_resolves_on_cpu(image, tmp_path):
    """pip resolves the lock to exactly its own pins: nothing missing, nothing else pulled in."""
    lock_file = REPO / "containers" / image / "requirements.lock"
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), "-r", str(lock_file)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    installed = {
        i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"].split("+")[0]
        for i in json.loads(report.read_text())["install"]
    }
    assert installed == lock_pins(lock_file)


def test_pin_containers_rewrites_tags_to_digests():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pin_containers", REPO / "scripts" / "pin_containers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import nfstatic

    text = (REPO / "modules" / "report.nf").read_text()
    digest = "sha256:" + "ab" * 32
    pinned = mod.pin(text, {"ghcr.io/txrepro/txrepro-report:0.1.0": digest})
    images = re.findall(r"^\s*container\s+'([^']+)'", pinned, re.M)
    assert images and all(i.endswith("@" + digest) for i in images)
    assert all(nfstatic.container_problem(i, "9.9.9") is None for i in images)
    assert mod.pin(pinned, {"ghcr.io/txrepro/txrepro-report:0.1.0": "sha256:" + "cd" * 32}).count("cd" * 32) == len(images)
