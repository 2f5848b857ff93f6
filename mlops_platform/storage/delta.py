"""Delta tables in folders, named like Unity Catalog (``catalog.schema.table``), through delta-rs alone.

What a process that must not import Dagster needs from the warehouse (the serving process writes its inference table
through this): create a table, append to it in one commit, read it, and make an append idempotent with a Delta app
transaction. An append tagged ``(app_id, version)`` records that version in the same commit as its rows, so a writer
that restarts reads :meth:`DeltaTables.transaction_version` and skips what it already committed: a crash between the
commit and the writer's own bookkeeping can never write rows twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Schema, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

# A row filter as (column, operator, value), as delta-rs takes it: ``("request_date", ">=", date(2013, 1, 1))``.
Filter = tuple[str, str, Any]

# delta-rs retries a conflicting commit itself; several processes appending at once still lose some races, and a
# fresh attempt that re-reads the log succeeds because appends never conflict on data.
_commit_retry = retry(retry=retry_if_exception_type(CommitFailedError), stop=stop_after_attempt(6),
                      wait=wait_random_exponential(multiplier=0.05, max=2.0), reraise=True)


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



@dataclass(frozen=True)
class DeltaTables:
    """The Delta tables under ``root``: one folder per ``schema/table``."""

    root: str | Path
    catalog: str

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

    def read(self, schema: str, table: str, *, columns: Sequence[str] | None = None,
             filters: Sequence[Filter] = ()) -> pa.Table:
        found = self.table(schema, table)
        if found is None:
            raise FileNotFoundError(f"table {self.full_name(schema, table)} does not exist at "
                                    f"{self.path(schema, table)}")
        return found.to_pyarrow_table(columns=list(columns) if columns else None, filters=list(filters) or None)

    def transaction_version(self, schema: str, table: str, app_id: str) -> int | None:
        """The last version an appender committed under ``app_id``, or None when it never did."""
        found = self.table(schema, table)
        return None if found is None else found.transaction_version(app_id)

    @_commit_retry
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
        write_deltalake(str(path), data, mode="append", commit_properties=properties)
        return DeltaTable(str(path)).version()
