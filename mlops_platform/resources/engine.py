"""The ``ComputeEngine`` resource: picks where transformations run (``mlops_platform.transforms.engine``) by
configuration, Spark started on first use (``mlops_platform.resources.spark``), so a run that never touches Spark
never starts a JVM.
"""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from mlops_platform.transforms.engine import (
    Engine,
    PolarsEngine,
    SparkEngine,
    canonical_arrow,
    canonical_schema,
    canonical_type,
)

# Importers of the resource module also find the plain engines here, where they have always been.
__all__ = ["ComputeEngine", "Engine", "PolarsEngine", "SparkEngine", "canonical_arrow", "canonical_schema",
           "canonical_type"]


class ComputeEngine(dg.ConfigurableResource):
    """Chooses the engine that runs the platform's transformations."""

    kind: Literal["polars", "spark"] = "polars"
    pyspark: dg.ConfigurableResource = Field(
        description="Spark started on first use (mlops_platform.resources.spark.spark_sessions)")

    def engine(self) -> Engine:
        if self.kind == "spark":
            return SparkEngine(self.pyspark.spark_session)
        return PolarsEngine()
