"""Loading ``config/``: the one place that picks the environment, and errors that name the file and the field."""

from __future__ import annotations

import importlib
import importlib.util
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
    FieldError,
)
from mlops_platform.settings.environment import EnvironmentConfig, LocalServingConfig, Settings
from mlops_platform.settings.usecase import UseCaseConfig

ModelT = TypeVar("ModelT", bound=BaseModel)

# libyaml's parser when PyYAML was built with it: every process loads the settings, and the pure-Python one takes
# a tenth of a second per use case.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location, message, value = item["loc"], item["msg"], item.get("input")
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            # A check across fields names the field at fault, not the model it ran on (and not its whole input).
            location, message, value = (*location, *cause.location), str(cause), cause.value
        field = ".".join(str(part) for part in location) or "(top level)"
        got = "" if value is None else f" (got {value!r})"
        lines.append(f"  field '{field}': {message}{got}")
    return "\n".join(lines)


def load_yaml_model(path: Path, model: type[ModelT], **overrides: object) -> ModelT:
    """Parse one YAML file into ``model``; every problem names the file and the field."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    try:
        raw = yaml.load(path.read_text(), Loader=SAFE_LOADER) or {}
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
    usecases = {name: load_usecase(config_dir / "usecases" / f"{name}.yaml") for name in env.usecases}
    _endpoint_names_unique(usecases, config_dir)
    if env.mlflow.model_schema:
        namespace = f"{env.catalog}.{env.mlflow.model_schema}"
        usecases = {name: usecase.with_models_in(namespace) for name, usecase in usecases.items()}
    return Settings(environment=env, usecases=usecases)


def load_usecase(path: Path) -> UseCaseConfig:
    """One use case's file: valid, named as its file, and its module importable."""
    usecase = load_yaml_model(path, UseCaseConfig)
    if usecase.name != path.stem:
        raise ConfigError(f"{path}: field 'name': must be the file's name '{path.stem}' (got {usecase.name!r})")
    if _missing(usecase.module):
        raise ConfigError(f"{path}: field 'module': use case '{usecase.name}' names module {usecase.module!r}, which "
                          "is not importable (a Python module path, e.g. mlops_platform.usecases.flights)")
    USECASE_FILES[usecase.name] = path
    return usecase


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


# Where each loaded use case came from, so errors found later (a missing builder) can name the file.
USECASE_FILES: dict[str, Path] = {}


def usecase_file(usecase: UseCaseConfig) -> Path | str:
    return USECASE_FILES.get(usecase.name, f"config/usecases/{usecase.name}.yaml")


def usecase_function(usecase: UseCaseConfig, name: str, field: str):
    """The function ``name`` of the use case's module; a missing one names the use case, its file and the field."""
    module = importlib.import_module(usecase.module)
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"{usecase_file(usecase)}: field '{field}': use case '{usecase.name}': module "
                          f"{usecase.module} has no function '{name}'")
    return function


def _endpoint_names_unique(usecases: dict[str, UseCaseConfig], config_dir: Path) -> None:
    owners: dict[str, str] = {}
    for usecase in usecases.values():
        for endpoint, spec in usecase.serving.items():
            for stage in ("staging", "production"):
                name = getattr(spec.stages, stage).name
                if name in owners:
                    raise ConfigError(f"{config_dir / 'usecases' / (usecase.name + '.yaml')}: field "
                                      f"'serving.{endpoint}.stages.{stage}.name': endpoint name {name!r} is already "
                                      f"used by {owners[name]}")
                owners[name] = f"use case '{usecase.name}' (serving.{endpoint}.stages.{stage}.name)"
