#!/usr/bin/env python3
"""SAGE-net steps (what the Nextflow processes call): sage_net.py <step> --help."""

from txrepro.cli import study_main

if __name__ == "__main__":
    raise SystemExit(study_main("sage_net"))
