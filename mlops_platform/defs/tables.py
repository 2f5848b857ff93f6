"""What every table asset shares: its daily partitions, the days a run covers, and the metadata it reports."""

from __future__ import annotations

import datetime as dt
from functools import cache

import dagster as dg
import pyarrow as pa

from mlops_platform.resources.warehouse import DayRange, TableWrite
from mlops_platform.settings import UseCaseConfig

PREVIEW_ROWS = 5


@cache
def _daily(start: dt.date, end: dt.date) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_date=end.isoformat())


def daily_partitions(usecase: UseCaseConfig) -> dg.DailyPartitionsDefinition:
    """One partition per day of the use case's window; assets of a use case share the same definition."""
    assert usecase.partitions is not None, f"use case '{usecase.name}' has no day partitions"
    return _daily(usecase.partitions.start, usecase.partitions.end)


def partitioning(usecase: UseCaseConfig, daily: bool) -> dict[str, object]:
    """The partitions and backfill policy of an asset: by day (one run per backfill), or none for a snapshot."""
    if not daily:
        return {"partitions_def": None, "backfill_policy": None}
    return {"partitions_def": daily_partitions(usecase), "backfill_policy": BACKFILL_POLICY}


# A backfill of many days runs as one run over the range, so a year of history is one job, not 365.
BACKFILL_POLICY = dg.BackfillPolicy.single_run()


def days_of_run(context: dg.AssetExecutionContext, column: str) -> DayRange:
    """The days a partitioned run covers (one day, or a range in a single-run backfill)."""
    window = context.partition_key_range
    return DayRange(column, dt.date.fromisoformat(window.start), dt.date.fromisoformat(window.end))


def _markdown(table: pa.Table) -> str:
    rows = table.slice(0, PREVIEW_ROWS).to_pylist()
    header = "| " + " | ".join(table.column_names) + " |"
    rule = "|" + "---|" * len(table.column_names)
    body = ["| " + " | ".join("" if v is None else str(v) for v in row.values()) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def column_schema(schema: pa.Schema, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type), description=descriptions.get(f.name)) for f in schema]
    )


def table_metadata(write: TableWrite, data: pa.Table, **extra: object) -> dict[str, object]:
    """Row count, Delta version, column schema, location and a preview: what a person checks in the UI."""
    return {
        "dagster/row_count": write.rows_written,
        "dagster/table_name": write.full_name,
        "dagster/column_schema": column_schema(write.schema),
        "dagster/uri": dg.MetadataValue.path(write.path),
        "delta_version": write.version,
        "preview": dg.MetadataValue.md(_markdown(data)),
        **extra,
    }
