"""Typed configuration: environments and use cases under ``config/``, and the one place that picks the environment.

``MLOPS_ENV`` names the environment (``local`` when unset). Every file is validated when it is loaded; a wrong
value fails with the file, the field and what was expected, before any asset runs.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR_ENV = "MLOPS_CONFIG_DIR"
ENV_VAR = "MLOPS_ENV"
DATA_DIR_ENV = "MLOPS_DATA_DIR"
SERVING_PORT_ENV = "MLOPS_SERVING_PORT"
UNITY_CATALOG_REGISTRY = "databricks-uc"

ColumnType = Literal["string", "int", "float", "bool", "date", "datetime"]
Severity = Literal["ERROR", "WARN"]
ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file is missing or holds a value that does not fit its schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """A row-level data-quality rule. Nulls pass ``range`` and ``accepted_values``; ``not_null`` catches them."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["not_null", "range", "accepted_values"]
    column: str
    min: float | None = None
    max: float | None = None
    values: list[str | int | float | bool] | None = None
    severity: Severity = "ERROR"
    # A table-level check built from the rule passes while at most this share of rows breaks it.
    max_failing_share: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _arguments_fit_kind(self) -> Rule:
        if self.kind == "range" and self.min is None and self.max is None:
            raise ValueError(f"rule '{self.name}': a range rule needs min, max or both")
        if self.kind == "accepted_values" and not self.values:
            raise ValueError(f"rule '{self.name}': an accepted_values rule needs a non-empty 'values' list")
        return self


class DailyPartition(_Strict):
    """How a source's rows map to a day: the date is assembled from year/month/day columns."""

    column: str
    from_parts: Annotated[list[str], Field(min_length=3, max_length=3)]


class SourceConfig(_Strict):
    """A source the landing zone receives: its file format, typed columns, natural keys and quality rules."""

    description: str
    format: Literal["csv", "jsonl"]
    columns: dict[str, ColumnType]
    keys: list[str] = Field(min_length=1)
    partition: DailyPartition | None = None
    rules: list[Rule] = []
    max_quarantine_share: float = Field(default=0.01, ge=0.0, le=1.0)
    allow_schema_evolution: bool = False

    @model_validator(mode="after")
    def _columns_exist(self) -> SourceConfig:
        known = set(self.columns) | ({self.partition.column} if self.partition else set())
        for name in self.keys:
            if name not in known:
                raise ValueError(f"key column '{name}' is not among the declared columns")
        for rule in self.rules:
            if rule.column not in known:
                raise ValueError(f"rule '{rule.name}' names unknown column '{rule.column}'")
        if self.partition:
            missing = [p for p in self.partition.from_parts if p not in self.columns]
            if missing:
                raise ValueError(f"partition parts {missing} are not among the declared columns")
        return self

    @property
    def is_daily(self) -> bool:
        return self.partition is not None


class GoldConfig(_Strict):
    """A gold table built by a function of the use case's module from silver tables."""

    description: str
    builder: str
    inputs: list[str] = Field(min_length=1)
    partition_column: str
    keys: list[str] = Field(min_length=1)
    reconcile_with: str
    checks: list[Rule] = []


class FeatureTableConfig(_Strict):
    """A governed feature table. Two kinds, both pure configuration:

    - ``rolling``: aggregates of a daily ``source`` table over windows of days strictly before each day, per
      ``group_by``; keyed by ``group_by`` + ``feature_date``. Knowable before any flight of ``feature_date``.
    - ``lookup``: columns of a silver table by its keys (``rename`` maps source to feature column names).
    """

    description: str
    kind: Literal["rolling", "lookup"]
    source: str
    layer: Literal["silver", "gold"] = "gold"
    keys: list[str] = Field(min_length=1)
    timestamp_key: str | None = None
    group_by: list[str] = []
    prefix: str = ""
    windows_days: list[int] = []
    aggregations: dict[str, Literal["mean", "sum", "count", "max"]] = {}
    rename: dict[str, str] = {}
    columns: dict[str, str] = Field(min_length=1, description="feature column -> description")

    @model_validator(mode="after")
    def _kind_arguments(self) -> FeatureTableConfig:
        if self.kind == "rolling":
            if not (self.group_by and self.prefix and self.windows_days and self.aggregations):
                raise ValueError("a rolling feature table needs group_by, prefix, windows_days and aggregations")
            produced = set(self.rolling_columns())
            if produced != set(self.columns):
                raise ValueError(f"columns must describe exactly the produced features {sorted(produced)}")
        return self

    def rolling_columns(self) -> list[str]:
        """Names of a rolling table's features: ``<prefix>_<column>_<agg>_<N>d`` and ``<prefix>_flights_<N>d``."""
        return [
            name
            for days in self.windows_days
            for name in [
                *(f"{self.prefix}_{column}_{agg}_{days}d" for column, agg in self.aggregations.items()),
                f"{self.prefix}_rows_{days}d",
            ]
        ]


