#!/usr/bin/env python3
"""REPORT process: study metrics + published numbers -> MultiQC report and reproduction summary."""

from txrepro.cli import report_main

raise SystemExit(report_main())
