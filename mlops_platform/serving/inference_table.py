"""The inference table: one schema for the local endpoint's log and a Databricks AI Gateway inference table.

The local serving process writes the columns of a Databricks AI Gateway inference table (``request_date``,
``databricks_request_id``, ``client_request_id``, ``request_time``, ``status_code``, ``sampling_fraction``,
``execution_duration_ms``, ``request``, ``response``, ``served_entity_id``, ``logging_error_codes``,
``requester``), then its own where Databricks has none: the use case, the endpoint, the served model's registered
name and version, the precise latency, the features the model scored (store values and fallbacks included) and how
many records fell back. ``served_entity_id`` holds the served entity's name locally (Databricks: its id).

:func:`normalize` turns either table into one frame, which is all that serving drift
(``monitoring/serving_drift.py``) and ``mlops inference validate`` (``monitoring/analysis.py``) read: on a
Databricks table the model and version come from a served-entity mapping (``system.serving.served_entities`` or
the endpoint's config) and the features from the logged request itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from mlops_platform import names
from mlops_platform.serving.payload import RequestError, parse_records

if TYPE_CHECKING:
    import polars as pl

INFERENCE_SCHEMA, INFERENCE_TABLE = names.INFERENCE_LOG
OK_STATUS = 200

# The AI Gateway inference table's columns, in its order.
DATABRICKS_COLUMNS = (
    "request_date", "databricks_request_id", "client_request_id", "request_time", "status_code",
    "sampling_fraction", "execution_duration_ms", "request", "response", "served_entity_id",
    "logging_error_codes", "requester",
)
INFERENCE_TABLE_SCHEMA = pa.schema([
    pa.field("request_date", pa.date32(), nullable=False),
    pa.field("databricks_request_id", pa.string(), nullable=False),
    pa.field("client_request_id", pa.string()),
    pa.field("request_time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("status_code", pa.int32(), nullable=False),
    pa.field("sampling_fraction", pa.float64()),
    pa.field("execution_duration_ms", pa.int64()),
    pa.field("request", pa.string()),
    pa.field("response", pa.string()),
    pa.field("served_entity_id", pa.string()),
    pa.field("logging_error_codes", pa.list_(pa.string())),
    pa.field("requester", pa.string()),
    pa.field("usecase", pa.string()),
    pa.field("endpoint_name", pa.string(), nullable=False),
    pa.field("served_model_name", pa.string()),
    pa.field("served_model_version", pa.string()),
    pa.field("latency_ms", pa.float64()),
    # A JSON list with one object per record: the model inputs it was scored with.
    pa.field("features", pa.string()),
    pa.field("fallback_records", pa.int32()),
])


class InferenceRecord(NamedTuple):
    """One request as the request path hands it over; :func:`to_table` derives the remaining columns."""

    databricks_request_id: str
    client_request_id: str | None
    request_time_us: int  # microseconds since the epoch
    status_code: int
    latency_ms: float
    request: str | None
    response: str | None
    served_entity_id: str | None
    requester: str | None
    usecase: str | None
    endpoint_name: str
    served_model_name: str | None
    served_model_version: str | None
    features: str | None
    fallback_records: int


def json_objects(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as a JSON list of ``{name: value}`` objects (about a microsecond a record)."""
    return orjson.dumps([dict(zip(names, row, strict=True)) for row in rows], default=str).decode()


