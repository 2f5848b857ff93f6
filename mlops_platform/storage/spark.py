"""Arrow in and out of Spark on every Spark the platform runs on, without Dagster.

Databricks runtimes 15.4 LTS and 16.4 LTS run Spark 3.5, whose ``createDataFrame`` does not take an Arrow table;
``arrow_to_spark`` goes through pandas there, with the Arrow schema stated so no type is guessed. Their
``DataFrame.toArrow`` is backported (from runtime 15.3 on), so results come back as Arrow everywhere.
"""

from __future__ import annotations

import pyarrow as pa


def is_spark_connect(frame) -> bool:
    """Whether ``frame`` (a pyspark DataFrame) belongs to a Spark Connect session, as on serverless compute."""
    return type(frame).__module__.startswith("pyspark.sql.connect")


def _spark_major(session) -> int:
    return int(session.version.split(".")[0])


def _without_large_types(kind: pa.DataType) -> pa.DataType:
    """``kind`` with 32-bit offsets, the only ones Spark 3.5's Arrow schema conversion knows."""
    types = pa.types
    if types.is_large_string(kind):
        return pa.string()
    if types.is_large_binary(kind):
        return pa.binary()
    if types.is_large_list(kind) or types.is_list(kind):
        return pa.list_(_without_large_types(kind.value_type))
    if types.is_struct(kind):
        return pa.struct([pa.field(field.name, _without_large_types(field.type))
                          for field in (kind.field(i) for i in range(kind.num_fields))])
    return kind


def arrow_to_spark_via_pandas(session, table: pa.Table):
    """``table`` as a Spark DataFrame through pandas with its schema stated: the route on Spark 3.5."""
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = pa.schema([pa.field(field.name, _without_large_types(field.type)) for field in table.schema])
    return session.createDataFrame(table.to_pandas(), schema=from_arrow_schema(schema))


def arrow_to_spark(session, table: pa.Table):
    if _spark_major(session) >= 4:
        return session.createDataFrame(table)
    return arrow_to_spark_via_pandas(session, table)
