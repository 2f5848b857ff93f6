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

A process keeps one open handle per table (``_Handles``) and brings it up to date before every read and every commit,
instead of opening the table (replaying its log) for each call: a day's assets and checks ask the same tables dozens
of times.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from pyarrow.parquet import filters_to_expression
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from mlops_platform.storage.tables import Commit, DayRange, Filter, refuse_schema_change

ResultT = TypeVar("ResultT")
# Four processes writing disjoint days of one table lost six rounds in a row about once in three test-suite runs
# (`test_concurrent_writers_on_disjoint_days...`); each extra round costs a writer at most two seconds of waiting.
COMMIT_ATTEMPTS = 12
# Handles kept per process, least recently used dropped first: more than the tables of the largest use case a day
# touches, so a day never reopens one; each holds its table's file list with statistics (a file per day written).
HANDLES_KEPT = 64


def _schema_mode(mode: str, predicate: str | None) -> str:
    """A whole-table overwrite may replace the schema (a new version of the table); other writes add columns."""
    return "overwrite" if mode == "overwrite" and predicate is None else "merge"


def _pruning_predicate(conditions: Sequence[Filter]) -> list[Filter]:
    """``conditions`` as delta-rs' file pruning takes them: plain Python values, and ``=`` for equality."""
    return [(column, "=" if operator == "==" else operator, value.as_py() if isinstance(value, pa.Scalar) else value)
            for column, operator, value in conditions]


def _dataset(table: DeltaTable, conditions: Sequence[Filter],
             prune: Callable[[Sequence[Filter]], list[str]] | None = None) -> pads.Dataset:
    """The table's files whose statistics allow a row meeting ``conditions`` (as ``prune`` finds them, else as
    delta-rs does) as one Arrow dataset with the table's schema (files written before a column was added read it as
    nulls). delta-rs's ``to_pyarrow_dataset`` makes a fragment per file, reading each file's footer, ~1.7 ms a file:
    on tables with a file per day every read grew by the day (a replayed day's run took 1.5 s in January and 5.9 s at
    the end of June). Sound for what delta-rs writes (no deletion vectors, no column mapping); a partitioned table,
    whose partition values live in the log, goes through delta-rs."""
    pruning = _pruning_predicate(conditions) if conditions else None
    if table.metadata().partition_columns:
        return table.to_pyarrow_dataset(file_pruning_predicate=pruning)
    files = prune(conditions) if prune else table.file_uris(file_pruning_predicate=pruning)
    return pads.dataset(files, schema=pa.schema(table.schema().to_arrow()), format="parquet")


