"""Static checks of every Nextflow file (we cannot run Nextflow here), and proof that each rule
fails on a broken file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import nfstatic as nf
from conftest import REPO


def test_every_file_parses():
    assert nf.parse_problems(REPO) == []


def test_includes_resolve():
    assert nf.include_problems(REPO) == []


def test_processes_have_label_pinned_container_stub_versions():
    assert nf.process_problems(REPO) == []


def test_bin_scripts_exist_and_accept_the_options_processes_pass():
    assert nf.bin_script_problems(REPO) == []


def test_params_are_in_the_schema():
    assert nf.param_problems(REPO) == []


def test_boolean_params_survive_command_line_strings():
    assert nf.boolean_param_problems(REPO) == []


@pytest.mark.parametrize("profile", ["conf/test.config", "conf/test_full.config"])
@pytest.mark.parametrize("as_cli_strings", [False, True])
def test_profile_params_validate_against_schema(profile, as_cli_strings):
    assert nf.schema_validation_problems(REPO, profile, as_cli_strings=as_cli_strings) == []


def test_every_study_process_has_a_module_and_bin_script():
    for module in (REPO / "modules").glob("*.nf"):
        study = module.stem
        if study == "report":
            continue
        assert (REPO / "bin" / f"{study}.py").is_file(), f"modules/{study}.nf without bin/{study}.py"
        assert (REPO / "conf" / "modules" / f"{study}.config").is_file(), f"modules/{study}.nf without conf/modules/{study}.config"


# ----------------------------------------------------------------------------- broken files


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    """A copy of the pipeline's Nextflow layer to break."""
    for name in ("main.nf", "nextflow.config", "nextflow_schema.json"):
        shutil.copy2(REPO / name, tmp_path / name)
    for d in ("conf", "modules", "bin"):
        shutil.copytree(REPO / d, tmp_path / d)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_clean_copy_passes(mini):
    for rule in (nf.parse_problems, nf.include_problems, nf.process_problems, nf.bin_script_problems, nf.param_problems, nf.boolean_param_problems):
        assert rule(mini) == [], rule.__name__


def test_broken_nf_file_fails_to_parse(mini):
    (mini / "modules" / "report.nf").write_text((mini / "modules" / "report.nf").read_text() + "\nworkflow BROKEN {\n  FOO(\n}\n")
    assert any("report.nf: does not parse" in p for p in nf.parse_problems(mini))


def test_broken_config_fails_to_parse(mini):
    (mini / "conf" / "base.config").write_text("process {\n  cpus = \n")
    assert any("base.config: does not parse" in p for p in nf.parse_problems(mini))


def test_unresolved_include(mini):
    _edit(mini / "main.nf", "from './modules/report'", "from './modules/nowhere'")
    assert any("does not resolve" in p for p in nf.include_problems(mini))


def test_include_of_undefined_process(mini):
    _edit(mini / "main.nf", "include { REPORT; STUDY_NOT_COMPUTED }", "include { REPORT; NO_SUCH_PROCESS }")
    assert any("'NO_SUCH_PROCESS' is not defined" in p for p in nf.include_problems(mini))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    label 'process_low'\n    container 'ghcr.io/txrepro/txrepro-report:0.1.0'\n\n    input:\n    path(metrics", "    container 'ghcr.io/txrepro/txrepro-report:0.1.0'\n\n    input:\n    path(metrics", "exactly one of process_low"),
        ("container 'ghcr.io/txrepro/txrepro-report:0.1.0'\n\n    input:\n    path(metrics", "container 'ghcr.io/txrepro/txrepro-report:latest'\n\n    input:\n    path(metrics", "'latest' tag"),
        ("container 'ghcr.io/txrepro/txrepro-report:0.1.0'\n\n    input:\n    path(metrics", "container 'ghcr.io/txrepro/txrepro-report:0.0.9'\n\n    input:\n    path(metrics", "neither digest-pinned nor tagged"),
        ("container 'ghcr.io/txrepro/txrepro-report:0.1.0'\n\n    input:\n    path(metrics", "container 'txrepro-report'\n\n    input:\n    path(metrics", "not of the form"),
        ("    tag \"${studies}\"\n", "", "needs a tag"),
        ("    stub:\n    \"\"\"\n    mkdir -p report/figures", "    \"\"\"\n    mkdir -p report/figures", "needs a stub"),
        ("topic: versions, emit: versions\n\n    script:\n    \"\"\"\n    report.py not-computed", "emit: versions\n\n    script:\n    \"\"\"\n    report.py not-computed", "`versions` topic"),
        ("    input:\n    val(study)\n", "    input:\n    val(study)\n    val(x) // ${params.outdir}\n    path(y, stageAs: \"${params.outdir}\")\n", "reads params"),
    ],
)
def test_process_rules_fail_on_broken_process(mini, old, new, expected):
    _edit(mini / "modules" / "report.nf", old, new)
    assert any(expected in p for p in nf.process_problems(mini)), nf.process_problems(mini)


def test_digest_pinned_container_passes():
    assert nf.container_problem("ghcr.io/txrepro/txrepro-vcc:0.1.0@sha256:" + "a" * 64, "0.2.0") is None
    assert nf.container_problem("ghcr.io/txrepro/txrepro-vcc:0.1.0@sha256:abc", "0.1.0") is not None


def test_missing_bin_script(mini):
    (mini / "bin" / "report.py").unlink()
    assert any("bin/report.py does not exist" in p for p in nf.bin_script_problems(mini))


