"""MLflow tracking and model registry: one backend store URI and one root under which experiments keep artifacts.

Locally the store is a SQLite file (``sqlite:///.../mlflow.db``) and artifacts live in a folder beside it; browse
them with ``mlflow ui --backend-store-uri <tracking_uri>``. The ``./mlruns`` file store is never used: MLflow 3
refuses it by default, and a relative store would follow the working directory.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

import dagster as dg
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

SQLITE_PREFIX = "sqlite:///"


class MlflowTracking(dg.ConfigurableResource):
    """Where runs, models and their artifacts are recorded, and how a person opens a run in the MLflow UI."""

    tracking_uri: str
    artifact_root: str
    ui_url: str = "http://127.0.0.1:5000"

    def configure(self) -> None:
        """Point the process's MLflow client at this store; the SQLite schema is created once, under a lock."""
        if self.tracking_uri.startswith(SQLITE_PREFIX):
            database = Path(self.tracking_uri.removeprefix(SQLITE_PREFIX))
            database.parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        if self.tracking_uri.startswith(SQLITE_PREFIX):
            # Two steps of one run (two models) can open a new database at once, and concurrent first-time
            # schema migrations collide; the first to take the lock creates the tables, the other waits.
            with open(database.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                MlflowClient(self.tracking_uri, self.tracking_uri).search_experiments(max_results=1)

    def client(self) -> MlflowClient:
        self.configure()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def alias_version(self, registered_name: str, alias: str) -> str | None:
        """The version ``alias`` names now, or None when the model, the alias or the store itself does not exist.

        A missing SQLite file answers None without creating it: the daily job asks before any model was trained.
        """
        if self.tracking_uri.startswith(SQLITE_PREFIX) and not Path(self.tracking_uri.removeprefix(SQLITE_PREFIX)).exists():
            return None
        try:
            return str(self.client().get_model_version_by_alias(registered_name, alias).version)
        except MlflowException as exc:
            if exc.error_code in (ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)):
                return None
            raise

    def artifact_location(self, experiment_name: str) -> str:
        folder = experiment_name.strip("/")
        if "://" in self.artifact_root:
            return f"{self.artifact_root.rstrip('/')}/{folder}"
        return (Path(self.artifact_root) / folder).resolve().as_uri()

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created with its artifacts under ``artifact_root`` if it is new."""
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name, artifact_location=self.artifact_location(name))
            except MlflowException as exc:
                # Another process created it between our lookup and our create.
                if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                    raise
                experiment = client.get_experiment_by_name(name)
                assert experiment is not None
        if experiment.lifecycle_stage == "deleted":
            raise MlflowException(
                f"experiment '{name}' (id {experiment.experiment_id}) is deleted in {self.tracking_uri}: restore "
                "it with `mlflow experiments restore` or delete it permanently with `mlflow gc`"
            )
        return experiment.experiment_id

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, name: str, version: str | int) -> str:
        return f"{self.ui_url.rstrip('/')}/#/models/{name}/versions/{version}"
