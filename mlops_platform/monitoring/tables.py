"""The monitoring tables of a model: their names, schemas and the values their rows are keyed by.

Each monitored model owns its tables (``<usecase>_monitoring.<model>_drift_metrics`` and the quality and profile
tables beside it), so monitoring one model, or one use case, can never replace another's rows. Rows also carry
the use case and registered model, so a query across tables reads them without joins.

The drift and profile tables have the shape of Databricks data profiling's ``<table>_drift_metrics`` and
``<table>_profile_metrics``: a window (start, exclusive end, granularity), a slice (key and value, null for the
whole data), ``column_name`` and ``data_type``, and the metric columns a Databricks user queries under their names
there (``js_distance``, ``ks_test.pvalue``, ``wasserstein_distance``, ...; ``count``, ``num_nulls``, ``avg``, ...),
so the same queries and dashboards read ours and a data-profiling monitor's. Our verdict columns sit beside them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

import polars as pl
import pyarrow as pa

from mlops_platform import names
from mlops_platform.monitoring.day import PREDICTION_DRIFT_SHARE, DayResult
from mlops_platform.monitoring.drift import (
    CHI_SQUARE,
    JENSEN_SHANNON,
    KOLMOGOROV_SMIRNOV,
    WASSERSTEIN,
    DriftResult,
)


class TableReader(Protocol):
    """What monitoring's readers need of a warehouse (the ``Warehouse`` resource is one), so they stay plain."""

    def exists(self, schema: str, table: str) -> bool: ...

    def full_name(self, schema: str, table: str) -> str: ...

    def location(self, schema: str, table: str) -> str: ...

    def schema_of(self, schema: str, table: str) -> pa.Schema | None: ...

    def read(self, schema: str, table: str, *, columns: Sequence[str] | None = None,
             filters: Sequence[tuple[str, str, Any]] = ()) -> pa.Table: ...

DRIFT_METRICS = "drift_metrics"
QUALITY_METRICS = "quality_metrics"
PROFILE_METRICS = "profile_metrics"

# Data profiling's name for the row of a window that stands for the whole table: here, in the drift table, the
# share of drifted columns against the dataset threshold.
DATASET_ROW = ":table"
FEATURES_SCOPE = "features"
PREDICTION_SCOPE = "prediction"
SERVING_SCOPE = "serving"
# Drift against the model's training reference: data profiling's "BASELINE" drift (its "CONSECUTIVE" drift,
# window against the previous window, is not computed).
BASELINE_DRIFT = "BASELINE"
INPUT_LOG = "INPUT"

# A row's window is [window_start, window_end), as data profiling's ``window`` struct; dates here, since a window
# is whole days. ``window_end`` is the day after the monitored day, and the column a day's rewrite replaces by.
WINDOW_START = "window_start"
WINDOW_END = "window_end"

_WINDOW = [(WINDOW_START, pa.date32()), (WINDOW_END, pa.date32()), ("granularity", pa.large_string()),
           ("slice_key", pa.large_string()), ("slice_value", pa.large_string())]
_MODEL = [("usecase", pa.large_string()), ("model", pa.large_string()), ("model_version", pa.large_string())]
_TEST = pa.struct([("statistic", pa.float64()), ("pvalue", pa.float64())])
DRIFT_SCHEMA = pa.schema([
    *_WINDOW, ("drift_type", pa.large_string()), ("column_name", pa.large_string()), ("data_type", pa.large_string()),
    *_MODEL,
    # Data profiling's statistics, each filled when it is the column's method (the others stay null).
    ("js_distance", pa.float64()), ("ks_test", _TEST), ("chi_squared_test", _TEST),
    ("wasserstein_distance", pa.float64()), ("population_stability_index", pa.float64()),
    # Ours: which part of the traffic, the Evidently-named method, its score, threshold and verdict.
    ("scope", pa.large_string()), ("method", pa.large_string()), ("score", pa.float64()),
    ("threshold", pa.float64()), ("drifted", pa.bool_()),
])
PROFILE_SCHEMA = pa.schema([
    *_WINDOW, ("log_type", pa.large_string()), ("column_name", pa.large_string()), ("data_type", pa.large_string()),
    *_MODEL,
    ("count", pa.int64()), ("num_nulls", pa.int64()), ("percent_null", pa.float64()), ("avg", pa.float64()),
    ("stddev", pa.float64()), ("min", pa.float64()), ("max", pa.float64()), ("distinct_count", pa.int64()),
])
QUALITY_SCHEMA = pa.schema([
    *_WINDOW, *_MODEL, ("metric", pa.large_string()), ("value", pa.float64()), ("champion_value", pa.float64()),
    ("rows", pa.int64()),
])
SCHEMAS = {DRIFT_METRICS: DRIFT_SCHEMA, QUALITY_METRICS: QUALITY_SCHEMA, PROFILE_METRICS: PROFILE_SCHEMA}