def test_bin_script_not_executable(mini):
    (mini / "bin" / "report.py").chmod(0o644)
    assert any("not executable" in p for p in nf.bin_script_problems(mini))


def test_option_the_parser_rejects(mini):
    _edit(mini / "modules" / "report.nf", "--outdir report \\\\", "--outdir report --no-such-option \\\\")
    assert any("rejects the options" in p and "--no-such-option" in p for p in nf.bin_script_problems(mini))


def test_abbreviated_option_is_rejected(mini):
    _edit(mini / "modules" / "report.nf", "--outdir report \\\\", "--outd report \\\\")
    assert any("rejects the options" in p for p in nf.bin_script_problems(mini))


def test_literal_choice_the_parser_rejects(mini):
    _edit(mini / "modules" / "report.nf", "--study ${study}", "--study not_a_study")
    assert any("rejects the options" in p and "not_a_study" in p for p in nf.bin_script_problems(mini))


def test_ext_args_option_the_parser_rejects(mini):
    _edit(
        mini / "conf" / "modules.config",
        "    withName: 'REPORT' {\n",
        "    withName: 'REPORT' {\n        ext.args = { params.study == 'all' ? '--no-such-flag' : '' }\n",
    )
    assert any("--no-such-flag" in p for p in nf.bin_script_problems(mini))


def test_param_missing_from_schema(mini):
    _edit(mini / "nextflow.config", "    device            = 'auto'\n", "    device            = 'auto'\n    undocumented      = 3\n")
    assert any("'undocumented' is not in nextflow_schema.json" in p for p in nf.param_problems(mini))


def test_param_read_but_not_declared(mini):
    _edit(mini / "main.nf", "def studies = selectStudies(params.study.toString()", "def studies = selectStudies(params.stduy.toString()")
    assert any("params.stduy is not in nextflow_schema.json" in p for p in nf.param_problems(mini))


def test_schema_property_without_description(mini):
    schema = json.loads((mini / "nextflow_schema.json").read_text())
    del schema["$defs"]["run_options"]["properties"]["device"]["description"]
    (mini / "nextflow_schema.json").write_text(json.dumps(schema))
    assert any("'device' has no description" in p for p in nf.param_problems(mini))


def test_boolean_read_without_coercion(mini):
    _edit(mini / "main.nf", "def use_fixtures = asBoolean('use_fixtures', params.use_fixtures)", "def use_fixtures = params.use_fixtures")
    assert any("asBoolean('use_fixtures'" in p for p in nf.boolean_param_problems(mini))


def test_boolean_in_config_closure_without_string_compare(mini):
    _edit(mini / "conf" / "modules.config", "    withName: 'REPORT' {\n", "    withName: 'REPORT' {\n        ext.args = { params.use_fixtures ? '--no-html' : '' }\n")
    assert any("params.use_fixtures.toString() == 'true'" in p for p in nf.boolean_param_problems(mini))


def test_test_profile_invalid_against_schema(mini):
    _edit(mini / "conf" / "test.config", "    study        = 'all'", "    study        = 'all,nonsense'")
    assert any("study" in p for p in nf.schema_validation_problems(mini, "conf/test.config"))


def test_boolean_schema_must_accept_cli_strings(mini):
    schema = json.loads((mini / "nextflow_schema.json").read_text())
    prop = schema["$defs"]["run_options"]["properties"]["use_fixtures"]
    prop["type"] = "boolean"
    prop.pop("enum")
    (mini / "nextflow_schema.json").write_text(json.dumps(schema))
    assert any("use_fixtures" in p for p in nf.boolean_param_problems(mini))
    assert any("use_fixtures" in p for p in nf.schema_validation_problems(mini, "conf/test.config", as_cli_strings=True))


# ----------------------------------------------------------------------------- nf-test files


def nf_test_problems(root: Path) -> list[str]:
    """Every module has an nf-test file naming each of its processes, with a real and a stub test."""
    problems = []
    if not (root / "nf-test.config").is_file():
        problems.append("nf-test.config is missing")
    if not (root / "tests" / "nf-test" / "main.nf.test").is_file():
        problems.append("tests/nf-test/main.nf.test (pipeline test) is missing")
    tests = {p: p.read_text() for p in (root / "tests" / "nf-test").glob("**/*.nf.test")}
    for f in nf.nf_files(root):
        if f.name == "main.nf":
            continue
        for block in nf.process_blocks(f):
            hits = [t for t, text in tests.items() if f'process "{block.name}"' in text]
            if not hits:
                problems.append(f"{f.relative_to(root)}: process {block.name} has no nf-test (process \"{block.name}\")")
                continue
            text = tests[hits[0]]
            if 'options "-stub"' not in text:
                problems.append(f"{hits[0].relative_to(root)}: no stub test")
            if text.count("test(") < 2:
                problems.append(f"{hits[0].relative_to(root)}: needs a real test and a stub test")
    return problems


def test_every_process_has_nf_tests():
    assert nf_test_problems(REPO) == []


def test_process_without_nf_test_is_reported(tmp_path):
    shutil.copytree(REPO / "modules", tmp_path / "modules")
    shutil.copytree(REPO / "tests" / "nf-test", tmp_path / "tests" / "nf-test")
    shutil.copy2(REPO / "nf-test.config", tmp_path / "nf-test.config")
    (tmp_path / "tests" / "nf-test" / "modules" / "study_not_computed.nf.test").unlink()
    assert any("STUDY_NOT_COMPUTED has no nf-test" in p for p in nf_test_problems(tmp_path))
