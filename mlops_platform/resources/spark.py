"""The in-process Spark session, and Arrow in and out of it on every Spark the platform runs on.

On a laptop and in the orchestrator the session comes from dagster-pyspark's ``LazyPySparkResource`` (``local[2]``,
started on first use, so a run that never touches Spark never starts a JVM). Inside a Databricks job it is the
runtime's own session: the wheel installed there does not depend on dagster-pyspark, whose PyPI dependency on
``pyspark`` would install a second Spark over the runtime's (see the ``orchestrator`` extra in pyproject.toml).

Databricks runtimes 15.4 LTS and 16.4 LTS run Spark 3.5, whose ``createDataFrame`` does not take an Arrow table;
``arrow_to_spark`` goes through pandas there, with the Arrow schema stated so no type is guessed. Their
``DataFrame.toArrow`` is backported (from runtime 15.3 on), so results come back as Arrow everywhere.
"""

from __future__ import annotations

import os

import dagster as dg
import pyarrow as pa

LOCAL_SPARK_CONFIG = {
    "spark.master": "local[2]",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.driver.memory": "4g",
}
# Set on every Databricks cluster: there Spark is the cluster's, configured by its cluster spec.
DATABRICKS_RUNTIME_ENV = "DATABRICKS_RUNTIME_VERSION"


def on_databricks() -> bool:
    return bool(os.environ.get(DATABRICKS_RUNTIME_ENV))


class DatabricksRuntimeSpark(dg.ConfigurableResource):
    """The Databricks runtime's Spark session, for steps running inside a Databricks job."""

    @property
    def spark_session(self):  # pyspark.sql.SparkSession, the runtime's
        from pyspark.sql import SparkSession

        return SparkSession.builder.getOrCreate()


def spark_sessions() -> dg.ConfigurableResource:
    """This process's Spark resource: an object with a ``spark_session`` that starts Spark on first use."""
    if on_databricks():
        return DatabricksRuntimeSpark()
    # Installed with the orchestrator extra only (see the module's docstring).
    from dagster_pyspark import LazyPySparkResource

    return LazyPySparkResource(spark_config=LOCAL_SPARK_CONFIG)


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
