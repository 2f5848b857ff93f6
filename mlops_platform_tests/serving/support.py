"""What the serving tests share: the pipelines the platform trains, registered as the platform logs them, and a
serving process started as a real subprocess on a free loopback port.

Every pipeline is the platform's own, from its estimator registry (``ml/estimators.py``): gradient boosting, random
forest, and the task's linear model. All are fitted on real rows of the flights training set (missing weather,
unknown planes and all).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.pipeline import Pipeline

from mlops_platform.ml import packaging
from mlops_platform.ml.estimators import ESTIMATORS as ESTIMATOR_REGISTRY
from mlops_platform.ml.estimators import build_pipeline
from mlops_platform.ml.training import input_signature
from mlops_platform.polling import poll_until
from mlops_platform.serving.config import EndpointConfig, ServedModel, publish_online_store
from mlops_platform.serving.process import ServerProcess, wait_until_serving
from mlops_platform.settings import ModelConfig

ESTIMATORS = ("hist_gradient_boosting", "random_forest", "linear")
REQUEST_FIELDS = ["carrier", "origin", "dest", "hour", "distance"]
ROW_KEY = "row_id"
PROJECT = Path(__file__).resolve().parents[2]
# Every type a pipeline of the registry holds (each estimator lists its own).
TRUSTED_TYPES = sorted({name for estimator in ESTIMATOR_REGISTRY.values() for name in estimator.trusted_types})


def fit_pipeline(kind: str, config: ModelConfig, frame: pd.DataFrame, features: list[str], seed: int = 0,
                 **params: Any) -> Pipeline:
    """A fitted pipeline of ``kind`` (``linear``: the task's linear estimator) on ``frame`` (typed as
    ``model_frame`` types it), built by the platform's own estimator registry."""
    estimator = kind if kind != "linear" else (
        "logistic_regression" if config.task == "classification" else "linear_regression")
    defaults = {"hist_gradient_boosting": {"max_iter": 60, "max_leaf_nodes": 31},
                "random_forest": {"n_estimators": 30, "max_depth": 12}}.get(estimator, {})
    pipeline = build_pipeline(config.model_copy(update={"estimator": estimator}), features,
                              {**defaults, **params}, seed)
    return pipeline.fit(frame[features], frame[config.label])


def register(pipeline: Pipeline, config: ModelConfig, features: list[str], experiment_id: str,
             example: pd.DataFrame | None = None) -> str:
    """Log and register ``pipeline`` the way training does (``ml/packaging.py``); returns the version."""
    with mlflow.start_run(experiment_id=experiment_id):
        info = packaging.log_model(
            pipeline, task=config.task, registered_model_name=config.registered_name,
            signature=input_signature(config, features), decision_threshold=config.decision_threshold,
            input_example=example, pip_requirements=["scikit-learn"], skops_trusted_types=TRUSTED_TYPES,
        )
    return str(info.registered_model_version)


def json_value(value: Any) -> Any:
    """A DataFrame cell as a JSON client would send it: None for missing, plain Python numbers."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def store_and_requests(frame: pd.DataFrame, features: list[str]) -> tuple[pa.Table, list[dict[str, Any]]]:
    """An online store keyed by row number holding every non-request feature of ``frame``, and one request record
    (the key and the request fields) per row."""
    rows = frame.reset_index(drop=True)
    store_features = [f for f in features if f not in REQUEST_FIELDS]
    store = {ROW_KEY: list(range(len(rows)))}
    for column in store_features:
        store[column] = [json_value(v) for v in rows[column].astype(object)]
    records = [{ROW_KEY: i, **{c: json_value(rows.at[i, c]) for c in REQUEST_FIELDS}} for i in range(len(rows))]
    return pa.table(store), records


def endpoint_config(name: str, models: Sequence[tuple[str, str, str, int]], features: list[str], store_path: Path,
                    **changes: Any) -> EndpointConfig:
    """An endpoint keyed by row number; ``models`` holds (served name, registered name, version, traffic)."""
    return EndpointConfig(
        name=name,
        served_models=[ServedModel(name=served, model_uri=f"models:/{registered}/{version}", traffic_percent=share)
                       for served, registered, version, share in models],
        keys=[ROW_KEY], online_store_path=str(store_path), feature_columns=features, request_fields=REQUEST_FIELDS,
        fallback={f: None for f in features if f not in REQUEST_FIELDS}, **changes,
    )


def publish(serving_dir: Path, name: str, store: pa.Table) -> Path:
    return publish_online_store(serving_dir / "stores" / f"{name}.arrow", store)


@dataclass
class Server:
    """A serving process started by a test."""

    popen: subprocess.Popen
    process: ServerProcess
    serving_dir: Path

    @property
    def url(self) -> str:
        return self.process.base_url

    def invocations(self, endpoint: str) -> str:
        return f"{self.url}/serving-endpoints/{endpoint}/invocations"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        return self.popen.wait(timeout)


def start_server(serving_dir: Path, warehouse_root: Path, *options: str, timeout: float = 240.0,
                 env: dict[str, str] | None = None) -> Server:
    """``python -m mlops_platform.serving`` on a free port; returns once it serves (its pid file names it)."""
    serving_dir.mkdir(parents=True, exist_ok=True)
    log = (serving_dir / "test-server.log").open("ab")
    popen = subprocess.Popen(
        [sys.executable, "-m", "mlops_platform.serving", "--serving-dir", str(serving_dir), "--port", "0",
         "--warehouse-root", str(warehouse_root), "--catalog", "test", "--log-level", "warning", *options],
        cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    recorded = wait_until_serving(popen, serving_dir, timeout)
    if recorded is not None:
        return Server(popen, recorded, serving_dir)
    if popen.poll() is not None:
        raise RuntimeError(f"the server exited with {popen.returncode}: "
                           f"{(serving_dir / 'test-server.log').read_text()[-3000:]}")
    popen.kill()
    raise TimeoutError(f"the server did not serve within {timeout:.0f} s")


def wait_ready(server: Server, endpoint: str, version: str | None = None, timeout: float = 120.0) -> dict:
    """The server's status once ``endpoint`` is loaded (serving ``version`` when given)."""
    last: dict = {}

    def ready() -> bool:
        nonlocal last
        last = httpx.get(f"{server.url}/ready", timeout=10).json()
        state = last["endpoints"].get(endpoint, {})
        return state.get("state") == "READY" and (version is None or version in state["served_models"].values())

    if not poll_until(ready, timeout, interval=0.1):
        raise TimeoutError(f"{endpoint} not ready: {last}")
    return last


def assert_same_answers(actual: list[Any], expected: list[Any], kind: str) -> None:
    """Equal answers; for the linear kind, labels equal and values equal to 1e-9 relative.

    A linear model's dot product runs in BLAS, whose summation order depends on memory alignment, thread count and
    batch shape: the same rows scored by the pyfunc and by the endpoint have been seen up to 1e-13 apart (relative).
    The compiled trees add in a fixed order and must agree exactly.
    """
    if kind != "linear":
        assert actual == expected
        return
    assert len(actual) == len(expected)
    if expected and isinstance(expected[0], dict):
        assert [a["label"] for a in actual] == [e["label"] for e in expected]
        actual, expected = [a["probability"] for a in actual], [e["probability"] for e in expected]
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)
