"""Typed resources the assets use; ``build_resources`` derives them from the chosen environment."""

from __future__ import annotations

from dagster_pyspark import LazyPySparkResource

from mlops_platform.resources.alerts import alert_sinks
from mlops_platform.resources.engine import LOCAL_SPARK_CONFIG, ComputeEngine
from mlops_platform.resources.landing_zone import LandingZone
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.reports import ReportStore
from mlops_platform.resources.serving import serving_target
from mlops_platform.resources.warehouse import DeltaWarehouse
from mlops_platform.settings import Settings


def build_resources(settings: Settings) -> dict[str, object]:
    env = settings.environment
    return {
        "warehouse": DeltaWarehouse(root=str(settings.warehouse_dir), catalog=env.catalog),
        "landing": LandingZone(root=str(settings.landing_dir)),
        "engine": ComputeEngine(kind=env.engine, pyspark=LazyPySparkResource(spark_config=LOCAL_SPARK_CONFIG)),
        "reports": ReportStore(root=str(settings.reports_dir)),
        "mlflow": MlflowTracking(tracking_uri=f"sqlite:///{settings.mlflow_dir}/mlflow.db",
                                 artifact_root=str(settings.mlflow_dir / "artifacts")),
        "alerts": alert_sinks(settings),
        "serving": serving_target(settings),
    }
