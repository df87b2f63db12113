"""Static checks of the Nextflow layer, for machines that cannot run Nextflow.

Each rule is a function returning a list of problems (strings naming the file and what is wrong),
so a test can feed it a broken file and see it fail. reftrace parses the files and exposes includes,
params and process directives; it does not expose input/output/script/stub blocks, so those are
read with a small parser for the restricted style our modules use (docs/nextflow_conventions.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import reftrace

RESOURCE_LABELS = ("process_low", "process_medium", "process_high")
EXTRA_LABELS = ("process_gpu",)
# REPORT consumes the `versions` topic, so it cannot also send to it (it would wait on itself).
VERSIONS_TOPIC_EXEMPT = ("REPORT",)
PLACEHOLDER = "PLACEHOLDER"
PINNED_IMAGE = re.compile(r"^(?P<repo>[a-z0-9][a-z0-9._/-]*):(?P<tag>[A-Za-z0-9._-]+)(?:@sha256:(?P<digest>[0-9a-f]{64}))?$")


# --------------------------------------------------------------------------- files


def nf_files(root: Path) -> list[Path]:
    files = [root / "main.nf"] if (root / "main.nf").exists() else []
    return files + sorted((root / "modules").glob("**/*.nf"))


def config_files(root: Path) -> list[Path]:
    files = [root / "nextflow.config"] if (root / "nextflow.config").exists() else []
    files += sorted((root / "conf").glob("**/*.config"))
    if (root / "tests" / "nextflow.config").exists():
        files.append(root / "tests" / "nextflow.config")
    return files


def manifest_version(root: Path) -> str | None:
    text = (root / "nextflow.config").read_text() if (root / "nextflow.config").exists() else ""
    m = re.search(r"manifest\s*\{[^}]*?\bversion\s*=\s*['\"]([^'\"]+)['\"]", text, re.S)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- a small Groovy reader


def strip_comments(text: str) -> str:
    """Blank out // and /* */ comments outside strings, keeping offsets and line numbers."""
    out = list(text)
    i, n = 0, len(text)
    quote: str | None = None
    while i < n:
        c = text[i]
        if quote:
            if text.startswith(quote, i) and (len(quote) == 3 or text[i - 1] != "\\"):
                i += len(quote)
                quote = None
                continue
            i += 1
            continue
        if text.startswith('"""', i) or text.startswith("'''", i):
            quote = text[i : i + 3]
            i += 3
            continue
        if c in "'\"":
            quote = c
            i += 1
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if out[k] != "\n":
                    out[k] = " "
            i = j
            continue
        i += 1
    return "".join(out)


def matching_brace(text: str, open_at: int) -> int:
    """Index of the brace closing the one at `open_at`, skipping strings (comments already blank)."""
    depth = 0
    i, n = open_at, len(text)
    quote: str | None = None
    while i < n:
        if quote:
            if text.startswith(quote, i) and (len(quote) == 3 or text[i - 1] != "\\"):
                i += len(quote)
                quote = None
                continue
            i += 1
            continue
        if text.startswith('"""', i) or text.startswith("'''", i):
            quote = text[i : i + 3]
            i += 3
            continue
        c = text[i]
        if c in "'\"":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unbalanced braces")


SECTION = re.compile(r"^\s*(input|output|when|script|shell|exec|stub):\s*$", re.M)


@dataclass
class ProcessBlock:
    name: str
    file: Path
    line: int
    body: str
    sections: dict[str, str] = field(default_factory=dict)


def process_blocks(path: Path) -> list[ProcessBlock]:
    text = strip_comments(path.read_text())
    blocks = []
    for m in re.finditer(r"^[ \t]*process\s+([A-Za-z_][A-Za-z0-9_]*)\s*\{", text, re.M):
        open_at = m.end() - 1
        body = text[open_at + 1 : matching_brace(text, open_at)]
        marks = list(SECTION.finditer(body))
        sections = {}
        for k, sm in enumerate(marks):
            end = marks[k + 1].start() if k + 1 < len(marks) else len(body)
            sections[sm.group(1)] = body[sm.end() : end]
        blocks.append(ProcessBlock(m.group(1), path, text.count("\n", 0, m.start()) + 1, body, sections))
    return blocks


def triple_quoted(section: str) -> str | None:
    m = re.search(r'"""(.*?)"""', section, re.S)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- rule: parse


def parse_problems(root: Path) -> list[str]:
    problems = []
    for f in nf_files(root):
        res = reftrace.Module.from_file(str(f))
        if isinstance(res, reftrace.ParseError):
            problems.append(f"{f.relative_to(root)}: does not parse ({res.error.split(':', 1)[-1].strip()[:120]})")
    for f in config_files(root):
        res = reftrace.ConfigFile.from_file(str(f))
        if res.error is not None:
            problems.append(f"{f.relative_to(root)}: does not parse")
    return problems


