"""The in-process Spark session as a resource, on a laptop, in the orchestrator and inside a Databricks job.

On a laptop and in the orchestrator the session comes from dagster-pyspark's ``LazyPySparkResource`` (``local[2]``,
started on first use, so a run that never touches Spark never starts a JVM). Inside a Databricks job it is the
runtime's own session: the wheel installed there does not depend on dagster-pyspark, whose PyPI dependency on
``pyspark`` would install a second Spark over the runtime's (see the ``orchestrator`` extra in pyproject.toml).

Arrow in and out of Spark is plain code in ``mlops_platform.storage.spark``.
"""

from __future__ import annotations

import os

import dagster as dg

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
