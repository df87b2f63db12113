"""One set of drugseq parameters for both front ends: nextflow.config, conf/test.config, ext.args,
the CLI and `txrepro reproduce` agree on names and defaults."""

from __future__ import annotations

import dataclasses

import pytest

import nfstatic as nf
from conftest import REPO
from txrepro.studies.drugseq.params import AnalyseParams, TrainParams
from txrepro.studies.drugseq.pipeline import INPUT_PARAMS, TEST_PROFILE, params_for

FIELDS = {f.name: f.default for cls in (TrainParams, AnalyseParams) for f in dataclasses.fields(cls)}
NOT_PIPELINE_PARAMS = {"device", "attention"}  # the pipeline's global --device; `attention` is the benchmark's switch
PREPARE_ONLY = {"drugseq_legacy_lookup"}


def _nf_params(path: str) -> dict[str, object]:
    return {k: v for k, v in nf.config_params(REPO / path, REPO).items() if k.startswith("drugseq_")}


def test_nextflow_params_are_the_dataclass_fields_with_the_same_defaults():
    declared = _nf_params("nextflow.config")
    expected = {f"drugseq_{k}" for k in FIELDS if k not in NOT_PIPELINE_PARAMS} | set(INPUT_PARAMS) | PREPARE_ONLY
    assert set(declared) == expected
    for name, default in FIELDS.items():
        if name in NOT_PIPELINE_PARAMS:
            continue
        assert declared[f"drugseq_{name}"] == default, name


def test_test_profile_matches_reproduce():
    assert {k.removeprefix("drugseq_"): v for k, v in _nf_params("conf/test.config").items()} == TEST_PROFILE


def test_ext_args_pass_every_field():
    args = nf.ext_args_by_process(REPO, ["DRUGSEQ_TRAIN", "DRUGSEQ_ANALYSE"])
    for cls, process in ((TrainParams, "DRUGSEQ_TRAIN"), (AnalyseParams, "DRUGSEQ_ANALYSE")):
        for f in dataclasses.fields(cls):
            if f.name != "attention":
                assert f"--{f.name.replace('_', '-')}" in args[process], (process, f.name)


def test_command_line_strings_are_coerced():
    """Nextflow gives command-line params as strings; reproduce() reads the same keys."""
    p = params_for(TrainParams, {"drugseq_use_zscore": "false", "drugseq_epochs": "7", "drugseq_lr": "0.01"}, {})
    assert p.use_zscore is False and p.epochs == 7 and p.lr == 0.01
    assert params_for(TrainParams, {"drugseq_use_zscore": "true"}, {}).use_zscore is True
    assert params_for(TrainParams, {}, TEST_PROFILE).d_model == TEST_PROFILE["d_model"]
    from txrepro.errors import InputError

    with pytest.raises(InputError, match="drugseq_epochs"):
        params_for(TrainParams, {"drugseq_epochs": "many"}, {})
