"""What the serving tests share: the pipelines the platform trains, registered as the platform logs them, and a
serving process started as a real subprocess on a free loopback port.

The gradient-boosting pipeline is the platform's own ``build_pipeline``. The other three are the shapes the estimator
registry (issue 13) trains: random forest behind the same ordinal encoding with median-imputed numbers, logistic and
linear regression behind one-hot encoding of imputed categories and scaled, imputed numbers. All are fitted on real
rows of the flights training set (missing weather, unknown planes and all).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlops_platform.ml import packaging
from mlops_platform.ml.training import SKOPS_TRUSTED_TYPES, build_pipeline, input_signature
from mlops_platform.serving.config import EndpointConfig, ServedModel, publish_online_store
from mlops_platform.serving.process import ServerProcess, probe, read_pid_file
from mlops_platform.settings import ModelConfig

ESTIMATORS = ("hist_gradient_boosting", "random_forest", "linear")
REQUEST_FIELDS = ["carrier", "origin", "dest", "hour", "distance"]
ROW_KEY = "row_id"
PROJECT = Path(__file__).resolve().parents[2]
# What the forests hold beyond the booster's types, reviewed here; the estimator registry brings its own list.
TRUSTED_TYPES = [*SKOPS_TRUSTED_TYPES, "numpy.dtype", "sklearn.tree._tree.Tree"]


def fit_pipeline(kind: str, config: ModelConfig, frame: pd.DataFrame, features: list[str], seed: int = 0,
                 **params: Any) -> Pipeline:
    """A fitted pipeline of ``kind`` on ``frame`` (typed as ``model_frame`` types it)."""
    categorical = [c for c in features if c in config.categorical]
    numeric = [c for c in features if c not in config.categorical]
    classify = config.task == "classification"
    if kind == "hist_gradient_boosting":
        pipeline = build_pipeline(config, features, {"max_iter": 60, "max_leaf_nodes": 31, **params}, seed)
    elif kind == "random_forest":
        encode = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1,
                                dtype=np.float64)
        forest = (RandomForestClassifier if classify else RandomForestRegressor)(
            n_estimators=params.get("n_estimators", 30), max_depth=12, random_state=seed, n_jobs=1)
        pipeline = Pipeline([("prepare", ColumnTransformer(
            [("categorical", encode, categorical), ("numeric", SimpleImputer(strategy="median"), numeric)],
            verbose_feature_names_out=False)), ("model", forest)])
    elif kind == "linear":
        categories = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                               ("encode", OneHotEncoder(handle_unknown="ignore"))])
        numbers = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        model = LogisticRegression(max_iter=2_000) if classify else LinearRegression()
        pipeline = Pipeline([("prepare", ColumnTransformer(
            [("categorical", categories, categorical), ("numeric", numbers, numeric)],
            verbose_feature_names_out=False)), ("model", model)])
    else:
        raise ValueError(f"unknown estimator kind {kind}")
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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"the server exited with {popen.returncode}: "
                               f"{(serving_dir / 'test-server.log').read_text()[-3000:]}")
        recorded = read_pid_file(serving_dir)
        if recorded is not None and recorded.pid == popen.pid and probe(recorded) == "serving":
            return Server(popen, recorded, serving_dir)
        time.sleep(0.1)
    popen.kill()
    raise TimeoutError(f"the server did not serve within {timeout:.0f} s")


def wait_ready(server: Server, endpoint: str, version: str | None = None, timeout: float = 120.0) -> dict:
    """The server's status once ``endpoint`` is loaded (serving ``version`` when given)."""
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        last = httpx.get(f"{server.url}/ready", timeout=10).json()
        state = last["endpoints"].get(endpoint, {})
        if state.get("state") == "READY" and (version is None or version in state["served_models"].values()):
            return last
        time.sleep(0.1)
    raise TimeoutError(f"{endpoint} not ready: {last}")
