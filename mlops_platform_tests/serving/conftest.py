"""Real rows of the flights training set, typed as training types them, and a migrated MLflow store to copy."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlops_platform.ml.model_data import model_frame
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.settings import ModelConfig, UseCaseConfig, load_settings
from mlops_platform_tests.training import build_training_table, expected_features

LAST_DAY = dt.date(2013, 5, 31)
ORDER_BY = ["flight_date", "carrier", "flight", "origin"]


@pytest.fixture(scope="session")
def flights() -> UseCaseConfig:
    return load_settings("local").usecases["flights"]


@pytest.fixture(scope="session")
def features(flights: UseCaseConfig) -> list[str]:
    return expected_features(flights)


@pytest.fixture(scope="session")
def configs(flights: UseCaseConfig) -> dict[str, ModelConfig]:
    return {"classification": flights.models["delay"], "regression": flights.models["arrival_delay"]}


@pytest.fixture(scope="session")
def frames(flights: UseCaseConfig, features: list[str], configs: dict[str, ModelConfig]) -> dict[str, pd.DataFrame]:
    """Four weeks of labelled flights per task, typed by ``model_frame``: about 13k rows with their real gaps."""
    table = build_training_table(flights, LAST_DAY, 28)
    return {task: model_frame(table, config, features, ORDER_BY) for task, config in configs.items()}


@pytest.fixture(scope="session")
def scored_rows(frames: dict[str, pd.DataFrame], features: list[str]) -> pd.DataFrame:
    """Held-out rows to score: the last week, nulls included (missing weather, planes without attributes)."""
    test = frames["classification"]
    rows = test[test["split"] == "test"].sample(n=240, random_state=3)
    assert rows[features].isna().any(axis=None), "the sample should hold missing values"
    return rows


@pytest.fixture(scope="session")
def migrated_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mlflow-template")
    MlflowTracking(tracking_uri=f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "artifacts")).client()
    return folder / "mlflow.db"


def mlflow_store(migrated: Path, folder: Path) -> MlflowTracking:
    """A fresh, empty MLflow store in ``folder`` (a copy of the migrated template), configured for this process."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated, folder / "mlflow.db")
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "artifacts"))
    tracking.configure()
    return tracking
