"""The online feature store of one endpoint: a published Arrow IPC or Parquet file held as a dict in memory.

A request pays one dict lookup per record, so the file is read and turned into ``{key tuple: feature tuple}``
once per (re)load. Values are plain Python objects, ready to be put in a row, logged as JSON or compared to a
request's typed fields.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlops_platform.serving.config import EndpointConfigError, FieldType

_PARQUET_MAGIC = b"PAR1"
_ARROW_FILE_MAGIC = b"ARROW1"


def arrow_field_type(kind: pa.DataType) -> FieldType | None:
    """The JSON type a request must use for a column of this Arrow type (None: no model-input scalar type)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_integer(kind):
        return "integer"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "number"
    if pa.types.is_boolean(kind):
        return "boolean"
    return None


def read_table(path: Path) -> pa.Table:
    """Read an Arrow IPC file or stream, or a Parquet file, told apart by their magic bytes."""
    if not path.is_file():
        raise EndpointConfigError(f"online store {path} does not exist: publish it before deploying")
    with path.open("rb") as handle:
        head = handle.read(6)
    if head[:4] == _PARQUET_MAGIC:
        return pq.read_table(path)
    with pa.memory_map(str(path)) as source:
        if head == _ARROW_FILE_MAGIC:
            return pa.ipc.open_file(source).read_all()
        return pa.ipc.open_stream(source).read_all()


class OnlineStore:
    """Feature rows by entity key, with the key columns' JSON types."""

    def __init__(self, path: Path, keys: Sequence[str], features: Sequence[str],
                 rows: dict[tuple, tuple], key_types: dict[str, FieldType | None]) -> None:
        self.path = path
        self.keys = tuple(keys)
        self.features = tuple(features)
        self.rows = rows
        self.key_types = key_types

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: tuple) -> tuple | None:
        return self.rows.get(key)

    def sample(self, count: int, seed: int = 0) -> list[tuple]:
        """Up to ``count`` feature rows: realistic values to check a compiled model against its pipeline."""
        rows = list(self.rows.values())
        return rows if len(rows) <= count else random.Random(seed).sample(rows, count)

    @classmethod
    def load(cls, path: str | Path, keys: Sequence[str], features: Sequence[str]) -> OnlineStore:
        path = Path(path)
        table = read_table(path)
        absent = [c for c in [*keys, *features] if c not in table.column_names]
        if absent:
            raise EndpointConfigError(
                f"online store {path} lacks columns {absent}; it has {table.column_names}"
            )
        for name in features:
            kind = table.schema.field(name).type
            if arrow_field_type(kind) is None and not pa.types.is_null(kind):
                raise EndpointConfigError(
                    f"online store {path}: feature column '{name}' has type {kind}; a store holds model "
                    "inputs only (string, integer, floating or boolean): cast it when publishing"
                )
        key_columns = [table.column(k).to_pylist() for k in keys]
        for name, values in zip(keys, key_columns, strict=True):
            if None in values:
                raise EndpointConfigError(f"online store {path}: key column '{name}' holds nulls")
        # Without keys the store is one row (the newest of each table), found by the empty key.
        key_tuples = list(zip(*key_columns, strict=True)) if keys else [()] * table.num_rows
        feature_columns: list[list[Any]] = [table.column(f).to_pylist() for f in features]
        feature_tuples = list(zip(*feature_columns, strict=True)) if features else [()] * table.num_rows
        rows = dict(zip(key_tuples, feature_tuples, strict=True))
        if len(rows) != table.num_rows:
            counts = collections.Counter(key_tuples)
            duplicate = next(k for k, n in counts.items() if n > 1)
            raise EndpointConfigError(
                f"online store {path}: {table.num_rows - len(rows)} duplicate keys on {list(keys)}, "
                f"e.g. {duplicate}; publish one row per key"
            )
        key_types = {k: arrow_field_type(table.schema.field(k).type) for k in keys}
        return cls(path, keys, features, rows, key_types)
