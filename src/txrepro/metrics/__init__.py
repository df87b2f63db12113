"""Metric code shared by studies and the metrics.tsv contract."""

from txrepro.metrics.table import (
    METRICS_COLUMNS,
    MetricRow,
    metrics_frame,
    not_computed,
    read_metrics,
    write_metrics,
)

__all__ = ["METRICS_COLUMNS", "MetricRow", "metrics_frame", "not_computed", "read_metrics", "write_metrics"]
