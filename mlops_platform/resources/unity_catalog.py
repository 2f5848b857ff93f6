"""Unity Catalog tables: the warehouse of Databricks environments, the same interface as the local Delta one.

Every operation is a Spark SQL statement or a Delta write by table name (``catalog.schema.table``), so the tables
are registered Unity Catalog tables with their grants, lineage and history, not folders on a volume:

- inside a Databricks job (the remote steps) statements and writes go through the cluster's Spark session,
  started on first use (``mlops_platform.resources.spark``);
- in the orchestrator (freshness checks, the champion gate, the online-store publish) the same read statements go
  to a SQL warehouse through the Statement Execution API, whose results arrive as Arrow. The orchestrator writes
  no table in a Databricks environment: every asset that writes one runs as a Databricks job.

Writes keep the local warehouse's guarantees: one commit per write, a daily write replaces exactly its days
(``replaceWhere``), a schema change is refused unless allowed (``mergeSchema``; ``overwriteSchema`` for a whole-table
overwrite), and commit metadata lands in the Delta log (``userMetadata``), where ``history`` reads it back.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import dagster as dg
import httpx
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from mlops_platform.polling import poll_until
from mlops_platform.resources.databricks import DatabricksWorkspace
from mlops_platform.resources.warehouse import Commit, DayRange, Filter, TableWrite, Warehouse
from mlops_platform.storage.spark import arrow_to_spark

if TYPE_CHECKING:
    from databricks.sdk.service import sql as dbsql

SOURCE_VIEW = "mlops_merge_source"
# Statement results' types when a result has no rows, and so no Arrow batch to carry its schema.
_EMPTY_RESULT_TYPES = {
    "BOOLEAN": pa.bool_(), "BYTE": pa.int8(), "SHORT": pa.int16(), "INT": pa.int32(), "LONG": pa.int64(),
    "FLOAT": pa.float32(), "DOUBLE": pa.float64(), "STRING": pa.large_string(), "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"), "TIMESTAMP_NTZ": pa.timestamp("us"), "BINARY": pa.large_binary(),
}


class UnityCatalogError(RuntimeError):
    """A statement failed or cannot run where it was asked to; the message names the statement or the table."""


class SqlConnection(Protocol):
    def sql(self, statement: str) -> pa.Table: ...

    def write(self, data: pa.Table, full_name: str, mode: str, options: Mapping[str, str]) -> None: ...

    def register(self, data: pa.Table, view: str) -> None: ...


class SparkSqlConnection:
    """Statements and Delta writes through a Spark session (a Databricks cluster's)."""

    def __init__(self, session) -> None:  # pyspark.sql.SparkSession
        self.session = session

    def sql(self, statement: str) -> pa.Table:
        return self.session.sql(statement).toArrow()

    def write(self, data: pa.Table, full_name: str, mode: str, options: Mapping[str, str]) -> None:
        arrow_to_spark(self.session, data).write.format("delta").mode(mode).options(**options).saveAsTable(full_name)

    def register(self, data: pa.Table, view: str) -> None:
        arrow_to_spark(self.session, data).createOrReplaceTempView(view)


class StatementConnection:
    """Read statements on a SQL warehouse through the Statement Execution API, results as Arrow streams."""

    def __init__(self, client, warehouse_id: str, *, poll_seconds: float = 1.0, timeout_seconds: float = 600) -> None:
        self.client = client  # databricks.sdk.WorkspaceClient
        self.warehouse_id = warehouse_id
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds

    def sql(self, statement: str) -> pa.Table:
        # Imported here: the SDK costs seconds at start-up and only a Databricks environment uses it.
        from databricks.sdk.service import sql as dbsql

        api = self.client.statement_execution
        response = api.execute_statement(
            statement=statement, warehouse_id=self.warehouse_id, wait_timeout="30s",
            on_wait_timeout=dbsql.ExecuteStatementRequestOnWaitTimeout.CONTINUE,
            format=dbsql.Format.ARROW_STREAM, disposition=dbsql.Disposition.EXTERNAL_LINKS,
        )
        # The response in hand first, then the warehouse's every poll_seconds: it sends no notice of the end.
        responses = itertools.chain([response], iter(lambda: api.get_statement(response.statement_id), None))

        def finished() -> bool:
            nonlocal response
            response = next(responses)
            return response.status.state not in (dbsql.StatementState.PENDING, dbsql.StatementState.RUNNING)

        if not poll_until(finished, self.timeout_seconds, interval=self.poll_seconds):
            api.cancel_execution(response.statement_id)
            raise UnityCatalogError(f"statement still running after {self.timeout_seconds:g} s: {statement}")
        if response.status.state != dbsql.StatementState.SUCCEEDED:
            error = response.status.error
            raise UnityCatalogError(f"{response.status.state.value}: {error.message if error else 'no message'}: "
                                    f"{statement}")
        batches: list[pa.Table] = []
        chunk = response.result
        while chunk is not None:
            for link in chunk.external_links or []:
                # Presigned cloud-storage URLs: the workspace token must not be sent along.
                body = httpx.get(link.external_link, headers=link.http_headers or {}, timeout=60)
                body.raise_for_status()
                batches.append(pa.ipc.open_stream(body.content).read_all())
            next_index = chunk.next_chunk_index
            chunk = None if next_index is None else api.get_statement_result_chunk_n(response.statement_id,
                                                                                     next_index)
        return pa.concat_tables(batches) if batches else _empty_result(response.manifest, statement)

    def write(self, data: pa.Table, full_name: str, mode: str, options: Mapping[str, str]) -> None:
        raise UnityCatalogError(f"not writing {full_name} from the orchestrator: in a Databricks environment every "
                                "asset that writes a table runs as a Databricks job")

    def register(self, data: pa.Table, view: str) -> None:
        raise UnityCatalogError("the orchestrator writes no table in a Databricks environment")


def _empty_result(manifest: dbsql.ResultManifest | None, statement: str) -> pa.Table:
    columns = manifest.schema.columns if manifest and manifest.schema and manifest.schema.columns else []
    fields = []
    for column in columns:
        kind = _EMPTY_RESULT_TYPES.get(column.type_name.value if column.type_name else "")
        if kind is None:
            raise UnityCatalogError(f"no rows, and column '{column.name}' has type {column.type_text}, which an "
                                    f"empty result cannot carry: {statement}")
        fields.append(pa.field(column.name, kind))
    return pa.schema(fields).empty_table()


def quote_name(*parts: str) -> str:
    return ".".join(f"`{part.replace('`', '``')}`" for part in parts)


def sql_literal(value: Any) -> str:
    if isinstance(value, pa.Scalar):
        value = value.as_py()
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.datetime):
        stamp = value.astimezone(dt.UTC) if value.tzinfo else value
        return f"TIMESTAMP'{stamp.strftime('%Y-%m-%d %H:%M:%S.%f')}{'+00:00' if value.tzinfo else ''}'"
    if isinstance(value, dt.date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__} {value!r}")


