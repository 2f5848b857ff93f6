"""Delta Lake tables named like Unity Catalog (``catalog.schema.table``), stored locally through delta-rs.

Every write is one Delta commit, so readers see all of it or none of it. A daily write replaces exactly the days
it covers (a predicate overwrite), which makes re-running or backfilling a day idempotent. A write whose schema
differs from the table's is refused unless the caller allows evolution. Concurrent writers that lose a commit race
retry with backoff instead of failing the run.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Schema, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

ResultT = TypeVar("ResultT")


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
        return f"{self.column} >= '{self.first.isoformat()}' AND {self.column} <= '{self.last.isoformat()}'"

    def as_filters(self) -> list[tuple[str, str, dt.date]]:
        return [(self.column, ">=", self.first), (self.column, "<=", self.last)]


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


class DeltaWarehouse(dg.ConfigurableResource):
    """The lakehouse: Delta tables under ``root``, one folder per ``schema/table``, named ``catalog.schema.table``."""

    root: str
    catalog: str
    commit_retries: int = 6

    def full_name(self, schema: str, table: str) -> str:
        return f"{self.catalog}.{schema}.{table}"

    def path(self, schema: str, table: str) -> Path:
        return Path(self.root) / schema / table

    def delta_table(self, schema: str, table: str) -> DeltaTable | None:
        try:
            return DeltaTable(str(self.path(schema, table)))
        except TableNotFoundError:
            return None

    def exists(self, schema: str, table: str) -> bool:
        return self.delta_table(schema, table) is not None

    def version(self, schema: str, table: str) -> int | None:
        table_ = self.delta_table(schema, table)
        return None if table_ is None else table_.version()

    def row_count(self, schema: str, table: str) -> int:
        """Rows in the current version, from the Delta log's file statistics (no data read)."""
        table_ = self.delta_table(schema, table)
        if table_ is None:
            return 0
        return sum(pa.table(table_.get_add_actions(flatten=True)).column("num_records").to_pylist())

    def read(
        self,
        schema: str,
        table: str,
        *,
        days: DayRange | None = None,
        columns: Sequence[str] | None = None,
        version: int | None = None,
    ) -> pa.Table:
        """Read a table (optionally some days of it, or as of an earlier version)."""
        table_ = self.delta_table(schema, table)
        if table_ is None:
            raise FileNotFoundError(
                f"table {self.full_name(schema, table)} does not exist at {self.path(schema, table)}: "
                "materialize its asset first"
            )
        if version is not None:
            table_.load_as_version(version)
        return table_.to_pyarrow_table(
            columns=list(columns) if columns else None, filters=days.as_filters() if days else None
        )

    def file_uris(self, schema: str, table: str) -> list[str]:
        """The Parquet files of the current version: how local Spark reads a delta-rs table."""
        table_ = self.delta_table(schema, table)
        return [] if table_ is None else table_.file_uris()

    def replace_days(
        self, schema: str, table: str, data: pa.Table, days: DayRange, *, allow_evolution: bool = False
    ) -> TableWrite:
        """Replace the rows of ``days`` with ``data`` in one commit; other days are untouched."""
        try:
            return self._write(schema, table, data, mode="overwrite", predicate=days.predicate,
                               allow_evolution=allow_evolution)
        except DeltaError as exc:
            if "failed validation check" not in str(exc):
                raise
            raise ValueError(
                f"refusing to write {self.full_name(schema, table)}: some rows are outside the days being replaced "
                f"({days.predicate}); nothing was written"
            ) from exc

    def overwrite(self, schema: str, table: str, data: pa.Table, *, allow_evolution: bool = False,
                  commit_metadata: dict[str, str] | None = None) -> TableWrite:
        """Replace the whole table (a full snapshot) in one commit; ``commit_metadata`` lands in the Delta log."""
        return self._write(schema, table, data, mode="overwrite", allow_evolution=allow_evolution,
                           commit_metadata=commit_metadata)

    def append(self, schema: str, table: str, data: pa.Table, *, allow_evolution: bool = False) -> TableWrite:
        return self._write(schema, table, data, mode="append", allow_evolution=allow_evolution)

    def merge(self, schema: str, table: str, data: pa.Table, keys: Sequence[str]) -> TableWrite:
        """Upsert ``data`` on ``keys``: matching rows are updated, new rows inserted (feature-table semantics)."""
        if not self.exists(schema, table):
            return self._write(schema, table, data, mode="append", allow_evolution=False)
        self._check_schema(schema, table, data.schema, allow_evolution=False)
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

    def _check_schema(self, schema: str, table: str, incoming: pa.Schema, *, allow_evolution: bool) -> None:
        table_ = self.delta_table(schema, table)
        if table_ is None or allow_evolution:
            return
        problems = schema_difference(table_.schema(), incoming)
        if problems:
            raise SchemaEvolutionError(
                f"refusing to change the schema of {self.full_name(schema, table)}: {'; '.join(problems)}. "
                "Set allow_schema_evolution in the use case's configuration to accept it."
            )

    def _write(
        self, schema: str, table: str, data: pa.Table, *, mode: str, allow_evolution: bool,
        predicate: str | None = None, commit_metadata: dict[str, str] | None = None,
    ) -> TableWrite:
        self._check_schema(schema, table, data.schema, allow_evolution=allow_evolution)
        path = self.path(schema, table)
        path.parent.mkdir(parents=True, exist_ok=True)

        def commit() -> int:
            write_deltalake(
                str(path), data, mode=mode, predicate=predicate,
                schema_mode="merge" if allow_evolution and self.exists(schema, table) else None,
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
