"""What every storage of the lakehouse shares: the unit a daily write replaces, a commit, a write's outcome, and the
schema rule (a write that changes a table's schema is refused unless its configuration allows evolution).

Plain Python (no Dagster): the Delta writer (``mlops_platform.storage.delta``), the Spark engine and the Unity Catalog
resource all speak these types.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
from deltalake import Schema

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


def refuse_schema_change(full_name: str, current: pa.Schema | None, incoming: pa.Schema) -> None:
    """Raise when ``incoming`` differs from an existing table's ``current`` schema (None: no table yet)."""
    problems = [] if current is None else schema_difference(current, incoming)
    if problems:
        raise SchemaEvolutionError(
            f"refusing to change the schema of {full_name}: {'; '.join(problems)}. "
            "Set allow_schema_evolution in the use case's configuration to accept it."
        )


class TableReader(Protocol):
    """The read side of the warehouse, as plain code (features, engines) needs it; the warehouse resources have it."""

    def full_name(self, schema: str, table: str) -> str: ...

    def version(self, schema: str, table: str) -> int | None: ...

    def row_count(self, schema: str, table: str) -> int: ...

    def last_commit(self, schema: str, table: str) -> Commit | None: ...

    def read(self, schema: str, table: str, *, days: DayRange | None = None, columns: Sequence[str] | None = None,
             version: int | None = None, filters: Sequence[Filter] = ()) -> pa.Table: ...

    def spark_frame(self, session, schema: str, table: str, days: DayRange | None = None):
        """The table as a Spark DataFrame of ``session`` (a pyspark SparkSession)."""
        ...
