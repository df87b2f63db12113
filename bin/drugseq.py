#!/usr/bin/env python3
"""drugseq steps for Nextflow processes: fixture, prepare, train, analyse (see `drugseq.py --help`)."""
from txrepro.cli import study_main

raise SystemExit(study_main("drugseq"))