class FeatureLookup(_Strict):
    """Join a feature table into the training set: ``keys`` maps training-set columns to the table's keys."""

    table: str
    keys: dict[str, str] = Field(min_length=1)


class TrainingSetConfig(_Strict):
    source: str = Field(description="gold table holding the labels and request-time fields")
    lookups: list[FeatureLookup] = Field(min_length=1)
    request_fields: list[str] = Field(description="columns a caller knows at request time, used as features")
    labels: list[str] = Field(min_length=1)
    window_days: int = Field(default=120, gt=0, description="days of history, ending at the newest gold day")
    validation_days: int = Field(default=7, gt=0)
    test_days: int = Field(default=7, gt=0)


class MetricGate(_Strict):
    """Thresholds of one metric: an absolute floor, and the least improvement over the champion."""

    min_value: float | None = None
    max_value: float | None = None
    min_absolute_change: float | None = Field(default=None, gt=0)
    min_relative_change: float | None = Field(default=None, gt=0)
    greater_is_better: bool = True


class TuningConfig(_Strict):
    max_trials: int = Field(default=8, ge=1)
    timeout_seconds: float = Field(default=300, gt=0)
    seed: int = 42
    space: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="hyperparameter -> (low, high); integers when both bounds are integers"
    )


class ModelConfig(_Strict):
    """A model trained from the use case's training set and registered in MLflow under ``registered_name``."""

    description: str
    registered_name: str
    task: Literal["classification", "regression"]
    label: str
    categorical: list[str] = []
    tuning: TuningConfig = TuningConfig()
    gate: dict[str, MetricGate] = Field(min_length=1, description="metric name -> thresholds")


class Debounce(_Strict):
    """Act on drift only when it was seen on ``days`` of the last ``of_last`` days, the latest among them."""

    days: int = Field(default=2, ge=1)
    of_last: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _fits(self) -> Debounce:
        if self.days > self.of_last:
            raise ValueError(f"days ({self.days}) cannot exceed of_last ({self.of_last})")
        return self


class RetrainingConfig(_Strict):
    """Guardrails of drift-triggered retraining, counted in data days (partitions), not wall-clock time."""

    cooldown_days: int = Field(default=7, ge=0, description="days after a retraining before the next may start")
    max_per_day: int = Field(default=1, ge=1, description="retraining runs requested per data day at most")


class WebhookSink(_Strict):
    url_env: str = Field(description="environment variable holding the webhook URL")


class EmailSink(_Strict):
    host: str = "127.0.0.1"
    port: int = 25
    sender: str
    recipients: list[str] = Field(min_length=1)
    password_env: str | None = None


class AlertsConfig(_Strict):
    webhook: WebhookSink | None = None
    email: EmailSink | None = None


class MonitoringConfig(_Strict):
    """Daily drift and quality monitoring of one model's predictions against its training reference."""

    model: str
    column_threshold: float | None = Field(default=None, gt=0,
                                           description="drift threshold of every column (default: per method)")
    max_drifted_share: float = Field(default=0.5, gt=0, le=1, description="share of drifted columns that fails")
    quality_metric: Literal["roc_auc", "average_precision", "root_mean_squared_error", "mean_absolute_error"] = (
        "roc_auc")
    max_quality_drop: float = Field(default=0.05, ge=0, description="largest tolerated drop below the champion's "
                                                                    "test metric")
    debounce: Debounce = Debounce()
    retraining: RetrainingConfig = RetrainingConfig()
    alerts: AlertsConfig = AlertsConfig()


class PartitionWindow(_Strict):
    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> PartitionWindow:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class ServedAlias(_Strict):
    """A model behind an endpoint, named by its registry alias, and the share of requests it answers."""

    alias: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    traffic_percent: int = Field(ge=0, le=100)


class KeySource(_Strict):
    """Where the key combinations an online store holds come from: those seen in the newest ``days`` of a table."""

    table: str
    layer: Literal["silver", "gold"] = "gold"
    days: int = Field(default=28, gt=0)


class OnlineStoreConfig(_Strict):
    """The online store of an endpoint: the newest row of each feature table per key, one row per ``keys``.

    Every table's lookup keys (from ``training_set.lookups``, its timestamp key aside) must be among ``keys``; a
    request carries ``keys`` and the training set's request fields, and nothing else.
    """

    keys: list[str] = Field(min_length=1)
    key_source: KeySource
    tables: list[str] = Field(min_length=1)


class SmokeConfig(_Strict):
    """What a deployed endpoint must answer before the next stage gets it: a single record, then a batch."""

    single: dict[str, str | int | float | bool]
    batch: list[dict[str, str | int | float | bool]] = Field(min_length=2)
    prediction_min: float | None = None
    prediction_max: float | None = None


