"""The lakehouse's tables, named like Unity Catalog (``catalog.schema.table``), and the local Delta warehouse.

``Warehouse`` is what assets see: read, replace days, overwrite, append, merge, versions and commit history.
``DeltaWarehouse`` keeps the tables in folders through delta-rs (the embedded default);
``mlops_platform.resources.unity_catalog`` keeps them as Unity Catalog tables through Spark SQL on Databricks.

Every write is one Delta commit, so readers see all of it or none of it. A daily write replaces exactly the days
it covers (a predicate overwrite), which makes re-running or backfilling a day idempotent. A write whose schema
differs from the table's is refused unless the caller allows evolution. Concurrent writers that lose a commit race
retry with backoff instead of failing the run.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Schema, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from mlops_platform.resources.spark import arrow_to_spark

ResultT = TypeVar("ResultT")
# A row filter as (column, operator, value), operators as in SQL comparisons: ``("day", ">=", date(2013, 1, 1))``.
Filter = tuple[str, str, Any]


class SchemaEvolutionError(ValueError):
    """A write would change a table's schema and the table's configuration does not allow it."""


@dataclass(frozen=True)
class DayRange:
    """Inclusive range of days in ``column``: the unit a partitioned write replaces."""

    column: str
    first: dt.date
    last: dt.date

    @property
    def predicate(self) -> str:
        """As delta-rs' predicate overwrite takes it."""
        return f"{self.column} >= '{self.first.isoformat()}' AND {self.column} <= '{self.last.isoformat()}'"

    @property
    def sql(self) -> str:
        """As Spark SQL and Databricks take it (``replaceWhere``, ``WHERE``)."""
        return f"{self.column} >= DATE'{self.first.isoformat()}' AND {self.column} <= DATE'{self.last.isoformat()}'"

    def as_filters(self) -> list[Filter]:
        return [(self.column, ">=", self.first), (self.column, "<=", self.last)]


@dataclass(frozen=True)
class Commit:
    """One version of a table: when it was committed and the metadata its writer attached."""

    version: int
    at: dt.datetime
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TableWrite:
    """What a write did, for the asset's metadata."""

    full_name: str
    path: str
    version: int
    rows_written: int
    schema: pa.Schema


def _delta_types(schema: pa.Schema | Schema) -> dict[str, str]:
    delta_schema = schema if isinstance(schema, Schema) else Schema.from_arrow(schema)
    return {f.name: str(f.type).removeprefix("PrimitiveType(").strip('")') for f in delta_schema.fields}


def schema_difference(current: pa.Schema | Schema, incoming: pa.Schema | Schema) -> list[str]:
    """Differences between two schemas in Delta's types (Arrow's string flavours all store as ``string``)."""
    before, after = _delta_types(current), _delta_types(incoming)
    problems = [f"new column '{name}' ({kind})" for name, kind in after.items() if name not in before]
    problems += [
        f"column '{name}' changes type {before[name]} -> {kind}"
        for name, kind in after.items()
        if name in before and before[name] != kind
    ]
    problems += [f"missing column '{name}'" for name in before if name not in after]
    return problems


