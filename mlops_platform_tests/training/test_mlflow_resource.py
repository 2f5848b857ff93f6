"""The MLflow resource sets the process up once per run, not on every client, and never leaves the fluent API
pointing at another store."""

from __future__ import annotations

import fcntl
from pathlib import Path

import dagster as dg
import mlflow

from mlops_platform.resources.mlflow import MlflowTracking


def tracking(root: Path) -> MlflowTracking:
    return MlflowTracking(tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "artifacts"))


def test_a_run_takes_the_schema_lock_once_however_many_clients_its_steps_open(tmp_path, monkeypatch):
    locks = []
    real_flock = fcntl.flock
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: (locks.append(op), real_flock(fd, op)))

    @dg.asset
    def registry_reads(mlflow_store: dg.ResourceParam[MlflowTracking]) -> None:
        for _ in range(3):
            mlflow_store.client().search_registered_models()
        mlflow_store.experiment_id("/lock_once")

    result = dg.materialize([registry_reads], resources={"mlflow_store": tracking(tmp_path / "a")})

    assert result.success
    assert locks == [fcntl.LOCK_EX]


def test_a_client_points_mlflow_back_at_its_store_after_another_store_took_it(tmp_path):
    first, second = tracking(tmp_path / "first"), tracking(tmp_path / "second")
    first.client()
    second.client()
    assert mlflow.get_tracking_uri() == second.tracking_uri

    first.client()

    assert mlflow.get_tracking_uri() == first.tracking_uri
    assert mlflow.get_registry_uri() == first.registry