def _may_match(files: pa.Table, conditions: Sequence[Filter]) -> pa.ChunkedArray | None:
    """Which of ``files`` (the log's add actions, flattened) may hold a row meeting every condition, judged by their
    min/max statistics; None when a condition is not one this judges exactly (then delta-rs prunes). Only dates and
    integers: their statistics are exact, where timestamps' are cut to milliseconds and strings' to a prefix. A file
    without statistics for the column is kept; one whose values there are all null is not."""
    keep = pa.chunked_array([pa.array([True] * files.num_rows, pa.bool_())])
    for column, operator, value in conditions:
        if f"min.{column}" not in files.column_names or operator not in _COMPARISONS:
            return None
        low, high = files[f"min.{column}"], files[f"max.{column}"]
        if not (pa.types.is_date(low.type) or pa.types.is_integer(low.type)):
            return None
        try:
            bound = pa.scalar(value.as_py() if isinstance(value, pa.Scalar) else value, low.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            return None
        possible = pc.fill_null(_COMPARISONS[operator](low, high, bound), True)
        # No comparison holds for a null, so a file of nulls alone in the column holds no match either.
        only_nulls = pc.fill_null(pc.equal(files[f"null_count.{column}"], files["num_records"]), False)
        keep = pc.and_(keep, pc.and_(possible, pc.invert(only_nulls)))
    return keep


def _holds(low: pa.ChunkedArray, high: pa.ChunkedArray, bound: pa.Scalar) -> pa.ChunkedArray:
    return pc.and_(pc.less_equal(low, bound), pc.greater_equal(high, bound))


# Whether a file whose values lie in [low, high] may hold a value meeting ``value OPERATOR bound``.
_COMPARISONS: dict[str, Callable[[pa.ChunkedArray, pa.ChunkedArray, pa.Scalar], pa.ChunkedArray]] = {
    "=": _holds,
    "==": _holds,
    ">=": lambda low, high, bound: pc.greater_equal(high, bound),
    ">": lambda low, high, bound: pc.greater(high, bound),
    "<=": lambda low, high, bound: pc.less_equal(low, bound),
    "<": lambda low, high, bound: pc.less(low, bound),
}


def _sql_literal(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    return f"'{value.isoformat()}'"


def _match_bounds(data: pa.Table, keys: Sequence[str]) -> list[str]:
    """Conditions on the target that every row matching ``data`` on ``keys`` meets: each date, timestamp or integer
    key within the source's range. They change no match, but let delta-rs skip the files outside the range by their
    statistics; without them a merge scanned every file of the table (a file per day merged): 72-105 ms for a day's
    rows on a feature table after six months, 22-47 ms with them."""
    bounds = []
    for key in keys:
        kind = data.schema.field(key).type
        if not (pa.types.is_date(kind) or pa.types.is_timestamp(kind) or pa.types.is_integer(kind)):
            continue
        low, high = (scalar.as_py() for scalar in pc.min_max(data.column(key)).values())
        if low is not None:
            bounds += [f"target.{key} >= {_sql_literal(low)}", f"target.{key} <= {_sql_literal(high)}"]
    return bounds


def _commit_file(path: Path, version: int) -> Path:
    """Where the Delta protocol puts commit ``version`` of the table at ``path``; it is written once, never changed."""
    return path / "_delta_log" / f"{version:020d}.json"


def _identity(file: Path) -> tuple[int, int] | None:
    try:
        status = file.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns


class _Handle:
    """One table's open ``DeltaTable``, only ever at the table's latest version; ``lock`` is held while it is used."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.table: DeltaTable | None = None
        # The version this handle was last checked at, and the identity of that commit's file then.
        self.version = -1
        self.commit: tuple[int, int] | None = None
        # That version's add actions with their statistics, read when a read first prunes by them.
        self._files: pa.Table | None = None

    def latest(self) -> DeltaTable | None:
        """The table at its latest version, or None when there is none (a missing table is not kept)."""
        if self.table is not None and self.table.version() != self.version:
            # It committed itself (a write or merge through it), which moves a handle to its own new version.
            self._checked()
        if self.table is not None and _identity(_commit_file(self.path, self.version)) == self.commit:
            # Commits are numbered without gaps, so the next one's file is there exactly when someone (another
            # process, another handle) committed since: then only the new commits are read.
            if _commit_file(self.path, self.version + 1).exists():
                self.table.update_incremental()
                self._checked()
            return self.table
        # First use, or this version's commit file is gone or another one: the folder was deleted and the table
        # made again, and applying new commits on top of the old state would mix two tables.
        try:
            self.table = DeltaTable(str(self.path))
        except TableNotFoundError:
            self.table = None
            return None
        self._checked()
        return self.table

    def file_uris(self, conditions: Sequence[Filter]) -> list[str]:
        """The latest version's files whose statistics allow a row meeting every condition. delta-rs prunes in
        ~15 ms on a 31-column table of 181 files, growing with the files; the statistics kept here answer each
        further read of the version in well under a millisecond."""
        assert self.table is not None
        if self.table.version() != self.version:
            self._checked()
        if self._files is None:
            self._files = pa.table(self.table.get_add_actions(flatten=True))
        keep = _may_match(self._files, conditions) if conditions else None
        if keep is None:
            return self.table.file_uris(file_pruning_predicate=_pruning_predicate(conditions) if conditions else None)
        return [str(self.path / unquote(name)) for name in self._files.filter(keep).column("path").to_pylist()]

    def _checked(self) -> None:
        assert self.table is not None
        self.version = self.table.version()
        self.commit = _identity(_commit_file(self.path, self.version))
        self._files = None


class _Handles:
    """The handles this process keeps, one per table folder, at most ``capacity`` of them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # False: every call opens its table afresh and keeps nothing, as before handles were kept (benchmarks
        # compare the two in one process).
        self.keep = True
        self._handles: OrderedDict[Path, _Handle] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def latest(self, path: Path) -> Iterator[DeltaTable | None]:
        """The table at ``path`` at its latest version (None when there is none), for this thread alone until the
        block ends. Never time-travel it (``load_as_version``): open a ``DeltaTable`` of your own for that."""
        with self.handle(path) as handle:
            yield handle.table

    @contextmanager
    def handle(self, path: Path) -> Iterator[_Handle]:
        """As :meth:`latest`, the handle itself (its ``table`` at the latest version, or None)."""
        path = path.absolute()
        if not self.keep:
            handle = _Handle(path)
            handle.latest()
            yield handle
            return
        with self._lock:
            handle = self._handles.get(path)
            if handle is None:
                handle = self._handles[path] = _Handle(path)
            self._handles.move_to_end(path)
            while len(self._handles) > self.capacity:
                self._handles.popitem(last=False)
        with handle.lock:
            handle.latest()
            yield handle

    def forget(self) -> None:
        """Drop every handle, without waiting for a lock: a forked child's copy of a lock may be held by a thread
        of its parent that the child does not have."""
        self._handles = OrderedDict()
        self._lock = threading.Lock()


# This process's handles.
HANDLES = _Handles(HANDLES_KEPT)
os.register_at_fork(after_in_child=HANDLES.forget)


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

    def latest(self, schema: str, table: str) -> AbstractContextManager[DeltaTable | None]:
        """The table at its latest version, None when it does not exist: this process's one handle on it, for the
        calling thread alone until the ``with`` block ends. Time travel needs a ``DeltaTable`` of its own."""
        return HANDLES.latest(self.path(schema, table))

    def exists(self, schema: str, table: str) -> bool:
        with self.latest(schema, table) as found:
            return found is not None

    def schema_of(self, schema: str, table: str) -> pa.Schema | None:
        with self.latest(schema, table) as found:
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
        with self.latest(schema, table) as found:
            infos = [] if found is None else found.history(limit=limit)
        # delta-rs puts a writer's custom metadata beside its own fields in the commit info.
        return [Commit(version=info["version"], at=dt.datetime.fromtimestamp(info["timestamp"] / 1000, tz=dt.UTC),
                       metadata={k: v for k, v in info.items() if isinstance(v, str)})
                for info in infos]

    def version(self, schema: str, table: str) -> int | None:
        with self.latest(schema, table) as found:
            return None if found is None else found.version()

    def row_count(self, schema: str, table: str) -> int:
        """Rows in the current version, from the Delta log's file statistics (no data read)."""
        with self.latest(schema, table) as found:
            if found is None:
                return 0
            return sum(pa.table(found.get_add_actions(flatten=True)).column("num_records").to_pylist())

    def read(self, schema: str, table: str, *, days: DayRange | None = None, columns: Sequence[str] | None = None,
             version: int | None = None, filters: Sequence[Filter] = ()) -> pa.Table:
        """A table (some days of it, rows matching ``filters``, or as of an earlier version) as Arrow."""
        conditions = [*(days.as_filters() if days else []), *filters]
        # The conditions prune twice: files whose min/max statistics rule them out are not opened (a daily table
        # holds a file per day written), and the surviving files' rows are filtered exactly.
        with HANDLES.handle(self.path(schema, table)) as handle:
            found = handle.table
            if found is None:
                raise FileNotFoundError(f"table {self.full_name(schema, table)} does not exist at "
                                        f"{self.path(schema, table)}: materialize its asset first")
            # Reading the version a writer just committed (what checks do) is, most often, reading the latest one.
            at_latest = version is None or version == found.version()
            dataset = _dataset(found, conditions, handle.file_uris) if at_latest else None
        if dataset is None:
            dataset = _dataset(DeltaTable(str(self.path(schema, table)), version=version), conditions)
        # The files are scanned outside the handle's lock: the dataset holds its own list of them.
        return dataset.to_table(columns=list(columns) if columns else None,
                                filter=filters_to_expression(list(conditions)) if conditions else None)

    def file_uris(self, schema: str, table: str, filters: Sequence[Filter] = ()) -> list[str]:
        """The Parquet files of the current version (no deletion vectors: delta-rs writes none); with ``filters``,
        only those whose statistics do not rule out every row."""
        with HANDLES.handle(self.path(schema, table)) as handle:
            return [] if handle.table is None else handle.file_uris(filters)

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
        condition = " AND ".join([*_match_bounds(data, keys), *(f"target.{key} = source.{key}" for key in keys)])

        def commit() -> int:
            with self.latest(schema, table) as found:
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
            with self.latest(schema, table) as found:
                write_deltalake(
                    str(path) if found is None else found, data, mode=mode, predicate=predicate,
                    schema_mode=_schema_mode(mode, predicate) if allow_evolution and found is not None else None,
                    commit_properties=CommitProperties(custom_metadata=commit_metadata) if commit_metadata else None,
                )
                if found is not None:
                    # A commit through the handle moves it to the version it wrote.
                    return found.version()
            return self._created_version(schema, table)

        return self._committed(commit)

    def _created_version(self, schema: str, table: str) -> int:
        version = self.version(schema, table)
        assert version is not None, f"{self.full_name(schema, table)} was just written"
        return version

    def _committed(self, commit: Callable[[], ResultT]) -> ResultT:
        # delta-rs retries a conflicting commit itself; under several concurrent writers some still fail, and a
        # fresh attempt (re-reading the log) succeeds because the writes touch disjoint days or only append.
        retrying = Retrying(retry=retry_if_exception_type(CommitFailedError),
                            stop=stop_after_attempt(self.commit_attempts),
                            wait=wait_random_exponential(multiplier=0.05, max=2.0), reraise=True)
        return retrying(commit)

    def transaction_version(self, schema: str, table: str, app_id: str) -> int | None:
        """The last version an appender committed under ``app_id``, or None when it never did."""
        with self.latest(schema, table) as found:
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
            with self.latest(schema, table) as found:
                write_deltalake(str(path) if found is None else found, data, mode="append",
                                commit_properties=properties)
                if found is not None:
                    return found.version()
            return self._created_version(schema, table)

        return self._committed(commit)
