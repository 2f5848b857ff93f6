"""Reading the monitoring tables back: drift per day over a range, and the health of the inference table.

What the ``mlops drift`` and ``mlops inference validate`` commands print; functions of any reader of the tables
(``tables.TableReader``: the warehouse resource is one), so this module imports nothing of Dagster.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import polars as pl

from mlops_platform.monitoring import tables
from mlops_platform.monitoring.tables import (
    DATASET_ROW,
    FEATURES_SCOPE,
    PREDICTION_SCOPE,
    SERVING_SCOPE,
    TableReader,
)
from mlops_platform.serving.inference_table import (
    INFERENCE_SCHEMA,
    INFERENCE_TABLE,
    INFERENCE_TABLE_SCHEMA,
    OK_STATUS,
    normalize,
)
from mlops_platform.storage.tables import schema_difference

LATENCY_PERCENTILES = (50, 95, 99)


def drift_by_day(warehouse: TableReader, usecase: str, model: str, first: dt.date, last: dt.date) -> list[dict]:
    """One entry per monitored day of a use case's ``model``: drift share and drifted columns of the batch
    features, prediction drift, drift share of the served traffic (None without requests) and quality."""
    drift_table = tables.table(usecase, model, tables.DRIFT_METRICS)
    quality_table = tables.table(usecase, model, tables.QUALITY_METRICS)
    if not warehouse.exists(*drift_table):
        raise FileNotFoundError(f"{warehouse.full_name(*drift_table)} does not exist at "
                                f"{warehouse.location(*drift_table)}: run `mlops monitoring refresh` first")

    def rows(table: tuple[str, str]) -> pl.DataFrame:
        # Read whole and filtered here: the tables are small (a row per day and column), and a filtered delta-rs
        # scan can abort the interpreter at exit (delta-io/delta-rs#2184), which a CLI reports as a crash.
        return pl.from_arrow(warehouse.read(*table)).with_columns(tables.monitored_day()).filter(
            pl.col("day").is_between(first, last))

    drift = rows(drift_table)
    quality = rows(quality_table) if warehouse.exists(*quality_table) else None
    summary = []
    for day in sorted(set(drift["day"].to_list())):
        today = drift.filter(pl.col("day") == day)

        def dataset(scope: str, rows: pl.DataFrame = today) -> dict | None:
            found = rows.filter((pl.col("scope") == scope) & (pl.col("column_name") == DATASET_ROW))
            return found.row(0, named=True) if found.height else None

        features, prediction, serving = dataset(FEATURES_SCOPE), dataset(PREDICTION_SCOPE), dataset(SERVING_SCOPE)
        drifted = today.filter((pl.col("scope") == FEATURES_SCOPE) & (pl.col("column_name") != DATASET_ROW)
                               & pl.col("drifted"))
        measured = quality.filter(pl.col("day") == day) if quality is not None else None
        entry = {
            "day": day.isoformat(),
            "model_version": today["model_version"][0],
            "drift_share": features["score"] if features else None,
            "dataset_drifted": features["drifted"] if features else None,
            "drifted_columns": sorted(drifted["column_name"].to_list()),
            "prediction_drift_score": prediction["score"] if prediction else None,
            "prediction_drifted": prediction["drifted"] if prediction else None,
            "serving_drift_share": serving["score"] if serving else None,
            "quality_metric": None, "quality": None, "champion_quality": None, "rows": None,
        }
        if measured is not None and measured.height:
            row = measured.row(0, named=True)
            entry |= {"quality_metric": row["metric"], "quality": row["value"],
                      "champion_quality": row["champion_value"], "rows": row["rows"]}
        summary.append(entry)
    return summary


def latest_drift_day(warehouse: TableReader, usecase: str, model: str) -> dt.date | None:
    table = tables.table(usecase, model, tables.DRIFT_METRICS)
    if not warehouse.exists(*table):
        return None
    ends = pl.from_arrow(warehouse.read(*table, columns=[tables.WINDOW_END]))[tables.WINDOW_END]
    return ends.max() - dt.timedelta(days=1) if ends.len() else None


@dataclass
class InferenceValidation:
    """The health of an inference table. Only ``problems`` make it invalid; the rest is information.

    A client may send the same ``client_request_id`` again on purpose (sticky A/B, a retry): each such request is
    its own row with its own ``databricks_request_id``. A true duplicate is one request logged twice: the same
    ``databricks_request_id`` on more than one row.
    """

    table: str
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    by_endpoint_version: list[dict] = field(default_factory=list)
    null_request_ids: int = 0
    duplicate_rows: int = 0
    repeated_client_request_ids: int = 0
    repeated_requests: int = 0
    failed_requests: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "valid": self.valid}


def validate_inference_log(warehouse: TableReader, *, schema: str = INFERENCE_SCHEMA, table: str = INFERENCE_TABLE,
                           endpoint: str | None = None,
                           served_entities: Mapping[str, tuple[str, str]] | None = None) -> InferenceValidation:
    """Schema, rows per endpoint and served version, request ids, latency percentiles of the local inference log
    (or of a Databricks inference table at ``schema.table``, see ``serving/inference_table.py``)."""
    report = InferenceValidation(warehouse.full_name(schema, table))
    current = warehouse.schema_of(schema, table)
    if current is None:
        report.problems.append(f"{report.table} does not exist at {warehouse.location(schema, table)}")
        return report
    if "endpoint_name" in current.names:
        report.problems += [f"schema: {problem}" for problem in schema_difference(INFERENCE_TABLE_SCHEMA, current)]
    if report.problems:
        return report
    try:
        rows = normalize(warehouse.read(schema, table), endpoint=endpoint, served_entities=served_entities)
    except ValueError as error:
        report.problems.append(str(error))
        return report
    return validate_inference_rows(rows, report)


def validate_inference_rows(rows: pl.DataFrame, report: InferenceValidation) -> InferenceValidation:
    """Fill ``report`` from a normalized inference table (``serving.inference_table.normalize``)."""
    report.rows = rows.height
    report.by_endpoint_version = (
        rows.group_by("endpoint", "model_version")
        .agg(pl.len().alias("rows"), (pl.col("status_code") != OK_STATUS).sum().alias("failed"))
        .sort("endpoint", "model_version", nulls_last=True).to_dicts())
    report.null_request_ids = rows["request_id"].null_count()
    identified = rows.filter(pl.col("request_id").is_not_null())
    report.duplicate_rows = identified.height - identified["request_id"].n_unique()
    clients = rows.filter(pl.col("client_request_id").is_not_null())
    report.repeated_client_request_ids = int(
        clients.group_by("client_request_id").len().filter(pl.col("len") > 1).height)
    report.repeated_requests = clients.height - clients.select("client_request_id", "request").n_unique() \
        if clients.height else 0
    report.failed_requests = int((rows["status_code"] != OK_STATUS).sum())
    if rows.height:
        report.latency_ms = {f"p{p}": float(rows["latency_ms"].quantile(p / 100, "linear"))
                             for p in LATENCY_PERCENTILES}
    if report.null_request_ids:
        report.problems.append(f"{report.null_request_ids} row(s) without a databricks_request_id")
    if report.duplicate_rows:
        report.problems.append(f"{report.duplicate_rows} row(s) log a request already logged (same "
                               "databricks_request_id)")
    return report