# Where a method's score goes among data profiling's columns: (column, field of its test struct or None).
_STATISTIC = {JENSEN_SHANNON: ("js_distance", None), WASSERSTEIN: ("wasserstein_distance", None),
              KOLMOGOROV_SMIRNOV: ("ks_test", "pvalue"), CHI_SQUARE: ("chi_squared_test", "pvalue")}


def window_end(day: dt.date) -> dt.date:
    """The exclusive end of the window of a monitored ``day``: what its rows are written and replaced by."""
    return day + dt.timedelta(days=1)


def monitored_day() -> pl.Expr:
    """The monitored day of a row, as a polars expression (``window_end`` is the day after it)."""
    return (pl.col(WINDOW_END) - pl.duration(days=1)).alias("day")


def table(usecase: str, model: str, metrics: str) -> names.TableName:
    assert metrics in SCHEMAS, f"unknown monitoring table '{metrics}'"
    return names.monitoring_table(usecase, model, metrics)


def _drift_rows(key: dict, result: DriftResult, scope: str, drift_share: float) -> list[dict]:
    """One row per column, and one for the whole table: its share of drifted columns against ``drift_share``."""
    common = {**key, "drift_type": BASELINE_DRIFT, "scope": scope}
    rows = []
    for column in result.columns:
        row = {**common, "column_name": column.column, "data_type": column.kind, "method": column.method,
               "score": column.score, "threshold": column.threshold, "drifted": column.drifted}
        target, field = _STATISTIC.get(column.method, (None, None))
        if target is not None:
            row[target] = {"statistic": None, field: column.score} if field else column.score
        rows.append(row)
    rows.append({**common, "column_name": DATASET_ROW, "data_type": "table", "method": "share of drifted columns",
                 "score": result.share_drifted, "threshold": drift_share, "drifted": result.dataset_drifted})
    return rows


def _profile_rows(key: dict, result: DayResult) -> list[dict]:
    return [{**key, "log_type": INPUT_LOG, "column_name": row.pop("column"), "data_type": row.pop("kind"), **row}
            for row in (dict(row) for row in result.profile)]


def rows(usecase: str, registered_name: str, metric: str, drift_share: float, result: DayResult
         ) -> dict[str, list[dict]]:
    """A monitored day's rows of each monitoring table, by table."""
    days = (window_end(result.day) - result.window_start).days
    key = {WINDOW_START: result.window_start, WINDOW_END: window_end(result.day),
           "granularity": f"{days} day{'s' if days > 1 else ''}", "slice_key": None, "slice_value": None,
           "usecase": usecase, "model": registered_name, "model_version": result.model_version}
    drift = _drift_rows(key, result.drift, FEATURES_SCOPE, drift_share)
    drift += _drift_rows(key, result.prediction_drift, PREDICTION_SCOPE, PREDICTION_DRIFT_SHARE)
    if isinstance(result.serving, DriftResult):
        drift += _drift_rows(key, result.serving, SERVING_SCOPE, drift_share)
    return {
        DRIFT_METRICS: drift,
        QUALITY_METRICS: [{**key, "metric": metric, "value": result.quality, "champion_value": result.champion_quality,
                           "rows": result.rows}],
        PROFILE_METRICS: _profile_rows(key, result),
    }
