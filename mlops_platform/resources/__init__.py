"""Typed resources the assets use; ``build_resources`` derives them from the chosen environment."""

from __future__ import annotations

import dagster as dg

from mlops_platform.resources.alerts import alert_sinks
from mlops_platform.resources.databricks import databricks_workspace
from mlops_platform.resources.engine import ComputeEngine
from mlops_platform.resources.landing_zone import LandingZone
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.reports import ReportStore
from mlops_platform.resources.serving import LocalServing, ServingTarget
from mlops_platform.resources.spark import spark_sessions
from mlops_platform.resources.unity_catalog import UnityCatalogWarehouse
from mlops_platform.resources.warehouse import DeltaWarehouse, Warehouse
from mlops_platform.settings import Settings


def build_warehouse(settings: Settings, pyspark: dg.ConfigurableResource) -> Warehouse:
    env = settings.environment
    if env.tables == "delta":
        return DeltaWarehouse(root=str(settings.warehouse_dir), catalog=env.catalog)
    # Without a databricks section the environment runs inside a Databricks job (mlops_platform.remote): Spark.
    databricks = env.databricks
    return UnityCatalogWarehouse(
        catalog=env.catalog, pyspark=pyspark,
        workspace=databricks_workspace(databricks) if databricks else None,
        sql_warehouse_id=dg.EnvVar(databricks.sql_warehouse_id_env) if databricks else None,
    )


def build_mlflow(settings: Settings) -> MlflowTracking:
    env = settings.environment
    config = env.mlflow
    if config.tracking_uri is None:
        return MlflowTracking(tracking_uri=f"sqlite:///{settings.mlflow_dir}/mlflow.db", registry_uri=config.registry_uri,
                              artifact_root=str(settings.mlflow_dir / "artifacts"),
                              experiment_root=config.experiment_root)
    # Inside a Databricks job (no databricks section left) MLflow authenticates as the job itself.
    return MlflowTracking(tracking_uri=config.tracking_uri, registry_uri=config.registry_uri,
                          experiment_root=config.experiment_root,
                          workspace=databricks_workspace(env.databricks) if env.databricks else None)


def serving_target(settings: Settings) -> ServingTarget:
    """The serving target of an environment: Databricks when it has a ``databricks`` section, else local."""
    env = settings.environment
    if env.databricks is not None:
        from mlops_platform.resources.databricks_serving import databricks_serving

        return databricks_serving(settings)
    return LocalServing(serving_dir=str(settings.serving_dir), host=env.serving.host, port=env.serving.port,
                        warehouse_root=str(settings.warehouse_dir), catalog=env.catalog)


def build_resources(settings: Settings) -> dict[str, object]:
    env = settings.environment
    pyspark = spark_sessions()
    warehouse = build_warehouse(settings, pyspark)
    return {
        "warehouse": warehouse,
        "landing": LandingZone(root=str(settings.landing_dir),
                               workspace=databricks_workspace(env.databricks) if env.databricks else None),
        "engine": ComputeEngine(kind=env.engine, pyspark=pyspark),
        "reports": ReportStore(root=str(settings.reports_dir)),
        "mlflow": build_mlflow(settings),
        "alerts": alert_sinks(settings, warehouse),
        "serving": serving_target(settings),
    }
