"""Names of everything a use case owns, one rule each: tables, asset key paths, jobs, sensors, models, experiments.

A use case is a namespace. Its tables live in schemas of their own (``<usecase>_<layer>``, so
``local.flights_silver.flights`` locally and ``mlops_prod.flights_silver.flights`` in Unity Catalog), its asset keys
start with its name (``flights/silver/flights``), its registered models are ``<usecase>_<model>``: two use cases may
both have a source called ``flights`` or a model called ``delay`` and never touch each other's data.

Plain Python, no Dagster: plain libraries name tables with it, ``defs`` turns key paths into ``AssetKey``s.
"""

from __future__ import annotations

from typing import NamedTuple

# The layers a use case's tables and assets are grouped in; each is a schema of its own per use case.
LANDING = "landing"
BRONZE = "bronze"
SILVER = "silver"
GOLD = "gold"
FEATURES = "features"
TRAINING = "training"
MODELS = "models"
REGISTRY = "registry"
PREDICTIONS = "predictions"
MONITORING = "monitoring"
SERVING = "serving"

TRAINING_SET = "training_set"
# The training set's column naming each row's split, and the splits in the order they are used.
SPLIT = "split"
SPLITS = ("train", "validation", "test")
QUARANTINE_SUFFIX = "_quarantine"
CHAMPION_SUFFIX = "_champion"
DRIFT_SUFFIX = "_drift"
DRIFT_PAGE_SUFFIX = "_drift_page"
ONLINE_STORE_SUFFIX = "_online_store"

# Tags every asset of a use case carries: what the UI filters on, and what jobs and remote twins select by.
USECASE_TAG = "mlops/usecase"
STAGE_TAG = "mlops/stage"
# On a snapshot run: the day of the snapshot it processes (the landing sensor and the replay set it).
SNAPSHOT_DAY_TAG = "mlops/snapshot_day"
# On an asset a person materializes from the UI or the CLI when they want it (Evidently's full page): no job selects it.
ON_DEMAND_TAG = "mlops/on_demand"
# On any run: "true" lets it replace days with fewer or worse rows than they hold (``mlops run --allow-shrink``).
ALLOW_SHRINK_TAG = "mlops/allow_shrink"
# MLflow run tags of a trained model: the training-set table and Delta version it learnt from. Monitoring reads the
# version back to rebuild the exact reference the model saw.
TRAINING_SET_TABLE_TAG = "training_set.table"
TRAINING_SET_VERSION_TAG = "training_set.version"


class TableName(NamedTuple):
    """A table's ``schema`` and ``table`` within the environment's catalog: ``warehouse.read(*name)``."""

    schema: str
    table: str

    def qualified(self, catalog: str) -> str:
        return f"{catalog}.{self.schema}.{self.table}"


# The one table shared by every use case: what the serving process records of each request it answers (AI Gateway
# inference-table columns, ``mlops_platform.serving.inference_table``), read by monitoring.
INFERENCE_LOG = TableName(MONITORING, "inference_log")


def schema(usecase: str, layer: str) -> str:
    return f"{usecase}_{layer}"


def table(usecase: str, layer: str, name: str) -> TableName:
    return TableName(schema(usecase, layer), name)


def quarantine(source: str) -> str:
    return f"{source}{QUARANTINE_SUFFIX}"


def training_set_table(usecase: str) -> TableName:
    return table(usecase, TRAINING, TRAINING_SET)


def predictions_table(usecase: str, model: str) -> TableName:
    return table(usecase, PREDICTIONS, model)


def monitoring_table(usecase: str, model: str, metrics: str) -> TableName:
    """A model's monitoring table, e.g. ``flights_monitoring.delay_drift_metrics``: each model owns its rows."""
    return table(usecase, MONITORING, f"{model}_{metrics}")


def alerts_table(usecase: str) -> TableName:
    return table(usecase, MONITORING, "alerts")


def asset_path(usecase: str, layer: str, name: str) -> list[str]:
    return [usecase, layer, name]


def champion_asset(model: str) -> str:
    return f"{model}{CHAMPION_SUFFIX}"


def monitoring_asset(model: str) -> str:
    return f"{model}{DRIFT_SUFFIX}"


def drift_page_asset(model: str) -> str:
    return f"{model}{DRIFT_PAGE_SUFFIX}"


def online_store_asset(endpoint: str) -> str:
    return f"{endpoint}{ONLINE_STORE_SUFFIX}"


def endpoint_asset(endpoint: str, stage: str) -> str:
    return f"{endpoint}_{stage}"


def registered_model(usecase: str, model: str) -> str:
    """The model's name in the MLflow registry (a Unity Catalog environment prefixes its catalog and schema)."""
    return f"{usecase}_{model}"


def experiment(usecase: str, model: str) -> str:
    return f"/{usecase}/{model}"


def daily_job(usecase: str) -> str:
    return f"{usecase}_daily"


def snapshot_job(usecase: str) -> str:
    return f"{usecase}_snapshot"


def training_job(usecase: str) -> str:
    return f"{usecase}_training"


def landing_sensor(usecase: str) -> str:
    return f"{usecase}_landing_sensor"


def retraining_sensor(usecase: str) -> str:
    return f"{usecase}_retraining_sensor"
