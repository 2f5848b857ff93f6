"""Which environments log models with their feature lookups: those whose feature tables are Unity Catalog tables and
whose models go to the Unity Catalog registry, i.e. Databricks. Elsewhere models are logged as before."""

from __future__ import annotations

from mlops_platform import names
from mlops_platform.ml.feature_lookups import FeatureLookupLogger, lookup_specs, training_columns
from mlops_platform.ml.model_data import TrainingLineage
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.unity_catalog import UnityCatalogWarehouse
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.settings import UNITY_CATALOG_REGISTRY, ModelConfig, UseCaseConfig


def feature_lookup_logger(usecase: UseCaseConfig, config: ModelConfig, warehouse: Warehouse,
                          mlflow: MlflowTracking, lineage: TrainingLineage) -> FeatureLookupLogger | None:
    """The logger a model of ``usecase`` is logged with on Databricks, or None (plain ``mlflow.sklearn``)."""
    if not isinstance(warehouse, UnityCatalogWarehouse) or mlflow.registry != UNITY_CATALOG_REGISTRY:
        return None
    from mlops_platform.features import feature_columns

    lookups = lookup_specs(usecase, lambda table: warehouse.full_name(*names.table(usecase.name, names.FEATURES,
                                                                                  table)))
    columns = training_columns(usecase, lookups, config.label)
    features = set(feature_columns(usecase))
    # Lazy: the frame only names the rows; Feature Engineering reads what it needs when the model is logged.
    rows = (warehouse.pyspark.spark_session.read.option("versionAsOf", lineage.version).table(lineage.table)
            .select(*columns))
    exclude = [column for column in columns if column not in features and column != config.label]
    return FeatureLookupLogger(lookups, rows, config.label, exclude)
