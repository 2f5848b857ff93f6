"""Fixtures for the training tests: one realistic training-set table, and throwaway MLflow registries.

A new SQLite store spends seconds on schema migrations, so one is migrated per session and copied for each
registry a test needs; every registry still is a real, separate MLflow tracking store and model registry.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from mlops_platform.ml.model_data import model_frame
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.settings import ModelConfig, UseCaseConfig, load_settings
from mlops_platform_tests.training import build_training_table, expected_features

# Four weeks ending in May: 12.8k training rows; the validation and test weeks hold about 6.2k rows each.
LAST_DAY = dt.date(2013, 5, 31)
WINDOW_DAYS = 28
ORDER_BY = ["flight_date", "carrier", "flight", "origin"]
# Small enough that each fit takes about a second, wide enough that the trials differ.
TEST_SPACE = {"learning_rate": (0.05, 0.2), "max_leaf_nodes": (15, 31), "max_iter": (40, 80)}



def small_budget(config: ModelConfig, trials: int = 3, space: dict | None = None) -> ModelConfig:
    """``config`` with a smaller search, validated like the YAML (which turns every bound into a float)."""
    tuning = {**config.tuning.model_dump(), "max_trials": trials, "space": space or TEST_SPACE}
    return ModelConfig.model_validate({**config.model_dump(), "tuning": tuning})


@pytest.fixture(scope="session")
def usecase() -> UseCaseConfig:
    return load_settings("local").usecases["flights"]


@pytest.fixture(scope="session")
def training_table(usecase: UseCaseConfig) -> pa.Table:
    return build_training_table(usecase, LAST_DAY, WINDOW_DAYS)


@pytest.fixture(scope="session")
def features(usecase: UseCaseConfig) -> list[str]:
    return expected_features(usecase)


@pytest.fixture(scope="session")
def classifier_config(usecase: UseCaseConfig) -> ModelConfig:
    return small_budget(usecase.models["delay"])


@pytest.fixture(scope="session")
def classifier_frame(training_table: pa.Table, classifier_config: ModelConfig, features: list[str]) -> pd.DataFrame:
    return model_frame(training_table, classifier_config, features, ORDER_BY)


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mlflow-template")
    MlflowTracking(tracking_uri=f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "artifacts")).client()
    return folder / "mlflow.db"


def copy_store(migrated_store: Path, folder: Path) -> MlflowTracking:
    """A fresh, empty MLflow store in ``folder`` (a copy of the migrated template)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_store, folder / "mlflow.db")
    return MlflowTracking(tracking_uri=f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "artifacts"))


@pytest.fixture(scope="module")
def module_registry(migrated_store: Path, tmp_path_factory: pytest.TempPathFactory) -> MlflowTracking:
    return copy_store(migrated_store, tmp_path_factory.mktemp("mlflow"))


@pytest.fixture
def registry(migrated_store: Path, tmp_path: Path) -> MlflowTracking:
    return copy_store(migrated_store, tmp_path / "mlflow")
