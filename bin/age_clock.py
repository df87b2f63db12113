#!/usr/bin/env python3
"""age_clock steps for Nextflow processes: prepare, train, baseline, evaluate, perturb, statistics, finish."""

from txrepro.cli import study_main

raise SystemExit(study_main("age_clock"))
