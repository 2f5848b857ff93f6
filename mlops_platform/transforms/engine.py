"""Where transformations run: the embedded engine (Polars, the default) or PySpark.

Transformations are narwhals functions of lazy frames (``mlops_platform.transforms``); an engine only turns
tables into lazy frames and results back into Arrow tables for the warehouse. The ``ComputeEngine`` resource
(``mlops_platform.resources.engine``) picks one by configuration and starts Spark on first use.

Both engines hand the warehouse the same canonical Arrow types (``canonical_arrow``), so a table written by one
engine can be appended to or partly replaced by the other without a schema-evolution error.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import narwhals as nw
import polars as pl
import pyarrow as pa

from mlops_platform.storage.spark import arrow_to_spark, is_spark_connect
from mlops_platform.storage.tables import DayRange, Filter, TableReader

CANONICAL_TIMESTAMP = pa.timestamp("us", tz="UTC")
# The comparisons of a warehouse filter (``storage.tables.Filter``), for an engine that applies them itself.
_COMPARISONS = {"=": operator.eq, "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
                ">": operator.gt, ">=": operator.ge, "in": lambda column, values: column.is_in(list(values)),
                "not in": lambda column, values: ~column.is_in(list(values))}


def canonical_type(kind: pa.DataType) -> pa.DataType:
    """The one Arrow type the warehouse receives for ``kind``, whichever engine produced it.

    Strings in any flavour become ``large_string`` (what Polars already emits, so the embedded engine pays no copy,
    and no 2 GiB offset limit). Timestamps become ``timestamp[us, UTC]``: Polars and Spark's ``TIMESTAMP_NTZ``
    return naive values, which on this platform are UTC wall-clock (datetimes are parsed from ``...Z`` strings and
    Spark sessions run in UTC); Spark's ``TIMESTAMP`` comes tagged with the session time zone, and Arrow keeps the
    instant when only the tag changes.
    """
    types = pa.types
    if types.is_string(kind) or types.is_large_string(kind) or types.is_string_view(kind):
        return pa.large_string()
    if types.is_binary(kind) or types.is_large_binary(kind) or types.is_binary_view(kind):
        return pa.large_binary()
    if types.is_timestamp(kind):
        return CANONICAL_TIMESTAMP
    if types.is_dictionary(kind):
        return canonical_type(kind.value_type)
    if any(test(kind) for test in (types.is_list, types.is_large_list, types.is_list_view, types.is_large_list_view)):
        return pa.large_list(canonical_field(kind.value_field))
    if types.is_struct(kind):
        return pa.struct([canonical_field(kind.field(i)) for i in range(kind.num_fields)])
    return kind


def canonical_field(field: pa.Field) -> pa.Field:
    # Nullability is dropped too: Spark marks some results non-nullable, and a table created with such a column
    # would refuse the other engine's rows.
    return pa.field(field.name, canonical_type(field.type), nullable=True)


def canonical_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([canonical_field(field) for field in schema])


def canonical_arrow(table: pa.Table) -> pa.Table:
    """``table`` with canonical types (see ``canonical_type``); a no-op when it already has them."""
    schema = canonical_schema(table.schema)
    return table if table.schema.equals(schema, check_metadata=True) else table.cast(schema)


class Engine(Protocol):
    name: str

    def from_arrow(self, table: pa.Table) -> nw.LazyFrame: ...

    def read(self, warehouse: TableReader, schema: str, table: str, days: DayRange | None = None,
             filters: Sequence[Filter] = (), columns: Sequence[str] | None = None) -> nw.LazyFrame:
        """``days`` of the table (all of it when None) and the rows matching ``filters``; only ``columns`` when
        given."""
        ...

    def to_arrow(self, frame: nw.LazyFrame) -> pa.Table: ...

    def reused(self, frame: nw.LazyFrame) -> AbstractContextManager[nw.LazyFrame]:
        """``frame``, computed once for the several results the block derives from it."""
        ...


class PolarsEngine:
    name = "polars"

    def from_arrow(self, table: pa.Table) -> nw.LazyFrame:
        return nw.from_native(pl.from_arrow(table).lazy())  # type: ignore[union-attr]

    def read(self, warehouse: TableReader, schema: str, table: str, days: DayRange | None = None,
             filters: Sequence[Filter] = (), columns: Sequence[str] | None = None) -> nw.LazyFrame:
        # The frame is made from what was read, so the columns are chosen by the reader, not pushed down later.
        return self.from_arrow(warehouse.read(schema, table, days=days, filters=filters, columns=columns))

    def to_arrow(self, frame: nw.LazyFrame) -> pa.Table:
        return canonical_arrow(frame.collect().to_arrow())

    @contextmanager
    def reused(self, frame: nw.LazyFrame) -> Iterator[nw.LazyFrame]:
        yield frame.collect().lazy()


class SparkEngine:
    name = "spark"

    def __init__(self, session) -> None:  # pyspark.sql.SparkSession, imported lazily with the JVM
        self.session = session

    def from_arrow(self, table: pa.Table) -> nw.LazyFrame:
        # Canonical first: Spark would read a naive timestamp in the session's time zone, which need not be UTC.
        return nw.from_native(arrow_to_spark(self.session, canonical_arrow(table)))

    def read(self, warehouse: TableReader, schema: str, table: str, days: DayRange | None = None,
             filters: Sequence[Filter] = (), columns: Sequence[str] | None = None) -> nw.LazyFrame:
        frame = nw.from_native(warehouse.spark_frame(self.session, schema, table, days))
        for column, comparison, value in filters:
            frame = frame.filter(_COMPARISONS[comparison](nw.col(column), value))
        return frame.select(*columns) if columns else frame

    def to_arrow(self, frame: nw.LazyFrame) -> pa.Table:
        return canonical_arrow(frame.to_native().toArrow())

    @contextmanager
    def reused(self, frame: nw.LazyFrame) -> Iterator[nw.LazyFrame]:
        native = frame.to_native()
        if is_spark_connect(native):
            # Serverless compute (Spark Connect) refuses the caching APIs; each result recomputes the frame there.
            yield frame
            return
        native.persist()
        try:
            yield frame
        finally:
            native.unpersist()