def _module(path: Path):
    res = reftrace.Module.from_file(str(path))
    return None if isinstance(res, reftrace.ParseError) else res


# --------------------------------------------------------------------------- rule: includes


def include_problems(root: Path) -> list[str]:
    problems = []
    for f in nf_files(root):
        mod = _module(f)
        if mod is None:
            continue
        for inc in mod.includes:
            src = inc.from_module
            if src.startswith("plugin/"):
                continue
            target = (f.parent / src).resolve()
            candidates = [target.with_suffix(".nf") if target.suffix != ".nf" else target, target / "main.nf"]
            hit = next((c for c in candidates if c.is_file()), None)
            if hit is None:
                problems.append(f"{f.relative_to(root)}:{inc.line}: include from '{src}' does not resolve to a file")
                continue
            tmod = _module(hit)
            if tmod is None:
                continue
            defined = {p.name for p in tmod.processes} | {w.name for w in tmod.workflows}
            for item in inc.items:
                if item.name not in defined:
                    problems.append(f"{f.relative_to(root)}:{inc.line}: '{item.name}' is not defined in {hit.relative_to(root)}")
    return problems


# --------------------------------------------------------------------------- rule: processes


def container_problem(image: str, version: str | None) -> str | None:
    m = PINNED_IMAGE.match(image)
    if not m:
        return f"container '{image}' is not of the form registry/name:tag[@sha256:digest]"
    if m.group("tag") == "latest":
        return f"container '{image}' uses the 'latest' tag"
    if not m.group("digest") and version and m.group("tag") != version:
        return f"container '{image}' is neither digest-pinned nor tagged with the pipeline version {version}"
    return None


def process_problems(root: Path) -> list[str]:
    version = manifest_version(root)
    problems = []
    for f in nf_files(root):
        mod = _module(f)
        if mod is None:
            continue
        rel = f.relative_to(root)
        blocks = {b.name: b for b in process_blocks(f)}
        for p in mod.processes:
            where = f"{rel}: process {p.name}"
            labels = [lb.value for lb in p.labels]
            resource = [lb for lb in labels if lb in RESOURCE_LABELS]
            if len(resource) != 1:
                problems.append(f"{where}: needs exactly one of {', '.join(RESOURCE_LABELS)} (has {labels})")
            unknown = [lb for lb in labels if lb not in RESOURCE_LABELS + EXTRA_LABELS]
            if unknown:
                problems.append(f"{where}: unknown label(s) {unknown}")
            if not p.tags:
                problems.append(f"{where}: needs a tag")
            if len(p.containers) != 1:
                problems.append(f"{where}: needs exactly one container directive")
            else:
                c = p.containers[0]
                image = c.simple_name or c.true_name or ""
                if not c.simple_name:
                    problems.append(f"{where}: container must be a plain pinned string, not an expression")
                elif (msg := container_problem(image, version)) is not None:
                    problems.append(f"{where}: {msg}")
            block = blocks.get(p.name)
            if block is None:
                problems.append(f"{where}: body could not be read")
                continue
            if not (block.sections.get("stub") or "").strip():
                problems.append(f"{where}: needs a stub: block that creates the declared outputs")
            if not triple_quoted(block.sections.get("script", "")):
                problems.append(f"{where}: needs a script: block with one command in a triple-quoted string")
            if p.name not in VERSIONS_TOPIC_EXEMPT and "topic: versions" not in block.sections.get("output", ""):
                problems.append(f"{where}: needs a versions output sent to the `versions` topic")
            if "params." in block.body:
                problems.append(f"{where}: reads params (pass them in from main.nf, or use ext.args)")
    return problems


# --------------------------------------------------------------------------- rule: bin scripts


ParserFor = Callable[[str], argparse.ArgumentParser | None]


def default_parser_for(script: str) -> argparse.ArgumentParser | None:
    """The real argument parser behind bin/<script> (what the executable runs)."""
    from txrepro import STUDY_IDS
    from txrepro.cli import build_report_parser, build_study_parser

    stem = Path(script).stem
    if stem == "report":
        return build_report_parser()
    if stem in STUDY_IDS:
        return build_study_parser(stem)
    return None


