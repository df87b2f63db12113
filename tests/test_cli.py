import pytest

from conftest import assert_one_line_error, run_cli
from txrepro import STUDY_IDS
from txrepro.errors import InputError, StudyNotImplemented
from txrepro.studies import parse_selection


def test_help_lists_every_study():
    res = run_cli(["--help"], check=True)
    for sid in STUDY_IDS:
        assert sid in res.stdout


def test_parse_selection():
    assert parse_selection("all", require_implemented=False) == list(STUDY_IDS)
    assert parse_selection("drugseq,age_clock", require_implemented=False) == ["age_clock", "drugseq"]
    with pytest.raises(InputError, match="'nope'"):
        parse_selection("vcc,nope", require_implemented=False)


def test_unimplemented_study_is_a_clear_error(monkeypatch):
    import txrepro.studies as st

    monkeypatch.setattr(st, "implemented_studies", lambda: ["vcc"])
    with pytest.raises(StudyNotImplemented, match="'drugseq' is not implemented"):
        st.parse_selection("drugseq")


def test_unknown_study_one_line(tmp_path):
    res = run_cli(["reproduce", "vcc,nonsense", "--outdir", str(tmp_path / "o")])
    assert_one_line_error(res, "--study", "nonsense")
    assert not (tmp_path / "o").exists()


def test_bad_params_file_one_line(tmp_path):
    p = tmp_path / "p.yml"
    p.write_text("- just\n- a list\n")
    res = run_cli(["reproduce", "all", "--outdir", str(tmp_path / "o"), "--params-file", str(p)])
    assert_one_line_error(res, "p.yml", "mapping")


def test_long_options_accept_either_spelling():
    """Step options are spelled `--a-b` in some studies and `--a_b` in others; both must work,
    and an unknown option must still fail (no abbreviations, no guessing)."""
    from txrepro.cli import build_study_parser

    vcc = build_study_parser("vcc")
    hyphen = vcc.parse_args(["prepare", "--input", "x.h5ad", "--outdir", "o", "--pert-col", "gene"])
    underscore = vcc.parse_args(["prepare", "--input", "x.h5ad", "--outdir", "o", "--pert_col=gene"])
    assert hyphen.pert_col == underscore.pert_col == "gene"
    age = build_study_parser("age_clock").parse_args(
        ["prepare", "--input", "a.h5ad", "--checkpoint", "c", "--out", "o", "--age-column", "years"])
    assert age.age_column == "years"
    with pytest.raises(SystemExit):
        vcc.parse_args(["prepare", "--input", "x.h5ad", "--outdir", "o", "--pert"])