class Warehouse(dg.ConfigurableResource):
    """The tables every asset reads and writes, named ``catalog.schema.table``; one subclass per storage."""

    catalog: str

    def full_name(self, schema: str, table: str) -> str:
        return f"{self.catalog}.{schema}.{table}"

    def location(self, schema: str, table: str) -> str:
        """Where a person finds the table: a folder, or its Unity Catalog name."""
        raise NotImplementedError

    def exists(self, schema: str, table: str) -> bool:
        raise NotImplementedError

    def version(self, schema: str, table: str) -> int | None:
        raise NotImplementedError

    def row_count(self, schema: str, table: str) -> int:
        raise NotImplementedError

    def schema_of(self, schema: str, table: str) -> pa.Schema | None:
        """The current schema in Arrow types, or None when the table does not exist."""
        raise NotImplementedError

    def history(self, schema: str, table: str, limit: int | None = None) -> list[Commit]:
        """Commits, newest first; empty when the table does not exist."""
        raise NotImplementedError

    def last_commit(self, schema: str, table: str) -> Commit | None:
        commits = self.history(schema, table, limit=1)
        return commits[0] if commits else None

    def read(self, schema: str, table: str, *, days: DayRange | None = None, columns: Sequence[str] | None = None,
             version: int | None = None, filters: Sequence[Filter] = ()) -> pa.Table:
        """A table (some days of it, rows matching ``filters``, or as of an earlier version) as Arrow."""
        raise NotImplementedError

    def spark_frame(self, session, schema: str, table: str, days: DayRange | None = None):
        """The table as a Spark DataFrame of ``session`` (a pyspark SparkSession)."""
        raise NotImplementedError

    def replace_days(self, schema: str, table: str, data: pa.Table, days: DayRange, *,
                     allow_evolution: bool = False, commit_metadata: dict[str, str] | None = None) -> TableWrite:
        """Replace the rows of ``days`` with ``data`` in one commit; other days are untouched. ``commit_metadata``
        lands in the table's log, beside the commit it describes."""
        raise NotImplementedError

    def overwrite(self, schema: str, table: str, data: pa.Table, *, allow_evolution: bool = False,
                  commit_metadata: dict[str, str] | None = None) -> TableWrite:
        """Replace the whole table (a full snapshot) in one commit; ``commit_metadata`` lands in the table's log."""
        raise NotImplementedError

    def append(self, schema: str, table: str, data: pa.Table, *, allow_evolution: bool = False) -> TableWrite:
        raise NotImplementedError

    def merge(self, schema: str, table: str, data: pa.Table, keys: Sequence[str]) -> TableWrite:
        """Upsert ``data`` on ``keys``: matching rows are updated, new rows inserted (feature-table semantics)."""
        raise NotImplementedError

    def check_schema(self, schema: str, table: str, incoming: pa.Schema, *, allow_evolution: bool) -> None:
        current = None if allow_evolution else self.schema_of(schema, table)
        problems = [] if current is None else schema_difference(current, incoming)
        if problems:
            raise SchemaEvolutionError(
                f"refusing to change the schema of {self.full_name(schema, table)}: {'; '.join(problems)}. "
                "Set allow_schema_evolution in the use case's configuration to accept it."
            )


def _schema_mode(mode: str, predicate: str | None) -> str:
    """A whole-table overwrite may replace the schema (a new version of the table); other writes add columns."""
    return "overwrite" if mode == "overwrite" and predicate is None else "merge"


