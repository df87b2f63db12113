#!/usr/bin/env python3
"""vcc study steps (prepare, reference, predict, evaluate, summarise) as the Nextflow processes call them."""

from txrepro.cli import study_main

raise SystemExit(study_main("vcc"))
