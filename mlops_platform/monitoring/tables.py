"""The monitoring tables of a model: their names, schemas and the values their rows are keyed by.

Each monitored model owns its tables (``<usecase>_monitoring.<model>_drift_metrics`` and the quality and profile
tables beside it), so monitoring one model, or one use case, can never replace another's rows. Rows also carry
the use case and registered model, so a query across tables reads them without joins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pyarrow as pa

from mlops_platform import names
from mlops_platform.monitoring.day import PREDICTION_DRIFT_SHARE, DayResult
from mlops_platform.monitoring.drift import DriftResult


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

# The row of a day's drift table that stands for the whole dataset: its share of drifted columns.
DATASET_ROW = "__dataset__"
FEATURES_SCOPE = "features"
PREDICTION_SCOPE = "prediction"
SERVING_SCOPE = "serving"
DAY = "day"

_KEY = [(DAY, pa.date32()), ("usecase", pa.large_string()), ("model", pa.large_string()),
        ("model_version", pa.large_string())]
DRIFT_SCHEMA = pa.schema([
    *_KEY, ("scope", pa.large_string()), ("column", pa.large_string()), ("method", pa.large_string()),
    ("score", pa.float64()), ("threshold", pa.float64()), ("drifted", pa.bool_()),
])
PROFILE_SCHEMA = pa.schema([
    *_KEY, ("column", pa.large_string()), ("kind", pa.large_string()), ("metric", pa.large_string()),
    ("value", pa.float64()),
])
QUALITY_SCHEMA = pa.schema([
    *_KEY, ("metric", pa.large_string()), ("value", pa.float64()), ("champion_value", pa.float64()),
    ("rows", pa.int64()),
])
SCHEMAS = {DRIFT_METRICS: DRIFT_SCHEMA, QUALITY_METRICS: QUALITY_SCHEMA, PROFILE_METRICS: PROFILE_SCHEMA}


def table(usecase: str, model: str, metrics: str) -> names.TableName:
    assert metrics in SCHEMAS, f"unknown monitoring table '{metrics}'"
    return names.monitoring_table(usecase, model, metrics)


def _drift_rows(key: dict, result: DriftResult, scope: str, drift_share: float) -> list[dict]:
    """One row per column, and one for the whole day: its share of drifted columns against ``drift_share``."""
    common = {**key, "scope": scope}
    rows = [{**common, **row} for row in result.to_rows()]
    rows.append({**common, "column": DATASET_ROW, "method": "share of drifted columns", "score": result.share_drifted,
                 "threshold": drift_share, "drifted": result.dataset_drifted})
    return rows


def rows(usecase: str, registered_name: str, metric: str, drift_share: float, result: DayResult
         ) -> dict[str, list[dict]]:
    """A monitored day's rows of each monitoring table, by table."""
    key = {DAY: result.day, "usecase": usecase, "model": registered_name, "model_version": result.model_version}
    drift = _drift_rows(key, result.drift, FEATURES_SCOPE, drift_share)
    drift += _drift_rows(key, result.prediction_drift, PREDICTION_SCOPE, PREDICTION_DRIFT_SHARE)
    if isinstance(result.serving, DriftResult):
        drift += _drift_rows(key, result.serving, SERVING_SCOPE, drift_share)
    return {
        DRIFT_METRICS: drift,
        QUALITY_METRICS: [{**key, "metric": metric, "value": result.quality, "champion_value": result.champion_quality,
                           "rows": result.rows}],
        PROFILE_METRICS: [{**key, **row} for row in result.profile],
    }
