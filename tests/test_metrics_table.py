import math

import numpy as np
import pandas as pd
import pytest

from txrepro.errors import InputError
from txrepro.metrics.table import MetricRow, metrics_frame, not_computed, read_metrics, write_metrics


def test_round_trip_keeps_full_precision(tmp_path):
    v = 0.1 + 0.2  # 0.30000000000000004: a lossy writer would print 0.3
    rows = [MetricRow("vcc", "d", "ridge", "test", "DES", v, 30, "project evaluator"), not_computed("vcc", "d", "state", "test", "DES", "no GPU")]
    path = write_metrics(rows, tmp_path / "metrics.tsv")
    back = read_metrics(path)
    assert back.loc[0, "value"] == v
    assert back.loc[0, "n"] == 30
    assert math.isnan(back.loc[1, "value"]) and back.loc[1, "notes"] == "not computed: no GPU"


def test_duplicate_keys_are_a_bug():
    rows = [MetricRow("vcc", "d", "m", "test", "DES", 0.1), MetricRow("vcc", "d", "m", "test", "DES", 0.2)]
    with pytest.raises(ValueError, match="duplicate"):
        metrics_frame(rows)


def test_unknown_study_and_tabs_rejected():
    with pytest.raises(ValueError):
        MetricRow("nope", "d", "m", "s", "x", 1.0)
    with pytest.raises(ValueError):
        MetricRow("vcc", "d", "m\tx", "s", "x", 1.0)


def test_silent_nan_rejected(tmp_path):
    p = tmp_path / "m.tsv"
    p.write_text("study\tdataset\tmodel\tsplit\tmetric\tvalue\tn\tnotes\nvcc\td\tm\ttest\tDES\t\t\t\n")
    with pytest.raises(InputError, match="not computed"):
        read_metrics(p)


def test_missing_column_names_file_and_column(tmp_path):
    p = tmp_path / "m.tsv"
    pd.DataFrame({"study": ["vcc"], "value": [1.0]}).to_csv(p, sep="\t", index=False)
    with pytest.raises(InputError) as e:
        read_metrics(p)
    assert str(p) in str(e.value) and "dataset" in str(e.value)


def test_infinite_value_rejected(tmp_path):
    df = metrics_frame([MetricRow("vcc", "d", "m", "test", "DES", 1.0)])
    df.loc[0, "value"] = np.inf
    with pytest.raises(InputError):
        write_metrics(df, tmp_path / "m.tsv")
    assert not (tmp_path / "m.tsv").exists()