class DeltaWarehouse(Warehouse):
    """Delta tables under ``root``, one folder per ``schema/table``, written and read through delta-rs."""

    root: str
    commit_retries: int = 6

    def path(self, schema: str, table: str) -> Path:
        return Path(self.root) / schema / table

    def delta_table(self, schema: str, table: str) -> DeltaTable | None:
        try:
            return DeltaTable(str(self.path(schema, table)))
        except TableNotFoundError:
            return None

    def location(self, schema: str, table: str) -> str:
        return str(self.path(schema, table))

    def exists(self, schema: str, table: str) -> bool:
        return self.delta_table(schema, table) is not None

    def schema_of(self, schema: str, table: str) -> pa.Schema | None:
        table_ = self.delta_table(schema, table)
        return None if table_ is None else pa.schema(table_.schema().to_arrow())

    def history(self, schema: str, table: str, limit: int | None = None) -> list[Commit]:
        table_ = self.delta_table(schema, table)
        if table_ is None:
            return []
        # delta-rs puts a writer's custom metadata beside its own fields in the commit info.
        return [Commit(version=info["version"], at=dt.datetime.fromtimestamp(info["timestamp"] / 1000, tz=dt.UTC),
                       metadata={k: v for k, v in info.items() if isinstance(v, str)})
                for info in table_.history(limit=limit)]

    def version(self, schema: str, table: str) -> int | None:
        table_ = self.delta_table(schema, table)
        return None if table_ is None else table_.version()

    def row_count(self, schema: str, table: str) -> int:
        """Rows in the current version, from the Delta log's file statistics (no data read)."""
        table_ = self.delta_table(schema, table)
        if table_ is None:
            return 0
        return sum(pa.table(table_.get_add_actions(flatten=True)).column("num_records").to_pylist())

    def read(self, schema: str, table: str, *, days: DayRange | None = None, columns: Sequence[str] | None = None,
             version: int | None = None, filters: Sequence[Filter] = ()) -> pa.Table:
        table_ = self.delta_table(schema, table)
        if table_ is None:
            raise FileNotFoundError(
                f"table {self.full_name(schema, table)} does not exist at {self.path(schema, table)}: "
                "materialize its asset first"
            )
        if version is not None:
            table_.load_as_version(version)
        conditions = [*(days.as_filters() if days else []), *filters]
        return table_.to_pyarrow_table(columns=list(columns) if columns else None, filters=conditions or None)

    def spark_frame(self, session, schema: str, table: str, days: DayRange | None = None):
        # Local Spark has no Delta reader here (delta-spark needs Maven); the table's current Parquet files are the
        # same snapshot, since delta-rs writes no deletion vectors.
        table_ = self.delta_table(schema, table)
        uris = [] if table_ is None else table_.file_uris()
        if not uris:
            return arrow_to_spark(session, self.read(schema, table, days=days))
        frame = session.read.parquet(*uris)
        if days is not None:
            frame = frame.filter(days.sql)
        return frame

    def replace_days(
        self, schema: str, table: str, data: pa.Table, days: DayRange, *, allow_evolution: bool = False,
        commit_metadata: dict[str, str] | None = None,
    ) -> TableWrite:
        try:
            return self._write(schema, table, data, mode="overwrite", predicate=days.predicate,
                               allow_evolution=allow_evolution, commit_metadata=commit_metadata)
        except DeltaError as exc:
            if "failed validation check" not in str(exc):
                raise
            raise ValueError(
                f"refusing to write {self.full_name(schema, table)}: some rows are outside the days being replaced "
                f"({days.predicate}); nothing was written"
            ) from exc

    def overwrite(self, schema: str, table: str, data: pa.Table, *, allow_evolution: bool = False,
                  commit_metadata: dict[str, str] | None = None) -> TableWrite:
        return self._write(schema, table, data, mode="overwrite", allow_evolution=allow_evolution,
                           commit_metadata=commit_metadata)

    def append(self, schema: str, table: str, data: pa.Table, *, allow_evolution: bool = False) -> TableWrite:
        return self._write(schema, table, data, mode="append", allow_evolution=allow_evolution)

    def merge(self, schema: str, table: str, data: pa.Table, keys: Sequence[str]) -> TableWrite:
        if not self.exists(schema, table):
            return self._write(schema, table, data, mode="append", allow_evolution=False)
        self.check_schema(schema, table, data.schema, allow_evolution=False)
        condition = " AND ".join(f"target.{key} = source.{key}" for key in keys)

        def commit() -> int:
            table_ = self.delta_table(schema, table)
            assert table_ is not None
            (
                table_.merge(source=data, predicate=condition, source_alias="source", target_alias="target")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
            return table_.version()

        version = self._with_retries(commit)
        return TableWrite(self.full_name(schema, table), str(self.path(schema, table)), version,
                          data.num_rows, data.schema)

    def _write(
        self, schema: str, table: str, data: pa.Table, *, mode: str, allow_evolution: bool,
        predicate: str | None = None, commit_metadata: dict[str, str] | None = None,
    ) -> TableWrite:
        self.check_schema(schema, table, data.schema, allow_evolution=allow_evolution)
        path = self.path(schema, table)
        path.parent.mkdir(parents=True, exist_ok=True)

        def commit() -> int:
            write_deltalake(
                str(path), data, mode=mode, predicate=predicate,
                schema_mode=_schema_mode(mode, predicate) if allow_evolution and self.exists(schema, table) else None,
                commit_properties=CommitProperties(custom_metadata=commit_metadata) if commit_metadata else None,
            )
            return DeltaTable(str(path)).version()

        version = self._with_retries(commit)
        return TableWrite(self.full_name(schema, table), str(path), version, data.num_rows, data.schema)

    def _with_retries(self, commit: Callable[[], ResultT]) -> ResultT:
        # delta-rs retries conflicting commits itself; under several concurrent writers some still fail, and a
        # fresh attempt (re-reading the log) succeeds because our writes touch disjoint days.
        for attempt in range(self.commit_retries):
            try:
                return commit()
            except CommitFailedError:
                if attempt == self.commit_retries - 1:
                    raise
                time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")