def _permissive(parser: argparse.ArgumentParser) -> None:
    """Let PLACEHOLDER (a Nextflow interpolation) pass type and choices checks; keep the rest real."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _permissive(sub)
            continue
        if action.type is not None:
            original = action.type
            action.type = lambda v, _t=original: v if PLACEHOLDER in v else _t(v)
        if action.choices is not None and not isinstance(action.choices, dict):
            action.choices = list(action.choices) + [PLACEHOLDER]


def command_tokens(script: str, ext_args: str = "") -> list[str]:
    """Shell words of a process script, with interpolations replaced by placeholders."""
    text = script.replace("\\\\\n", " ").replace("\\\n", " ")
    text = re.sub(r"\$\{\s*task\.ext\.args\s*\?:\s*''\s*\}", lambda _: ext_args, text)
    text = re.sub(r"\$\{[^}]*\}", PLACEHOLDER, text)
    text = re.sub(r"\$[A-Za-z_]\w*", PLACEHOLDER, text)
    return shlex.split(text, comments=True)


def _bin_call(tokens: list[str]) -> tuple[str, list[str]] | None:
    for i, tok in enumerate(tokens):
        if tok.endswith(".py") and "/" not in tok:
            end = next((j for j in range(i + 1, len(tokens)) if tokens[j] in ("&&", "||", ";", "|")), len(tokens))
            return tok, tokens[i + 1 : end]
    return None


def check_arguments(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    _permissive(parser)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            if exc.code:
                return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exc.code}"
    return None


def ext_args_by_process(root: Path, names: Iterable[str]) -> dict[str, str]:
    """String literals of every ext.args that applies to each process, joined (both ternary branches)."""
    names = list(names)
    out: dict[str, list[str]] = {n: [] for n in names}
    for f in config_files(root):
        text = strip_comments(f.read_text())
        for m in re.finditer(r"withName\s*:\s*(['\"]?)([^'\"{]+?)\1\s*\{", text):
            open_at = m.end() - 1
            block = text[open_at + 1 : matching_brace(text, open_at)]
            am = re.search(r"ext\.args\s*=\s*(.+?)(?=\n\s*[A-Za-z_.]+\s*=|\Z)", block, re.S)
            if not am:
                continue
            literals = re.findall(r"'([^']*)'|\"([^\"]*)\"", am.group(1))
            value = " ".join(a or b for a, b in literals)
            pattern = m.group(2).strip()
            for name in names:
                if any(re.fullmatch(alt.strip(), name) for alt in pattern.split("|")):
                    out[name].append(value)
    return {k: " ".join(v) for k, v in out.items()}


def bin_script_problems(root: Path, parser_for: ParserFor = default_parser_for) -> list[str]:
    problems = []
    blocks = [b for f in nf_files(root) for b in process_blocks(f)]
    ext_args = ext_args_by_process(root, [b.name for b in blocks])
    for b in blocks:
        where = f"{b.file.relative_to(root)}: process {b.name}"
        script = triple_quoted(b.sections.get("script", ""))
        if not script:
            continue
        call = _bin_call(command_tokens(script, ext_args.get(b.name, "")))
        if call is None:
            problems.append(f"{where}: script calls no bin/ script")
            continue
        name, args = call
        exe = root / "bin" / name
        if not exe.is_file():
            problems.append(f"{where}: bin/{name} does not exist")
            continue
        if not os.access(exe, os.X_OK):
            problems.append(f"{where}: bin/{name} is not executable")
        first = exe.read_text().splitlines()[:1]
        if not first or not first[0].startswith("#!"):
            problems.append(f"{where}: bin/{name} has no shebang line")
        parser = parser_for(name)
        if parser is None:
            problems.append(f"{where}: no argument parser known for bin/{name}")
            continue
        if (msg := check_arguments(parser, args)) is not None:
            problems.append(f"{where}: bin/{name} rejects the options the process passes: {msg}")
    return problems


# --------------------------------------------------------------------------- rule: params and schema


def load_schema(root: Path) -> dict:
    return json.loads((root / "nextflow_schema.json").read_text())


def schema_properties(schema: dict) -> dict[str, dict]:
    props = dict(schema.get("properties", {}))
    for group in schema.get("$defs", {}).values():
        props.update(group.get("properties", {}))
    return props


def _literal(value: str, root: Path) -> object:
    value = value.strip().rstrip(",")
    if value == "null":
        return None
    if value in ("true", "false"):
        return value == "true"
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d*\.\d+(e-?\d+)?", value):
        return float(value)
    m = re.fullmatch(r"'(.*)'|\"(.*)\"", value)
    if m:
        s = m.group(1) if m.group(1) is not None else m.group(2)
        return s.replace("${projectDir}", str(root))
    return value  # an expression: kept as text


def config_params(path: Path, root: Path) -> dict[str, object]:
    """`name = value` pairs of every `params { }` block of a config file."""
    text = strip_comments(path.read_text())
    out: dict[str, object] = {}
    for m in re.finditer(r"\bparams\s*\{", text):
        open_at = m.end() - 1
        block = text[open_at + 1 : matching_brace(text, open_at)]
        for line in block.splitlines():
            lm = re.match(r"\s*([A-Za-z_]\w*)\s*=\s*(.+?)\s*$", line)
            if lm:
                out[lm.group(1)] = _literal(lm.group(2), root)
    for m in re.finditer(r"^\s*params\.([A-Za-z_]\w*)\s*=\s*(.+?)\s*$", text, re.M):
        out[m.group(1)] = _literal(m.group(2), root)
    return out


def referenced_params(path: Path) -> set[str]:
    """Names read as `params.<name>`: not assignments, not Map methods (`params.collect {`), and not
    inside single-quoted strings (which Groovy never interpolates)."""
    text = strip_comments(path.read_text())
    text = re.sub(r"^\s*params\.[A-Za-z_]\w*\s*=.*$", "", text, flags=re.M)
    text = re.sub(r"'[^'\n]*'", "''", text)
    return set(re.findall(r"\bparams\.([A-Za-z_]\w*)\b(?!\s*[({])", text))


def param_problems(root: Path) -> list[str]:
    schema = load_schema(root)
    props = schema_properties(schema)
    problems = []
    for name, prop in props.items():
        if "type" not in prop:
            problems.append(f"nextflow_schema.json: '{name}' has no type")
        if not str(prop.get("description", "")).strip():
            problems.append(f"nextflow_schema.json: '{name}' has no description")
    defaults = config_params(root / "nextflow.config", root)
    for name, value in defaults.items():
        if name not in props:
            problems.append(f"nextflow.config: param '{name}' is not in nextflow_schema.json")
        elif value is not None and "default" not in props[name]:
            problems.append(f"nextflow_schema.json: '{name}' has no default (nextflow.config sets {value!r})")
    for f in config_files(root):
        for name in config_params(f, root):
            if name not in props:
                problems.append(f"{f.relative_to(root)}: param '{name}' is not in nextflow_schema.json")
    for f in nf_files(root) + config_files(root):
        rel = f.relative_to(root)
        for name in sorted(referenced_params(f)):
            if name not in props:
                problems.append(f"{rel}: params.{name} is not in nextflow_schema.json")
        if rel.parts[0] == "modules" and referenced_params(f):
            problems.append(f"{rel}: modules must not read params (main.nf passes them in)")
    return problems


def _is_boolean(prop: dict) -> bool:
    t = prop.get("type")
    return t == "boolean" or (isinstance(t, list) and "boolean" in t)


def boolean_param_problems(root: Path) -> list[str]:
    """Booleans must survive the strict syntax's string-typed command line ('false' is truthy)."""
    props = schema_properties(load_schema(root))
    booleans = {n for n, p in props.items() if _is_boolean(p)}
    problems = []
    for n in sorted(booleans):
        t = props[n].get("type")
        if not (isinstance(t, list) and "string" in t):
            problems.append(f"nextflow_schema.json: boolean '{n}' must also accept the string 'true'/'false' the command line gives")
    for f in nf_files(root):
        text = strip_comments(f.read_text())
        for m in re.finditer(r"\bparams\.([A-Za-z_]\w*)", text):
            name = m.group(1)
            if name not in booleans:
                continue
            before = text[max(0, m.start() - 60) : m.start()]
            if not re.search(rf"asBoolean\(\s*'{name}'\s*,\s*$", before):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{f.relative_to(root)}:{line}: boolean params.{name} must be read through asBoolean('{name}', params.{name})")
    for f in config_files(root):
        text = strip_comments(f.read_text())
        text = re.sub(r"^\s*[A-Za-z_]\w*\s*=.*$", lambda m: m.group(0) if "params." in m.group(0) else "", text, flags=re.M)
        for m in re.finditer(r"\bparams\.([A-Za-z_]\w*)", text):
            name = m.group(1)
            if name in booleans and not text[m.end() :].lstrip().startswith(".toString() == 'true'"):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{f.relative_to(root)}:{line}: boolean params.{name} must be compared as params.{name}.toString() == 'true'")
    return problems


def profile_params(root: Path, profile_config: str) -> dict[str, object]:
    params = config_params(root / "nextflow.config", root)
    params.update(config_params(root / profile_config, root))
    return params


def schema_validation_problems(root: Path, profile_config: str, as_cli_strings: bool = False) -> list[str]:
    """Params of nextflow.config + a profile validate against the schema (optionally as CLI strings)."""
    import jsonschema

    schema = load_schema(root)
    jsonschema.Draft202012Validator.check_schema(schema)
    params = {k: v for k, v in profile_params(root, profile_config).items() if v is not None}
    if as_cli_strings:
        params = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}
    validator = jsonschema.Draft202012Validator(schema)
    label = f"{profile_config}{' (command-line strings)' if as_cli_strings else ''}"
    return [f"{label}: {'/'.join(map(str, e.absolute_path)) or 'params'}: {e.message}" for e in validator.iter_errors(params)]