class DatabricksCompute(_Strict):
    """The Model Serving compute of each served entity on Databricks."""

    workload_size: Literal["Small", "Medium", "Large"] = "Small"
    scale_to_zero: bool = True


class StageEndpoint(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    auth_token_env: str | None = Field(default=None, description="environment variable holding the bearer token")


class EndpointStages(_Strict):
    staging: StageEndpoint
    production: StageEndpoint

    @model_validator(mode="after")
    def _distinct(self) -> EndpointStages:
        if self.staging.name == self.production.name:
            raise ValueError(f"staging and production need different endpoint names, both are '{self.staging.name}'")
        return self


class ServingEndpointConfig(_Strict):
    """An endpoint serving one model at each stage, staging first; production only after staging's smoke test.

    ``served_models`` name registry aliases. An alias that does not exist when the endpoint is deployed (no
    ``challenger`` right after a promotion) gives its traffic share to ``champion``, which must exist.
    ``fallback`` gives the value of an online-store feature when a request's key is not in the store; features
    it does not name fall back to null, which the model reads as missing, exactly as a training row whose lookup
    found nothing.
    """

    description: str
    model: str
    served_models: list[ServedAlias] = Field(min_length=1)
    online_store: OnlineStoreConfig
    fallback: dict[str, str | int | float | bool | None] = {}
    stages: EndpointStages
    smoke: SmokeConfig
    databricks: DatabricksCompute = DatabricksCompute()
    max_records: int = Field(default=1_000, gt=0)

    @model_validator(mode="after")
    def _traffic(self) -> ServingEndpointConfig:
        aliases = [m.alias for m in self.served_models]
        if len(set(aliases)) != len(aliases):
            raise ValueError(f"served_models name an alias twice: {aliases}")
        if "champion" not in aliases:
            raise ValueError(f"served_models must include the 'champion' alias (missing aliases fall back to it), "
                             f"got {aliases}")
        total = sum(m.traffic_percent for m in self.served_models)
        if total != 100:
            raise ValueError(f"traffic_percent of served_models must sum to 100, got {total}")
        return self


class UseCaseConfig(_Strict):
    """A use case: configuration plus, at most, a small module of its own logic."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    owners: list[str] = Field(min_length=1)
    module: str
    partitions: PartitionWindow
    freshness_hours: float = Field(default=36, gt=0)
    sources: dict[str, SourceConfig] = Field(min_length=1)
    gold: dict[str, GoldConfig] = {}
    features: dict[str, FeatureTableConfig] = {}
    training_set: TrainingSetConfig | None = None
    models: dict[str, ModelConfig] = {}
    monitoring: MonitoringConfig | None = None
    serving: dict[str, ServingEndpointConfig] = {}

    @model_validator(mode="after")
    def _gold_inputs_exist(self) -> UseCaseConfig:
        for table, spec in self.gold.items():
            unknown = [name for name in [*spec.inputs, spec.reconcile_with] if name not in self.sources]
            if unknown:
                raise ValueError(f"gold table '{table}' reads unknown sources {unknown}")
        for name, feature in self.features.items():
            known = self.gold if feature.layer == "gold" else self.sources
            if feature.source not in known:
                raise ValueError(f"feature table '{name}' reads unknown {feature.layer} table '{feature.source}'")
        if self.training_set:
            unknown = [lookup.table for lookup in self.training_set.lookups if lookup.table not in self.features]
            if unknown or self.training_set.source not in self.gold:
                raise ValueError(f"training_set reads unknown tables {unknown or [self.training_set.source]}")
            for name, model in self.models.items():
                if model.label not in self.training_set.labels:
                    raise ValueError(f"model '{name}' label '{model.label}' is not a training_set label")
        if self.monitoring and self.monitoring.model not in self.models:
            raise ValueError(f"monitoring watches unknown model '{self.monitoring.model}'")
        return self

    @model_validator(mode="after")
    def _serving_fits(self) -> UseCaseConfig:
        for name, endpoint in self.serving.items():
            where = f"serving endpoint '{name}'"
            if endpoint.model not in self.models:
                raise ValueError(f"{where} serves unknown model '{endpoint.model}' (models: {sorted(self.models)})")
            if self.training_set is None:
                raise ValueError(f"{where}: serving needs a training_set (its request fields and lookups)")
            store = endpoint.online_store
            lookups = {lookup.table: lookup for lookup in self.training_set.lookups}
            unknown = [table for table in store.tables if table not in lookups]
            if unknown:
                raise ValueError(f"{where}: online_store.tables {unknown} are not training_set lookups "
                                 f"{sorted(lookups)}")
            for table in store.tables:
                timestamp = self.features[table].timestamp_key
                needed = [column for column, key in lookups[table].keys.items() if key != timestamp]
                absent = [column for column in needed if column not in store.keys]
                if absent:
                    raise ValueError(f"{where}: feature table '{table}' is looked up by {needed}; online_store.keys "
                                     f"{store.keys} lack {absent}")
            known = self.gold if store.key_source.layer == "gold" else self.sources
            if store.key_source.table not in known:
                raise ValueError(f"{where}: online_store.key_source reads unknown {store.key_source.layer} table "
                                 f"'{store.key_source.table}'")
            carried = [*store.keys, *self.training_set.request_fields]
            looked_up = [column for lookup in self.training_set.lookups
                         for column in self.features[lookup.table].columns]
            served = {column for table in store.tables for column in self.features[table].columns}
            uncovered = [column for column in looked_up if column not in carried and column not in served]
            if uncovered:
                raise ValueError(f"{where}: model features {uncovered} are neither request fields nor in "
                                 f"online_store.tables {store.tables}")
            stray = [column for column in endpoint.fallback if column not in served or column in carried]
            if stray:
                raise ValueError(f"{where}: fallback names {stray}, which are not online-store features")
            for label, record in [("single", endpoint.smoke.single),
                                  *((f"batch[{i}]", r) for i, r in enumerate(endpoint.smoke.batch))]:
                missing = [column for column in dict.fromkeys(carried) if column not in record]
                if missing:
                    raise ValueError(f"{where}: smoke.{label} lacks {missing}; a request carries {carried}")
        return self

    @property
    def daily_sources(self) -> dict[str, SourceConfig]:
        return {name: s for name, s in self.sources.items() if s.is_daily}

    @property
    def snapshot_sources(self) -> dict[str, SourceConfig]:
        return {name: s for name, s in self.sources.items() if not s.is_daily}

    def with_models_in(self, namespace: str) -> UseCaseConfig:
        """This use case with its models registered as ``<namespace>.<registered_name>`` (Unity Catalog names)."""
        models = {name: model.model_copy(update={"registered_name": f"{namespace}.{model.registered_name}"})
                  for name, model in self.models.items()}
        return self.model_copy(update={"models": models})


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

    @model_validator(mode="after")
    def _every_step_kind_has_compute(self) -> DatabricksConfig:
        missing = sorted(set(StepKind.__args__) - set(self.compute))
        if missing:
            raise ValueError(f"compute: none for step kinds {missing}")
        serverless = sorted(kind for kind, spec in self.compute.items() if isinstance(spec, ServerlessSpec))
        if serverless and not self.pipes_volume:
            raise ValueError(f"compute: serverless steps {serverless} need pipes_volume (where Dagster Pipes "
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
            raise ValueError(f"model_schema names models in Unity Catalog: it needs registry_uri: "
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
            raise ValueError("tables: unity_catalog needs a databricks section (the workspace holding the catalog)")
        if self.mlflow.model_schema and self.databricks is None:
            raise ValueError("mlflow.model_schema needs a databricks section (the workspace holding the catalog)")
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


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  field '{field}': {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_yaml_model(path: Path, model: type[ModelT], **overrides: object) -> ModelT:
    """Parse one YAML file into ``model``; every problem names the file and the field."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate({**raw, **overrides})
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid {model.__name__}:\n{_describe(exc)}") from exc


def load_settings(environment: str | None = None, config_dir: Path | str | None = None,
                  data_dir: Path | str | None = None) -> Settings:
    """Load the environment named by the argument (or ``MLOPS_ENV``) and the use cases it enables.

    ``data_dir`` (or ``MLOPS_DATA_DIR``) relocates all data (tests point it at a temporary folder);
    ``MLOPS_SERVING_PORT`` moves the local serving process to another port (0: any free one).
    """
    config_dir = Path(config_dir or os.environ.get(CONFIG_DIR_ENV, PROJECT_ROOT / "config"))
    name = environment or os.environ.get(ENV_VAR, "local")
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    overrides = {"data_dir": str(data_dir)} if data_dir else {}
    env = load_yaml_model(config_dir / "environments" / f"{name}.yaml", EnvironmentConfig, **overrides)
    if os.environ.get(SERVING_PORT_ENV):
        serving = LocalServingConfig.model_validate({**env.serving.model_dump(), "port": os.environ[SERVING_PORT_ENV]})
        env = env.model_copy(update={"serving": serving})
    usecases = {
        usecase: load_yaml_model(config_dir / "usecases" / f"{usecase}.yaml", UseCaseConfig)
        for usecase in env.usecases
    }
    if env.mlflow.model_schema:
        namespace = f"{env.catalog}.{env.mlflow.model_schema}"
        usecases = {name: usecase.with_models_in(namespace) for name, usecase in usecases.items()}
    return Settings(environment=env, usecases=usecases)
