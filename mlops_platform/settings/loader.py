"""Loading ``config/``: the one place that picks the environment, and errors that name the file and the field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mlops_platform.settings.base import (
    CONFIG_DIR_ENV,
    DATA_DIR_ENV,
    ENV_VAR,
    PROJECT_ROOT,
    SERVING_PORT_ENV,
    ConfigError,
)
from mlops_platform.settings.environment import EnvironmentConfig, LocalServingConfig, Settings
from mlops_platform.settings.usecase import UseCaseConfig

ModelT = TypeVar("ModelT", bound=BaseModel)


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
