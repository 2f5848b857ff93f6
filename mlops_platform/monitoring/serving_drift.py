"""The served traffic as monitoring sees it: one row per scored record of the inference table, by day.

A request's day is the UTC date of its timestamp: the endpoint logs when it answered, which is when the model's
inputs were what they were. Only answered requests (status 200) of the monitored registered model count; each of
their records contributes the features the model scored (online-store values and fallbacks included), exactly
as logged by ``mlops_platform.serving.inference_log``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_platform.ml.scoring import feature_frame
from mlops_platform.monitoring.drift import DriftResult, detect_drift
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.serving.inference_log import DEFAULT_SCHEMA, DEFAULT_TABLE
from mlops_platform.settings import ModelConfig

OK_STATUS = 200
DAY = "day"
SERVED_VERSION = "served_model_version"


def served_records(warehouse: Warehouse, registered_name: str, first: dt.date, last: dt.date,
                   features: Sequence[str]) -> pd.DataFrame | None:
    """Records scored for ``registered_name`` from ``first`` to ``last`` with their day, served version and the
    logged ``features`` (columns the endpoint does not log are left out); None when the table does not exist."""
    if not warehouse.exists(DEFAULT_SCHEMA, DEFAULT_TABLE):
        return None
    start = dt.datetime.combine(first, dt.time(), dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC)
    rows = warehouse.read(
        DEFAULT_SCHEMA, DEFAULT_TABLE, columns=["timestamp", "model_name", "model_version", "status_code", "features"],
        filters=[("timestamp", ">=", pa.scalar(start, pa.timestamp("us", tz="UTC"))),
                 ("timestamp", "<", pa.scalar(end, pa.timestamp("us", tz="UTC")))],
    )
    rows = rows.filter(pc.and_(pc.and_(pc.equal(rows["model_name"], registered_name),
                                       pc.equal(rows["status_code"], OK_STATUS)),
                               pc.is_valid(rows["features"])))
    records = []
    for stamp, version, logged in zip(rows["timestamp"].to_pylist(), rows["model_version"].to_pylist(),
                                      rows["features"].to_pylist(), strict=True):
        day = stamp.astimezone(dt.UTC).date()
        records += [{DAY: day, SERVED_VERSION: version, **record} for record in orjson.loads(logged)]
    frame = pd.DataFrame.from_records(records, columns=None if records else [DAY, SERVED_VERSION])
    present = [column for column in features if column in frame.columns]
    return frame[[DAY, SERVED_VERSION, *present]]


def serving_drift(served: pd.DataFrame | None, day: dt.date, reference: pd.DataFrame, config: ModelConfig,
                  numerical: Sequence[str], categorical: Sequence[str], *, threshold: float | None,
                  drift_share: float) -> DriftResult | str:
    """The day's served records (from :func:`served_records`) against ``reference``, the same typed training
    reference the batch scope uses, on the features the endpoint logs; or why there is nothing to compare."""
    if served is None:
        return f"skipped: no {DEFAULT_SCHEMA}.{DEFAULT_TABLE} table"
    today = served[served[DAY] == day]
    if today.empty:
        return f"skipped: no served requests on {day.isoformat()}"
    logged = [column for column in reference.columns if column in today.columns]
    if not logged:
        return "skipped: the endpoint logs none of the model's features"
    return detect_drift(reference[logged], feature_frame(today, config, logged),
                        numerical=[c for c in numerical if c in logged],
                        categorical=[c for c in categorical if c in logged], threshold=threshold,
                        drift_share=drift_share)
