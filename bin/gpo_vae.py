#!/usr/bin/env python3
"""gpo_vae steps for Nextflow processes: prepare, train, evaluate (see `gpo_vae.py --help`)."""

from txrepro.cli import study_main

raise SystemExit(study_main("gpo_vae"))
