"""Command line: `txrepro` (reproduce, report, fixtures, one command per study) and `bin/<study>.py`.

Nextflow processes call `bin/<study>.py <step> ...`; `txrepro <study> <step> ...` is the same parser,
so the static checks that read a process's command line test what really runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from txrepro import STUDY_IDS, __version__
from txrepro.errors import TxreproError
from txrepro.report.cli import add_report_steps
from txrepro.runtime import configure_logging, prepare_task_environment, set_threads
from txrepro.studies import cli_module, implemented_studies, pipeline_module


class StrictParser(argparse.ArgumentParser):
    """No option abbreviations: a process that passes `--out` must not silently mean `--outdir`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        """`--a_b` and `--a-b` both work: studies spell their long options either way."""
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args([self._known_spelling(a) for a in args], namespace)

    def _known_spelling(self, arg: str) -> str:
        if not arg.startswith("--") or arg == "--":
            return arg
        name, eq, value = arg.partition("=")
        if name in self._option_string_actions:
            return arg
        for other in (name[:2] + name[2:].replace("_", "-"), name[:2] + name[2:].replace("-", "_")):
            if other in self._option_string_actions:
                return other + eq + value
        return arg


def _subcommands(parser: argparse.ArgumentParser, dest: str, metavar: str) -> argparse._SubParsersAction:
    return parser.add_subparsers(dest=dest, required=True, metavar=metavar, parser_class=StrictParser)


def _study_help(study: str) -> str:
    mod = pipeline_module(study)
    if mod is None:
        return f"{study} (not implemented in this version)"
    return f"{study} steps: {', '.join(mod.STEPS)}"


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice; 1 for `reproduce --profile test`)")


def build_study_parser(study: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of `bin/<study>.py`: one sub-command per step."""
    mod = cli_module(study)
    parser = StrictParser(prog=prog or f"{study}.py", description=_study_help(study))
    parser.add_argument("--version", action="version", version=f"txrepro {__version__}")
    if mod is None:
        parser.set_defaults(func=_not_implemented(study))
        return parser
    _add_study_steps(_subcommands(parser, "step", "STEP"), study, mod)
    return parser


def _add_study_steps(steps: argparse._SubParsersAction, study: str, mod) -> None:
    """The study's own steps, plus `fixture`, which every study has (the -profile test inputs)."""
    mod.add_steps(steps, add_common)
    p = steps.add_parser("fixture", help=f"write the {study} fixture (synthetic inputs with planted truth)")
    p.add_argument("--outdir", required=True, help="folder to write the fixture files into")
    p.add_argument("--seed", type=int, default=0)
    add_common(p)
    p.set_defaults(func=_cmd_fixtures, study=study)


def _not_implemented(study: str) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        from txrepro.errors import StudyNotImplemented

        raise StudyNotImplemented(study, implemented_studies())

    return run


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from txrepro.reproduce import load_params, reproduce

    if args.threads is None and args.profile == "test":
        # Fixture models are tiny: a second torch thread only adds synchronisation, and on a busy
        # 2-core machine it made the age_clock fixture run 13x slower (6.8 min against 30 s).
        set_threads(1)

    _, report = reproduce(args.study, args.outdir, profile=args.profile, params=load_params(args.params_file), report=not args.no_report)
    if report is not None:
        print(f"report: {report.summary_md}")
        if report.html:
            print(f"html:   {report.html}")
    return 0


def _cmd_fixtures(args: argparse.Namespace) -> int:
    if args.study not in implemented_studies():
        from txrepro.errors import StudyNotImplemented

        raise StudyNotImplemented(args.study, implemented_studies())
    mod = importlib.import_module(f"txrepro.fixtures.{args.study}")
    paths = mod.write_fixture(Path(args.outdir), seed=args.seed)
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = StrictParser(
        prog="txrepro",
        description="Re-run published transcriptome-AI studies and compare every number with the published one.",
    )
    parser.add_argument("--version", action="version", version=f"txrepro {__version__}")
    sub = _subcommands(parser, "command", "COMMAND")

    p = sub.add_parser("reproduce", help="run studies end to end in-process, then the report")
    p.add_argument("study", help=f"'all' or a comma list of: {', '.join(STUDY_IDS)}")
    p.add_argument("--outdir", required=True, help="output folder (one sub-folder per study, plus report/)")
    p.add_argument("--profile", default="test", choices=("test", "full"), help="test: bundled fixtures, tiny models; full: your data from --params-file")
    p.add_argument("--params-file", default=None, help="YAML/JSON with the same parameters as the Nextflow pipeline")
    p.add_argument("--no-report", action="store_true", help="skip the report")
    add_common(p)
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("report", help="report steps (what bin/report.py runs): build, not-computed")
    add_report_steps(_subcommands(p, "step", "STEP"), add_common)

    p = sub.add_parser("fixtures", help="write a study's synthetic fixture with planted truth")
    p.add_argument("study", choices=STUDY_IDS)
    p.add_argument("--outdir", required=True)
    p.add_argument("--seed", type=int, default=0)
    add_common(p)
    p.set_defaults(func=_cmd_fixtures)

    for study in STUDY_IDS:
        sp = sub.add_parser(study, help=_study_help(study), description=_study_help(study))
        mod = cli_module(study)
        if mod is None:
            sp.set_defaults(func=_not_implemented(study))
            add_common(sp)
            continue
        _add_study_steps(_subcommands(sp, "step", "STEP"), study, mod)
    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse and dispatch; user errors become one line on stderr and exit status 2."""
    prepare_task_environment()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", False))
    set_threads(getattr(args, "threads", None))
    try:
        return int(args.func(args) or 0)
    except TxreproError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


def study_main(study: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of `bin/<study>.py`."""
    return run(build_study_parser(study), argv)


def build_report_parser(prog: str = "report.py") -> argparse.ArgumentParser:
    """The parser of `bin/report.py`."""
    parser = StrictParser(prog=prog, description="Build the txrepro report, or mark a study as not computed.")
    parser.add_argument("--version", action="version", version=f"txrepro {__version__}")
    add_report_steps(_subcommands(parser, "step", "STEP"), add_common)
    return parser


def report_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `bin/report.py`."""
    return run(build_report_parser(), argv)
