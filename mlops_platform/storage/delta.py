"""Delta tables in folders, named like Unity Catalog (``catalog.schema.table``), through delta-rs alone: the Delta
writer, a plain class that the ``DeltaWarehouse`` resource wraps and that the serving process (which must not import
Dagster) uses as it is.

Every write is one Delta commit, so readers see all of it or none of it. A daily write replaces exactly the days
it covers (a predicate overwrite), which makes re-running or backfilling a day idempotent. A write whose schema
differs from the table's is refused unless the caller allows evolution. Concurrent writers that lose a commit race
retry with backoff instead of failing the run.

An append can be made idempotent with a Delta app transaction: tagged ``(app_id, version)``, it records that version
in the same commit as its rows, so a writer that restarts reads :meth:`DeltaTables.transaction_version` and skips
what it already committed: a crash between the commit and the writer's own bookkeeping can never write rows twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from pyarrow.parquet import filters_to_expression
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from mlops_platform.storage.tables import Commit, DayRange, Filter, refuse_schema_change

ResultT = TypeVar("ResultT")
# Four processes writing disjoint days of one table lost six rounds in a row about once in three test-suite runs
# (`test_concurrent_writers_on_disjoint_days...`); each extra round costs a writer at most two seconds of waiting.
COMMIT_ATTEMPTS = 12


def _schema_mode(mode: str, predicate: str | None) -> str:
    """A whole-table overwrite may replace the schema (a new version of the table); other writes add columns."""
    return "overwrite" if mode == "overwrite" and predicate is None else "merge"


def _pruning_predicate(conditions: Sequence[Filter]) -> list[Filter]:
    """``conditions`` as delta-rs' file pruning takes them: plain Python values, and ``=`` for equality."""
    return [(column, "=" if operator == "==" else operator, value.as_py() if isinstance(value, pa.Scalar) else value)
            for column, operator, value in conditions]


