"""The lakehouse's tables as a resource, named like Unity Catalog (``catalog.schema.table``).

``Warehouse`` is what assets see: read, replace days, overwrite, append, merge, versions and commit history.
``DeltaWarehouse`` wraps the plain Delta writer (``mlops_platform.storage.delta.DeltaTables``, the embedded default);
``mlops_platform.resources.unity_catalog`` keeps the tables as Unity Catalog tables through Spark SQL on Databricks.
The types both speak (``DayRange``, ``TableWrite``, the schema rule) are plain, in ``mlops_platform.storage.tables``.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import pyarrow as pa

from mlops_platform.storage.delta import COMMIT_ATTEMPTS, DeltaTables
from mlops_platform.storage.spark import arrow_to_spark
from mlops_platform.storage.tables import (
    Commit,
    DayRange,
    Filter,
    SchemaEvolutionError,
    TableWrite,
    refuse_schema_change,
    schema_difference,
)

# Importers of the resource module also find the plain types here, where they have always been.
__all__ = ["Commit", "DayRange", "DeltaWarehouse", "Filter", "SchemaEvolutionError", "TableWrite", "Warehouse",
           "schema_difference"]


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
        if not allow_evolution:
            refuse_schema_change(self.full_name(schema, table), self.schema_of(schema, table), incoming)


class DeltaWarehouse(Warehouse):
    """Delta tables under ``root``, one folder per ``schema/table``, through the plain writer ``DeltaTables``."""

    root: str
    commit_retries: int = COMMIT_ATTEMPTS

    @property
    def tables(self) -> DeltaTables:
        return DeltaTables(self.root, self.catalog, commit_attempts=self.commit_retries)

    def location(self, schema: str, table: str) -> str:
        return str(self.tables.path(schema, table))

    def exists(self, schema: str, table: str) -> bool:
        return self.tables.exists(schema, table)

    def schema_of(self, schema: str, table: str) -> pa.Schema | None:
        return self.tables.schema_of(schema, table)

    def history(self, schema: str, table: str, limit: int | None = None) -> list[Commit]:
        return self.tables.history(schema, table, limit)

    def version(self, schema: str, table: str) -> int | None:
        return self.tables.version(schema, table)

    def row_count(self, schema: str, table: str) -> int:
        return self.tables.row_count(schema, table)

    def read(self, schema: str, table: str, *, days: DayRange | None = None, columns: Sequence[str] | None = None,
             version: int | None = None, filters: Sequence[Filter] = ()) -> pa.Table:
        return self.tables.read(schema, table, days=days, columns=columns, version=version, filters=filters)

    def spark_frame(self, session, schema: str, table: str, days: DayRange | None = None):
        # Local Spark has no Delta reader here (delta-spark needs Maven); the table's current Parquet files are the
        # same snapshot, since delta-rs writes no deletion vectors.
        uris = self.tables.file_uris(schema, table, days.as_filters() if days else ())
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
        version = self.tables.replace_days(schema, table, data, days, allow_evolution=allow_evolution,
                                           commit_metadata=commit_metadata)
        return self._written(schema, table, data, version)

    def overwrite(self, schema: str, table: str, data: pa.Table, *, allow_evolution: bool = False,
                  commit_metadata: dict[str, str] | None = None) -> TableWrite:
        version = self.tables.write(schema, table, data, mode="overwrite", allow_evolution=allow_evolution,
                                    commit_metadata=commit_metadata)
        return self._written(schema, table, data, version)

    def append(self, schema: str, table: str, data: pa.Table, *, allow_evolution: bool = False) -> TableWrite:
        version = self.tables.write(schema, table, data, mode="append", allow_evolution=allow_evolution)
        return self._written(schema, table, data, version)

    def merge(self, schema: str, table: str, data: pa.Table, keys: Sequence[str]) -> TableWrite:
        return self._written(schema, table, data, self.tables.merge(schema, table, data, keys))

    def _written(self, schema: str, table: str, data: pa.Table, version: int) -> TableWrite:
        return TableWrite(self.full_name(schema, table), self.location(schema, table), version, data.num_rows,
                          data.schema)