def to_table(records: Sequence[InferenceRecord] | Sequence[Sequence[Any]]) -> pa.Table:
    """Records (or their JSON arrays read back from the spool) as one Arrow table of the inference schema."""
    columns = list(zip(*records, strict=True)) if records else [[] for _ in InferenceRecord._fields]
    values = dict(zip(InferenceRecord._fields, columns, strict=True))
    count = len(records)
    micros = np.asarray(values.pop("request_time_us"), dtype=np.int64)
    times = pa.array(micros, pa.timestamp("us", tz="UTC"))
    latency = np.asarray(values["latency_ms"], dtype=np.float64)
    arrays = {
        "request_date": pa.array((micros // 86_400_000_000).astype(np.int32), pa.date32()),
        "request_time": times,
        "sampling_fraction": pa.array(np.ones(count), pa.float64()),
        "execution_duration_ms": pa.array(np.ceil(latency).astype(np.int64), pa.int64()),
        "logging_error_codes": pa.nulls(count, pa.list_(pa.string())),
    }
    for field in INFERENCE_TABLE_SCHEMA:
        if field.name not in arrays:
            arrays[field.name] = pa.array(values[field.name], type=field.type)
    return pa.Table.from_arrays([arrays[f.name] for f in INFERENCE_TABLE_SCHEMA], schema=INFERENCE_TABLE_SCHEMA)


# What a normalized table holds, whichever table it came from.
NORMALIZED = ("request_id", "client_request_id", "request_time", "day", "status_code", "latency_ms", "endpoint",
              "served_entity", "model_name", "model_version", "request", "features")


def normalize(table: pa.Table, *, endpoint: str | None = None,
              served_entities: Mapping[str, tuple[str, str]] | None = None) -> pl.DataFrame:
    """One row per logged request with the :data:`NORMALIZED` columns, from the local log or a Databricks table.

    A Databricks table belongs to one endpoint (``endpoint`` names it) and names served entities only:
    ``served_entities`` maps each ``served_entity_id`` to its (registered model, version). Its latency is
    ``execution_duration_ms``; its features are whatever the logged request carried.
    """
    # Imported here: the serving process writes this table and never reads it.
    import polars as pl

    missing = [c for c in ("databricks_request_id", "request_time", "status_code", "served_entity_id")
               if c not in table.column_names]
    if missing:
        raise ValueError(f"not an inference table: no column(s) {missing}; it has {table.column_names}")
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    local = "endpoint_name" in frame.columns
    mapping = dict(served_entities or {})
    entity = pl.col("served_entity_id")
    if local:
        model_name, model_version = pl.col("served_model_name"), pl.col("served_model_version")
        endpoint_column = pl.col("endpoint_name")
        latency = pl.col("latency_ms").fill_null(pl.col("execution_duration_ms").cast(pl.Float64))
        features = pl.col("features")
    else:
        model_name = entity.replace_strict({k: v[0] for k, v in mapping.items()}, default=None,
                                           return_dtype=pl.String)
        model_version = entity.replace_strict({k: str(v[1]) for k, v in mapping.items()}, default=None,
                                              return_dtype=pl.String)
        endpoint_column = pl.lit(endpoint, pl.String)
        latency = pl.col("execution_duration_ms").cast(pl.Float64)
        features = pl.lit(None, pl.String)
    request_time = pl.col("request_time").cast(pl.Datetime("us", "UTC"))
    return frame.select(
        pl.col("databricks_request_id").alias("request_id"),
        (pl.col("client_request_id") if "client_request_id" in frame.columns else pl.lit(None, pl.String))
        .alias("client_request_id"),
        request_time.alias("request_time"),
        request_time.dt.date().alias("day"),
        pl.col("status_code").cast(pl.Int64).alias("status_code"),
        latency.alias("latency_ms"),
        endpoint_column.alias("endpoint"),
        entity.alias("served_entity"),
        model_name.alias("model_name"),
        model_version.alias("model_version"),
        (pl.col("request") if "request" in frame.columns else pl.lit(None, pl.String)).alias("request"),
        features.alias("features"),
    )


DAY = "day"
SERVED_VERSION = "served_model_version"


def served_records(rows: pl.DataFrame, model_name: str, first: dt.date, last: dt.date,
                   features: Sequence[str]) -> pd.DataFrame:
    """Every record scored for ``model_name`` from ``first`` to ``last`` (answered requests only): its day, the
    served version and the ``features`` logged for it (the scored inputs locally, the request's fields on
    Databricks); columns the table does not hold are left out."""
    import polars as pl

    answered = rows.filter((pl.col("model_name") == model_name) & (pl.col("status_code") == OK_STATUS)
                           & pl.col("day").is_between(first, last))
    records: list[dict[str, Any]] = []
    for day, version, logged, request in answered.select("day", "model_version", "features", "request").iter_rows():
        for record in _records(logged, request):
            records.append({DAY: day, SERVED_VERSION: version, **record})
    frame = pd.DataFrame.from_records(records, columns=None if records else [DAY, SERVED_VERSION])
    present = [column for column in features if column in frame.columns]
    return frame[[DAY, SERVED_VERSION, *present]]


def _records(logged: str | None, request: str | None) -> list[dict[str, Any]]:
    if logged is not None:
        return orjson.loads(logged)
    if request is None:
        return []
    try:
        return parse_records(request.encode())
    except RequestError:
        return []