@dataclass(frozen=True)
class DeltaTables:
    """The Delta tables under ``root``: one folder per ``schema/table``."""

    root: str | Path
    catalog: str
    commit_attempts: int = COMMIT_ATTEMPTS

    def full_name(self, schema: str, table: str) -> str:
        return f"{self.catalog}.{schema}.{table}"

    def path(self, schema: str, table: str) -> Path:
        return Path(self.root) / schema / table

    def table(self, schema: str, table: str) -> DeltaTable | None:
        try:
            return DeltaTable(str(self.path(schema, table)))
        except TableNotFoundError:
            return None

    def exists(self, schema: str, table: str) -> bool:
        return self.table(schema, table) is not None

    def schema_of(self, schema: str, table: str) -> pa.Schema | None:
        found = self.table(schema, table)
        return None if found is None else pa.schema(found.schema().to_arrow())

    def create(self, schema: str, table: str, arrow_schema: pa.Schema) -> None:
        """Create an empty table of ``arrow_schema`` unless one exists (a concurrent creator may win the race)."""
        if self.exists(schema, table):
            return
        self.path(schema, table).parent.mkdir(parents=True, exist_ok=True)
        try:
            write_deltalake(str(self.path(schema, table)), arrow_schema.empty_table(), mode="ignore")
        except CommitFailedError:
            if not self.exists(schema, table):
                raise

    def history(self, schema: str, table: str, limit: int | None = None) -> list[Commit]:
        """Commits, newest first; empty when the table does not exist."""
        found = self.table(schema, table)
        if found is None:
            return []
        # delta-rs puts a writer's custom metadata beside its own fields in the commit info.
        return [Commit(version=info["version"], at=dt.datetime.fromtimestamp(info["timestamp"] / 1000, tz=dt.UTC),
                       metadata={k: v for k, v in info.items() if isinstance(v, str)})
                for info in found.history(limit=limit)]

    def version(self, schema: str, table: str) -> int | None:
        found = self.table(schema, table)
        return None if found is None else found.version()

    def row_count(self, schema: str, table: str) -> int:
        """Rows in the current version, from the Delta log's file statistics (no data read)."""
        found = self.table(schema, table)
        if found is None:
            return 0
        return sum(pa.table(found.get_add_actions(flatten=True)).column("num_records").to_pylist())

    def read(self, schema: str, table: str, *, days: DayRange | None = None, columns: Sequence[str] | None = None,
             version: int | None = None, filters: Sequence[Filter] = ()) -> pa.Table:
        """A table (some days of it, rows matching ``filters``, or as of an earlier version) as Arrow."""
        found = self.table(schema, table)
        if found is None:
            raise FileNotFoundError(f"table {self.full_name(schema, table)} does not exist at "
                                    f"{self.path(schema, table)}: materialize its asset first")
        if version is not None:
            found.load_as_version(version)
        conditions = [*(days.as_filters() if days else []), *filters]
        if not conditions:
            return found.to_pyarrow_table(columns=list(columns) if columns else None)
        # The conditions prune twice: files whose min/max statistics rule them out are dropped while the log is
        # read, before a fragment is made for each of the table's files (a daily table holds a file per day
        # written), and the surviving files' rows are filtered exactly.
        dataset = found.to_pyarrow_dataset(file_pruning_predicate=_pruning_predicate(conditions))
        return dataset.to_table(columns=list(columns) if columns else None,
                                filter=filters_to_expression(list(conditions)))

    def file_uris(self, schema: str, table: str, filters: Sequence[Filter] = ()) -> list[str]:
        """The Parquet files of the current version (no deletion vectors: delta-rs writes none); with ``filters``,
        only those whose statistics do not rule out every row."""
        found = self.table(schema, table)
        if found is None:
            return []
        return found.file_uris(file_pruning_predicate=_pruning_predicate(filters) if filters else None)

    def check_schema(self, schema: str, table: str, incoming: pa.Schema, *, allow_evolution: bool) -> None:
        if not allow_evolution:
            refuse_schema_change(self.full_name(schema, table), self.schema_of(schema, table), incoming)

    def replace_days(self, schema: str, table: str, data: pa.Table, days: DayRange, *,
                     allow_evolution: bool = False, commit_metadata: dict[str, str] | None = None) -> int:
        """Replace the rows of ``days`` with ``data`` in one commit; other days are untouched. Returns the version.
        ``commit_metadata`` lands in the log beside the commit."""
        try:
            return self.write(schema, table, data, mode="overwrite", predicate=days.predicate,
                              allow_evolution=allow_evolution, commit_metadata=commit_metadata)
        except DeltaError as exc:
            if "failed validation check" not in str(exc):
                raise
            raise ValueError(
                f"refusing to write {self.full_name(schema, table)}: some rows are outside the days being replaced "
                f"({days.predicate}); nothing was written"
            ) from exc

    def merge(self, schema: str, table: str, data: pa.Table, keys: Sequence[str]) -> int:
        """Upsert ``data`` on ``keys``: matching rows are updated, new rows inserted (feature-table semantics)."""
        if not self.exists(schema, table):
            return self.write(schema, table, data, mode="append", allow_evolution=False)
        self.check_schema(schema, table, data.schema, allow_evolution=False)
        condition = " AND ".join(f"target.{key} = source.{key}" for key in keys)

        def commit() -> int:
            found = self.table(schema, table)
            assert found is not None
            (
                found.merge(source=data, predicate=condition, source_alias="source", target_alias="target")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
            return found.version()

        return self._committed(commit)

    def write(self, schema: str, table: str, data: pa.Table, *, mode: str, allow_evolution: bool = False,
              predicate: str | None = None, commit_metadata: dict[str, str] | None = None) -> int:
        """Write ``data`` in one commit (``mode`` as delta-rs takes it); ``commit_metadata`` lands in the log."""
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

        return self._committed(commit)

    def _committed(self, commit: Callable[[], ResultT]) -> ResultT:
        # delta-rs retries a conflicting commit itself; under several concurrent writers some still fail, and a
        # fresh attempt (re-reading the log) succeeds because the writes touch disjoint days or only append.
        retrying = Retrying(retry=retry_if_exception_type(CommitFailedError),
                            stop=stop_after_attempt(self.commit_attempts),
                            wait=wait_random_exponential(multiplier=0.05, max=2.0), reraise=True)
        return retrying(commit)

    def transaction_version(self, schema: str, table: str, app_id: str) -> int | None:
        """The last version an appender committed under ``app_id``, or None when it never did."""
        found = self.table(schema, table)
        return None if found is None else found.transaction_version(app_id)

    def append(self, schema: str, table: str, data: pa.Table, *, app_id: str | None = None,
               app_version: int | None = None) -> int:
        """Append ``data`` in one commit; with ``app_id``, record ``app_version`` in that same commit. Returns the
        table version written."""
        path = self.path(schema, table)
        path.parent.mkdir(parents=True, exist_ok=True)
        properties = None
        if app_id is not None:
            if app_version is None:
                raise ValueError("an append tagged with app_id needs the app_version it commits")
            properties = CommitProperties(app_transactions=[Transaction(app_id, app_version)])

        def commit() -> int:
            write_deltalake(str(path), data, mode="append", commit_properties=properties)
            return DeltaTable(str(path)).version()

        return self._committed(commit)
