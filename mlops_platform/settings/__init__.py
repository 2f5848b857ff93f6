"""Typed configuration: environments and use cases under ``config/``, one module per concern.

``MLOPS_ENV`` names the environment (``local`` when unset). Every file is validated when it is loaded; a wrong
value fails with the file, the field and what was expected, before any asset runs.
"""

from mlops_platform.settings.base import (
    CONFIG_DIR_ENV,
    DATA_DIR_ENV,
    ENV_VAR,
    PROJECT_ROOT,
    SERVING_PORT_ENV,
    UNITY_CATALOG_REGISTRY,
    ColumnType,
    ConfigError,
    FieldError,
    Severity,
)
from mlops_platform.settings.environment import (
    ClusterSpec,
    DatabricksConfig,
    DatabricksOnlineStore,
    DatabricksServingConfig,
    DataProfiling,
    EnvironmentConfig,
    LocalServingConfig,
    MlflowConfig,
    ServerlessSpec,
    Settings,
    StepKind,
)
from mlops_platform.settings.features import FeatureLookup, FeatureTableConfig, SplitConfig, TrainingSetConfig
from mlops_platform.settings.loader import (
    load_settings,
    load_usecase,
    load_yaml_model,
    usecase_file,
    usecase_function,
)
from mlops_platform.settings.ml import ESTIMATOR_TASKS, MetricGate, ModelConfig, TuningConfig
from mlops_platform.settings.monitoring import (
    AlertsConfig,
    Debounce,
    EmailSink,
    MonitoringConfig,
    MonitoringWindow,
    RetrainingConfig,
    WebhookSink,
)
from mlops_platform.settings.serving import (
    DatabricksCompute,
    EndpointStages,
    KeySource,
    OnlineStoreConfig,
    RateLimit,
    ServedAlias,
    ServingEndpointConfig,
    SmokeConfig,
    StageEndpoint,
)
from mlops_platform.settings.sources import GoldConfig, Partition, ReplaceGuard, Rule, SourceConfig
from mlops_platform.settings.usecase import PartitionWindow, ReplayConfig, UseCaseConfig

__all__ = [
    "CONFIG_DIR_ENV", "DATA_DIR_ENV", "ENV_VAR", "ESTIMATOR_TASKS", "PROJECT_ROOT", "SERVING_PORT_ENV",
    "UNITY_CATALOG_REGISTRY", "AlertsConfig", "ClusterSpec", "ColumnType", "ConfigError", "DataProfiling",
    "DatabricksCompute", "DatabricksConfig", "DatabricksOnlineStore", "DatabricksServingConfig", "Debounce",
    "EmailSink", "EndpointStages", "EnvironmentConfig", "FeatureLookup", "FeatureTableConfig", "FieldError",
    "GoldConfig", "KeySource", "LocalServingConfig", "MetricGate", "MlflowConfig", "ModelConfig",
    "MonitoringConfig", "MonitoringWindow", "OnlineStoreConfig", "Partition", "PartitionWindow", "RateLimit",
    "ReplaceGuard", "ReplayConfig", "RetrainingConfig", "Rule", "ServedAlias", "ServerlessSpec", "ServingEndpointConfig",
    "Settings", "Severity", "SmokeConfig", "SourceConfig", "SplitConfig", "StageEndpoint", "StepKind",
    "TrainingSetConfig", "TuningConfig", "UseCaseConfig", "WebhookSink", "load_settings", "load_usecase",
    "load_yaml_model", "usecase_file", "usecase_function",
]
