"""Where transformations run: the embedded engine (Polars, the default) or PySpark, chosen by configuration.

Transformations are narwhals functions of lazy frames (``mlops_platform.transforms``); an engine only turns
tables into lazy frames and results back into Arrow tables for the warehouse. Spark comes from dagster-pyspark's
``LazyPySparkResource``, so a run that never touches Spark never starts a JVM.
"""

from __future__ import annotations

from typing import Literal, Protocol

import dagster as dg
import narwhals as nw
import polars as pl
import pyarrow as pa
from dagster_pyspark import LazyPySparkResource

from mlops_platform.resources.warehouse import DayRange, DeltaWarehouse

LOCAL_SPARK_CONFIG = {
    "spark.master": "local[2]",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.driver.memory": "4g",
}


class Engine(Protocol):
    name: str

    def from_arrow(self, table: pa.Table) -> nw.LazyFrame: ...

    def read(self, warehouse: DeltaWarehouse, schema: str, table: str, days: DayRange | None = None
             ) -> nw.LazyFrame: ...

    def to_arrow(self, frame: nw.LazyFrame) -> pa.Table: ...


class PolarsEngine:
    name = "polars"

    def from_arrow(self, table: pa.Table) -> nw.LazyFrame:
        return nw.from_native(pl.from_arrow(table).lazy())  # type: ignore[union-attr]

    def read(self, warehouse: DeltaWarehouse, schema: str, table: str, days: DayRange | None = None
             ) -> nw.LazyFrame:
        return self.from_arrow(warehouse.read(schema, table, days=days))

    def to_arrow(self, frame: nw.LazyFrame) -> pa.Table:
        return frame.collect().to_arrow()


class SparkEngine:
    name = "spark"

    def __init__(self, session) -> None:  # pyspark.sql.SparkSession, imported lazily with the JVM
        self.session = session

    def from_arrow(self, table: pa.Table) -> nw.LazyFrame:
        return nw.from_native(self.session.createDataFrame(table))

    def read(self, warehouse: DeltaWarehouse, schema: str, table: str, days: DayRange | None = None
             ) -> nw.LazyFrame:
        # Local Spark has no Delta reader here (delta-spark needs Maven); the table's current Parquet files are the
        # same snapshot, since delta-rs writes no deletion vectors.
        uris = warehouse.file_uris(schema, table)
        if not uris:
            return self.from_arrow(warehouse.read(schema, table, days=days))
        frame = nw.from_native(self.session.read.parquet(*uris))
        if days is not None:
            frame = frame.filter(nw.col(days.column).is_between(days.first, days.last, closed="both"))
        return frame

    def to_arrow(self, frame: nw.LazyFrame) -> pa.Table:
        return frame.to_native().toArrow()


class ComputeEngine(dg.ConfigurableResource):
    """Chooses the engine that runs the platform's transformations."""

    kind: Literal["polars", "spark"] = "polars"
    pyspark: LazyPySparkResource

    def engine(self) -> Engine:
        if self.kind == "spark":
            return SparkEngine(self.pyspark.spark_session)
        return PolarsEngine()
