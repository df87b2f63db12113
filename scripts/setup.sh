#!/usr/bin/env bash
# Create .venv with the exact CPU environment of the tests (../shared/ENVIRONMENT.md recipe).
# Idempotent: a second run with unchanged requirements only checks a stamp file.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.txrepro-setup
want=$(cat requirements/lock-cpu.txt requirements/constraints.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import txrepro" 2>/dev/null; then
    echo "setup: .venv is up to date"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
echo "setup: torch (CPU wheel)"
# Our machines find a local CPU wheel; elsewhere (GitHub runners) set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu, or plain PyPI pulls GBs of CUDA wheels.
pip install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
echo "setup: locked dependencies (a few minutes on a fresh machine)"
pip install -c requirements/constraints.txt -r requirements/lock-cpu.txt
# scgpt's declared dependencies pull torchtext, whose compiled library cannot load with current
# torch; txrepro ships a pure-Python stand-in for the part scgpt uses (docs/studies/age_clock.md).
echo "setup: scgpt (no dependencies) and txrepro"
pip install --no-deps scgpt==0.2.4
pip install --no-deps --no-build-isolation -e .
echo "$want" > "$STAMP"
echo "setup: done ($("$VENV/bin/python" -c 'import txrepro; print("txrepro", txrepro.__version__)'))"
