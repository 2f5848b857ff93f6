"""Environments (local, dev, staging, prod): where data lives, which engine runs, Databricks compute, MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops_platform.settings.base import PROJECT_ROOT, UNITY_CATALOG_REGISTRY, FieldError, _Strict
from mlops_platform.settings.usecase import UseCaseConfig

StepKind = Literal["tables", "training", "monitoring"]


class ClusterSpec(_Strict):
    """The new job cluster one kind of step runs on: created for the one-time run and gone after it."""

    spark_version: str = Field(description="a Databricks runtime from 15.4 LTS on whose Python matches "
                                           "requires-python (3.11)")
    node_type_id: str
    num_workers: int = Field(ge=1)
    spark_conf: dict[str, str] = {}


class ServerlessSpec(_Strict):
    """Serverless jobs compute for one kind of step: no cluster to size or wait for; the wheel is a dependency of
    the task's serverless environment."""

    serverless: Literal[True]
    environment_version: str = Field(default="2", description="the serverless environment; 2 runs Python 3.11")


# The data-quality API's aggregation windows, by the names its docs give them.
Granularity = Literal["5 minutes", "30 minutes", "1 hour", "1 day", "1 week", "2 weeks", "3 weeks", "4 weeks",
                      "1 month", "1 year"]


class DataProfiling(_Strict):
    """A Databricks data-profiling monitor on each endpoint's AI Gateway inference table, created beside the
    platform's own monitoring through the data-quality API: a time-series profile on ``request_time`` per window
    of ``granularities``, sliced by ``slicing_exprs`` (by default per served entity), written to
    ``<payload table>_profile_metrics`` / ``_drift_metrics`` in ``output_schema``."""

    output_schema: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$",
                                      description="schema of the metric tables; default: the inference tables'")
    granularities: list[Granularity] = Field(default=["1 day"], min_length=1)
    slicing_exprs: list[str] = ["served_entity_id"]
    assets_dir: str | None = Field(default=None, description="workspace folder of the monitor's dashboard")


class DatabricksOnlineStore(_Strict):
    """The Online Feature Store (Lakebase) that endpoints look features up in by key: each feature table an
    endpoint uses is published to it as ``<feature table>_online``, and models are logged with their feature
    lookups, so a request carries keys and request fields only, as locally."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    capacity: Literal["CU_1", "CU_2", "CU_4", "CU_8"] = "CU_1"
    # Both modes sync from the feature table's change data feed, which publishing turns on.
    publish_mode: Literal["TRIGGERED", "CONTINUOUS"] = "TRIGGERED"
    available_timeout_minutes: float = Field(default=30, gt=0, description="how long a new store may take to start")


class DatabricksServingConfig(_Strict):
    """Model Serving in the workspace: where AI Gateway inference tables go, how long a deploy may take, and the
    optional data-profiling monitor and online feature store."""

    inference_catalog: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$",
                                          description="default: the environment's catalog")
    inference_schema: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$",
                                         description="default: the schema of the local inference log")
    timeout_minutes: float = Field(default=30, gt=0, description="how long an endpoint may take to be ready")
    data_profiling: DataProfiling | None = None
    online_store: DatabricksOnlineStore | None = None


class DatabricksConfig(_Strict):
    """Where the heavy steps run: the workspace (its credentials are named here, never given), the platform wheel
    the jobs install, this config folder as the jobs see it, and the compute of each kind of step."""

    host_env: str = "DATABRICKS_HOST"
    token_env: str = "DATABRICKS_TOKEN"
    sql_warehouse_id_env: str = Field(default="DATABRICKS_SQL_WAREHOUSE_ID",
                                      description="names the SQL warehouse the orchestrator reads tables with")
    wheel: str = Field(description="the platform wheel the jobs install, e.g. a Unity Catalog volume path")
    config_dir: str = Field(description="this config/ folder where the jobs read it, e.g. a volume path")
    compute: dict[StepKind, ClusterSpec | ServerlessSpec]
    pipes_volume: str | None = Field(
        default=None, description="a volume folder for Dagster Pipes' exchange files with serverless tasks")
    poll_interval_seconds: float = Field(default=10, gt=0)
    serving: DatabricksServingConfig = DatabricksServingConfig()

    @model_validator(mode="after")
    def _every_step_kind_has_compute(self) -> DatabricksConfig:
        missing = sorted(set(StepKind.__args__) - set(self.compute))
        if missing:
            raise FieldError("compute", f"no compute for step kinds {missing}", sorted(self.compute))
        serverless = sorted(kind for kind, spec in self.compute.items() if isinstance(spec, ServerlessSpec))
        if serverless and not self.pipes_volume:
            raise FieldError("pipes_volume", f"serverless steps {serverless} need pipes_volume (where Dagster Pipes "
                             "exchanges files with them)")
        return self


class LocalServingConfig(_Strict):
    """Where the local serving process listens (environments without ``databricks``); port 0 picks a free one."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class MlflowConfig(_Strict):
    """Where an environment records runs and registers models; without URIs, a SQLite store under ``data_dir``."""

    tracking_uri: str | None = Field(default=None, description="e.g. databricks: the workspace's tracking server")
    registry_uri: str | None = Field(default=None, description="e.g. databricks-uc: the Unity Catalog model registry; "
                                                               "the tracking URI when unset")
    model_schema: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_]*$",
        description="the schema of the environment's catalog that holds its models: with it, a model's registered "
                    "name is the Unity Catalog name <catalog>.<model_schema>.<registered_name>")
    experiment_root: str = Field(default="", description="the workspace folder experiments are created in, e.g. "
                                                         "/Shared/mlops_platform/prod")

    @model_validator(mode="after")
    def _unity_catalog_names_need_its_registry(self) -> MlflowConfig:
        if self.model_schema and self.registry_uri != UNITY_CATALOG_REGISTRY:
            raise FieldError("registry_uri", "model_schema names models in Unity Catalog: it needs registry_uri: "
                             f"{UNITY_CATALOG_REGISTRY}")
        return self


class EnvironmentConfig(_Strict):
    name: str
    catalog: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    engine: Literal["polars", "spark"]
    # delta: Delta tables in folders under data_dir (delta-rs); unity_catalog: registered Unity Catalog tables.
    tables: Literal["delta", "unity_catalog"] = "delta"
    data_dir: Path
    usecases: list[str] = Field(min_length=1)
    databricks: DatabricksConfig | None = None
    serving: LocalServingConfig = LocalServingConfig()
    mlflow: MlflowConfig = MlflowConfig()

    @model_validator(mode="after")
    def _unity_catalog_needs_databricks(self) -> EnvironmentConfig:
        if self.tables == "unity_catalog" and self.databricks is None:
            raise FieldError("tables", "tables: unity_catalog needs a databricks section (the workspace holding the "
                                       "catalog)", self.tables)
        if self.mlflow.model_schema and self.databricks is None:
            raise FieldError("mlflow.model_schema", "mlflow.model_schema needs a databricks section (the workspace "
                                                     "holding the catalog)", self.mlflow.model_schema)
        return self

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else PROJECT_ROOT / value


class Settings(BaseModel):
    """The chosen environment with its use cases, and the folders derived from it."""

    model_config = ConfigDict(frozen=True)

    environment: EnvironmentConfig
    usecases: dict[str, UseCaseConfig]

    @property
    def data_dir(self) -> Path:
        return self.environment.data_dir

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def warehouse_dir(self) -> Path:
        return self.data_dir / "warehouse"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def serving_dir(self) -> Path:
        """Deployed endpoint configurations, model copies and online stores of the local serving process."""
        return self.data_dir / "serving"