_OPERATORS = {"=", "==", "!=", "<", "<=", ">", ">=", "in", "not in"}


def sql_condition(filters: Sequence[Filter]) -> str:
    """``filters`` (column, operator, value) as one SQL condition, as the Delta reader's filters mean them."""
    parts = []
    for column, operator, value in filters:
        if operator not in _OPERATORS:
            raise ValueError(f"filter on '{column}': unsupported operator {operator!r}")
        if operator in ("in", "not in"):
            parts.append(f"{quote_name(column)} {operator.upper()} ({', '.join(sql_literal(v) for v in value)})")
        else:
            parts.append(f"{quote_name(column)} {'=' if operator == '==' else operator} {sql_literal(value)}")
    return " AND ".join(parts)


class UnityCatalogWarehouse(Warehouse):
    """Unity Catalog Delta tables ``catalog.schema.table``: Spark inside Databricks jobs, a SQL warehouse outside."""

    pyspark: dg.ConfigurableResource = Field(
        description="the job's Spark, started on first use (mlops_platform.resources.spark.spark_sessions)")
    workspace: DatabricksWorkspace | None = Field(
        default=None, description="for the orchestrator's reads; None inside a Databricks job, which uses Spark")
    sql_warehouse_id: str | None = Field(default=None, description="the SQL warehouse the orchestrator reads with")

    def connection(self) -> SqlConnection:
        if self.workspace is None:
            return SparkSqlConnection(self.pyspark.spark_session)
        if not self.sql_warehouse_id:
            raise UnityCatalogError("reading Unity Catalog tables from the orchestrator needs a SQL warehouse id")
        return StatementConnection(self.workspace.workspace_client(), self.sql_warehouse_id)

    def table_name(self, schema: str, table: str) -> str:
        return quote_name(self.catalog, schema, table)

    def location(self, schema: str, table: str) -> str:
        return self.full_name(schema, table)

    def exists(self, schema: str, table: str) -> bool:
        found = self.connection().sql(
            f"SELECT 1 FROM {quote_name(self.catalog, 'information_schema', 'tables')} "
            f"WHERE table_schema = {sql_literal(schema)} AND table_name = {sql_literal(table)}")
        return found.num_rows > 0

    def version(self, schema: str, table: str) -> int | None:
        commit = self.last_commit(schema, table)
        return None if commit is None else commit.version

    def row_count(self, schema: str, table: str) -> int:
        if not self.exists(schema, table):
            return 0
        return self.connection().sql(f"SELECT COUNT(*) AS row_count FROM {self.table_name(schema, table)}"
                                     ).column("row_count")[0].as_py()

    def schema_of(self, schema: str, table: str) -> pa.Schema | None:
        if not self.exists(schema, table):
            return None
        return self.connection().sql(f"SELECT * FROM {self.table_name(schema, table)} LIMIT 0").schema

    def history(self, schema: str, table: str, limit: int | None = None) -> list[Commit]:
        if not self.exists(schema, table):
            return []
        rows = self.connection().sql(f"DESCRIBE HISTORY {self.table_name(schema, table)}"
                                     + (f" LIMIT {int(limit)}" if limit else "")).to_pylist()
        return [Commit(version=int(row["version"]), at=_utc(row["timestamp"]),
                       metadata=json.loads(row["userMetadata"]) if row.get("userMetadata") else {})
                for row in rows]

    def select_statement(self, schema: str, table: str, *, days: DayRange | None = None,
                         columns: Sequence[str] | None = None, version: int | None = None,
                         filters: Sequence[Filter] = ()) -> str:
        selected = ", ".join(quote_name(column) for column in columns) if columns else "*"
        statement = f"SELECT {selected} FROM {self.table_name(schema, table)}"
        if version is not None:
            statement += f" VERSION AS OF {int(version)}"
        condition = sql_condition([*(days.as_filters() if days else []), *filters])
        return statement + (f" WHERE {condition}" if condition else "")

    def read(self, schema: str, table: str, *, days: DayRange | None = None, columns: Sequence[str] | None = None,
             version: int | None = None, filters: Sequence[Filter] = ()) -> pa.Table:
        if not self.exists(schema, table):
            raise FileNotFoundError(f"table {self.full_name(schema, table)} does not exist in Unity Catalog: "
                                    "materialize its asset first")
        return self.connection().sql(self.select_statement(schema, table, days=days, columns=columns,
                                                           version=version, filters=filters))

    def spark_frame(self, session, schema: str, table: str, days: DayRange | None = None):
        return session.sql(self.select_statement(schema, table, days=days))

    def replace_days(self, schema: str, table: str, data: pa.Table, days: DayRange, *,
                     allow_evolution: bool = False, commit_metadata: dict[str, str] | None = None) -> TableWrite:
        # Checked here rather than left to Delta's replaceWhere constraint check, for the local warehouse's message.
        if data.num_rows:
            column = data.column(days.column)
            outside = pc.sum(pc.or_kleene(pc.less(column, pa.scalar(days.first, column.type)),
                                          pc.greater(column, pa.scalar(days.last, column.type)))).as_py()
            if outside:
                raise ValueError(f"refusing to write {self.full_name(schema, table)}: {outside} rows are outside the "
                                 f"days being replaced ({days.sql}); nothing was written")
        metadata = {"userMetadata": json.dumps(commit_metadata, sort_keys=True)} if commit_metadata else {}
        return self._write(schema, table, data, mode="overwrite", allow_evolution=allow_evolution,
                           options={"replaceWhere": days.sql, **metadata})

    def overwrite(self, schema: str, table: str, data: pa.Table, *, allow_evolution: bool = False,
                  commit_metadata: dict[str, str] | None = None) -> TableWrite:
        options = {"userMetadata": json.dumps(commit_metadata, sort_keys=True)} if commit_metadata else {}
        return self._write(schema, table, data, mode="overwrite", allow_evolution=allow_evolution, options=options)

    def append(self, schema: str, table: str, data: pa.Table, *, allow_evolution: bool = False) -> TableWrite:
        return self._write(schema, table, data, mode="append", allow_evolution=allow_evolution)

    def merge(self, schema: str, table: str, data: pa.Table, keys: Sequence[str]) -> TableWrite:
        if not self.exists(schema, table):
            return self._write(schema, table, data, mode="append", allow_evolution=False)
        self.check_schema(schema, table, data.schema, allow_evolution=False)
        connection = self.connection()
        connection.register(data, SOURCE_VIEW)
        condition = " AND ".join(f"target.{quote_name(key)} = source.{quote_name(key)}" for key in keys)
        connection.sql(f"MERGE INTO {self.table_name(schema, table)} AS target USING {SOURCE_VIEW} AS source "
                       f"ON {condition} WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
        return self._written(schema, table, data)

    def _write(self, schema: str, table: str, data: pa.Table, *, mode: str, allow_evolution: bool,
               options: Mapping[str, str] | None = None) -> TableWrite:
        self.check_schema(schema, table, data.schema, allow_evolution=allow_evolution)
        connection = self.connection()
        connection.sql(f"CREATE SCHEMA IF NOT EXISTS {quote_name(self.catalog, schema)}")
        connection.write(data, self.full_name(schema, table), mode, {**(options or {}), **_evolution(mode, options,
                                                                                              allow_evolution)})
        return self._written(schema, table, data)

    def _written(self, schema: str, table: str, data: pa.Table) -> TableWrite:
        version = self.version(schema, table)
        assert version is not None, f"{self.full_name(schema, table)} has no history after a write"
        return TableWrite(self.full_name(schema, table), self.location(schema, table), version, data.num_rows,
                          data.schema)


def _evolution(mode: str, options: Mapping[str, str] | None, allow: bool) -> dict[str, str]:
    """A whole-table overwrite may replace the schema (a new version of the table); other writes add columns."""
    if not allow:
        return {}
    whole = mode == "overwrite" and "replaceWhere" not in (options or {})
    return {"overwriteSchema": "true"} if whole else {"mergeSchema": "true"}


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
