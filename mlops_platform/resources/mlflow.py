"""MLflow tracking and model registry: where runs, models and their artifacts are recorded.

Locally the store is a SQLite file (``sqlite:///.../mlflow.db``) and artifacts live in a folder beside it; browse
them with ``mlflow ui --backend-store-uri <tracking_uri>``. The ``./mlruns`` file store is never used: MLflow 3
refuses it by default, and a relative store would follow the working directory.

In a Databricks environment runs go to the workspace's tracking server (``databricks``) and models to the Unity
Catalog registry (``databricks-uc``), under three-level names (``mlops_prod.models.flights_delay``). Inside a job
MLflow authenticates as the job; the orchestrator (aliases, the champion gate) with the workspace's credentials.
"""

from __future__ import annotations

import fcntl
import os
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
from mlflow.utils.databricks_utils import get_workspace_url
from pydantic import Field, PrivateAttr

from mlops_platform.resources.databricks import DatabricksWorkspace
from mlops_platform.settings import UNITY_CATALOG_REGISTRY

SQLITE_PREFIX = "sqlite:///"
DATABRICKS_TRACKING = "databricks"
LOCAL_UI_URL = "http://127.0.0.1:5000"


class MlflowTracking(dg.ConfigurableResource):
    """Where runs, models and their artifacts are recorded, and how a person opens a run in the MLflow UI."""

    tracking_uri: str
    registry_uri: str | None = Field(default=None, description="the tracking URI when unset")
    artifact_root: str | None = Field(default=None, description="None: the tracking server's own artifact store")
    experiment_root: str = Field(default="", description="prefix of every experiment name, a workspace folder")
    ui_url: str | None = Field(default=None, description="the MLflow UI; None: the Databricks workspace's")
    workspace: DatabricksWorkspace | None = Field(
        default=None, description="credentials for a Databricks tracking server outside a Databricks job")
    # Whether this instance pointed the process's MLflow at its store (Dagster's documented PrivateAttr pattern).
    _configured: bool = PrivateAttr(default=False)

    @property
    def registry(self) -> str:
        return self.registry_uri or self.tracking_uri

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Once per run (per step process): the environment, the URIs and the SQLite schema check under a file lock.
        self.configure()

    def configure(self) -> None:
        """Point the process's MLflow client at this store; the SQLite schema is created once, under a lock."""
        if self.workspace is not None:
            # MLflow's Databricks client takes credentials from the environment (or a profile), not as arguments.
            os.environ["DATABRICKS_HOST"] = self.workspace.host
            os.environ["DATABRICKS_TOKEN"] = self.workspace.token
        if self.tracking_uri.startswith(SQLITE_PREFIX):
            database = Path(self.tracking_uri.removeprefix(SQLITE_PREFIX))
            database.parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry)
        if self.tracking_uri.startswith(SQLITE_PREFIX):
            # Two steps of one run (two models) can open a new database at once, and concurrent first-time
            # schema migrations collide; the first to take the lock creates the tables, the other waits.
            with open(database.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                MlflowClient(self.tracking_uri, self.tracking_uri).search_experiments(max_results=1)
        self._configured = True

    def client(self) -> MlflowClient:
        """A client of this store. Outside a run (the CLI) the first call configures; so does a call after another
        store took over the process's MLflow (tests, a replay of several environments), which the fluent API
        (``mlflow.start_run``) would otherwise follow."""
        if not self._configured or (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) != (self.tracking_uri,
                                                                                             self.registry):
            self.configure()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry)

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

    def artifact_location(self, experiment_name: str) -> str | None:
        if self.artifact_root is None:
            return None
        folder = experiment_name.strip("/")
        if "://" in self.artifact_root:
            return f"{self.artifact_root.rstrip('/')}/{folder}"
        return (Path(self.artifact_root) / folder).resolve().as_uri()

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name`` (under ``experiment_root``), created with its artifacts under
        ``artifact_root`` if it is new."""
        name = f"{self.experiment_root.rstrip('/')}{name}" if self.experiment_root else name
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

    def _ui(self) -> str:
        if self.ui_url:
            return self.ui_url.rstrip("/")
        if self.tracking_uri == DATABRICKS_TRACKING:
            host = self.workspace.host if self.workspace is not None else get_workspace_url()
            if host:
                return host.rstrip("/")
        return LOCAL_UI_URL

    def run_url(self, experiment_id: str, run_id: str) -> str:
        if self.tracking_uri == DATABRICKS_TRACKING:
            return f"{self._ui()}/ml/experiments/{experiment_id}/runs/{run_id}"
        return f"{self._ui()}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, name: str, version: str | int) -> str:
        if self.registry == UNITY_CATALOG_REGISTRY:
            return f"{self._ui()}/explore/data/models/{name.replace('.', '/')}/version/{version}"
        return f"{self._ui()}/#/models/{name}/versions/{version}"
