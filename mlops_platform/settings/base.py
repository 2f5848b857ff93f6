"""What every configuration model shares: strict, frozen models, the error type, and the project's
fixed names (environment variables, the project root)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG_DIR_ENV = "MLOPS_CONFIG_DIR"
ENV_VAR = "MLOPS_ENV"
DATA_DIR_ENV = "MLOPS_DATA_DIR"
SERVING_PORT_ENV = "MLOPS_SERVING_PORT"
UNITY_CATALOG_REGISTRY = "databricks-uc"

ColumnType = Literal["string", "int", "float", "bool", "date", "datetime"]
TEMPORAL_TYPES = ("date", "datetime")
Severity = Literal["ERROR", "WARN"]


class ConfigError(ValueError):
    """A configuration file is missing or holds a value that does not fit its schema."""


class FieldError(ValueError):
    """A check across fields failed; ``location`` is the path of the offending field below the model that raised it,
    so the loader names that field instead of the whole model."""

    def __init__(self, location: str | tuple[str | int, ...], message: str, value: object = None) -> None:
        super().__init__(message)
        self.location = tuple(location.split(".")) if isinstance(location, str) else tuple(location)
        self.value = value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

