"""The serving process end to end: a real MLflow registry, real uvicorn processes on loopback, real Delta.

Two model versions of a small flight-delay pipeline (ColumnTransformer with a scaler and one-hot encoders,
then a logistic regression predicting probabilities) are registered with the aliases ``champion`` and
``challenger``. One server process serves several endpoints deployed from them; a second one, with its own
warehouse, is stopped with SIGTERM to check that the inference table holds every request.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow
from mlflow import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_platform.resources.warehouse import DeltaWarehouse
from mlops_platform.serving import (
    EndpointConfig,
    EndpointConfigError,
    ServedModel,
    deploy_endpoint_config,
    publish_online_store,
)

pytestmark = [
    # Generous: two server processes import MLflow and Dagster at start-up, slow on a busy 2-core machine.
    pytest.mark.timeout(300),
    # One pytest-xdist worker runs the whole module, so its servers start once.
    pytest.mark.xdist_group("serving"),
]

MODEL = "flights_delay"
FEATURES = ["distance", "dep_hour", "carrier", "origin", "temp", "wind_speed"]
REQUEST_FIELDS = ["distance", "dep_hour", "carrier"]
STORE_FEATURES = ["origin", "temp", "wind_speed"]
FALLBACK = {"origin": "EWR", "temp": 50.0, "wind_speed": 5.0}
TOKEN_ENV = "SERVING_TEST_TOKEN"
TOKEN = "s3cret-token"
CATALOG = "test"
STORE_KEYS = list(range(1, 41))
MISSING_KEY = 999


def training_data(seed: int, rows: int = 600) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "distance": rng.uniform(100, 2500, rows),
        "dep_hour": rng.integers(5, 23, rows),
        "carrier": rng.choice(["AA", "B6", "DL", "UA"], rows),
        "origin": rng.choice(["EWR", "JFK", "LGA"], rows),
        "temp": rng.normal(55, 15, rows),
        "wind_speed": rng.uniform(0, 25, rows),
    })
    logit = 0.15 * (frame.dep_hour - 14) + 0.08 * (frame.wind_speed - 12) - 0.03 * (frame.temp - 55) \
        + frame.carrier.map({"AA": 0.3, "B6": 0.8, "DL": -0.5, "UA": 0.1}) + rng.normal(0, 1, rows)
    return frame, (logit > 0).astype(int)


def fit_pipeline(seed: int, c: float) -> Pipeline:
    frame, target = training_data(seed)
    pipeline = Pipeline([
        ("columns", ColumnTransformer([
            ("numeric", StandardScaler(), ["distance", "dep_hour", "temp", "wind_speed"]),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["carrier", "origin"]),
        ])),
        ("classifier", LogisticRegression(C=c, max_iter=500)),
    ])
    return pipeline.fit(frame[FEATURES], target)


def store_table() -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table({
        "flight_id": pa.array(STORE_KEYS, pa.int64()),
        "origin": rng.choice(["EWR", "JFK", "LGA"], len(STORE_KEYS)).tolist(),
        # Far from the fallback temperature, so a lookup and a fallback give different predictions.
        "temp": rng.uniform(85, 100, len(STORE_KEYS)),
        "wind_speed": rng.uniform(15, 25, len(STORE_KEYS)),
        "unused_column": ["x"] * len(STORE_KEYS),
    })


def close(got: Any, expected: Any) -> bool:
    return np.shape(got) == np.shape(expected) and np.allclose(got, expected, rtol=1e-9, atol=1e-12)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


class Client:
    """A keep-alive HTTP/1.1 client for one server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        self.connection.request(method, path, body=body, headers={"Content-Type": "application/json",
                                                                  **(headers or {})})
        response = self.connection.getresponse()
        raw = response.read()
        if response.getheader("connection", "").lower() == "close":
            self.connection.close()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(raw))

    def invoke(self, endpoint: str, payload: Any, headers: dict[str, str] | None = None) -> Reply:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", f"/serving-endpoints/{endpoint}/invocations", body, headers)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def close(self) -> None:
        self.connection.close()


class ServerProcess:
    def __init__(self, serving_dir: Path, warehouse: Path, logs: Path,
                 extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.warehouse = warehouse
        self.stderr_path = logs / f"server-{self.port}.log"
        env = {**os.environ, TOKEN_ENV: TOKEN, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "mlops_platform.serving", "--serving-dir", str(serving_dir),
                   "--host", "127.0.0.1", "--port", str(self.port), "--warehouse-root", str(warehouse),
                   "--catalog", CATALOG, "--log-level", "warning", *(extra or [])]
        self._stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(command, stdout=self._stderr, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                reply = Client(self.port).get("/ready")
                if reply.status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"server ignored SIGTERM for {timeout} s:\n{self.output()}") from None
        self._stderr.close()
        return self.process.returncode


@dataclass
class Deployment:
    root: Path
    tracking_uri: str
    models: dict[str, Any]
    main: ServerProcess
    logged: ServerProcess
    logged_serving_dir: Path

    def expected(self, version: str, records: list[dict[str, Any]]) -> list:
        """What the model version predicts in-process for records, with features looked up like the server."""
        store = {row["flight_id"]: row for row in store_table().to_pylist()}
        rows = []
        for record in records:
            stored = store.get(record["flight_id"], FALLBACK)
            rows.append({**{f: stored[f] for f in STORE_FEATURES}, **{f: record[f] for f in REQUEST_FIELDS}})
        return np.asarray(self.models[version].predict(pd.DataFrame(rows)[FEATURES])).tolist()


def endpoint(name: str, served: list[tuple[str, str, int]], store: Path, **options: Any) -> EndpointConfig:
    return EndpointConfig(
        name=name,
        served_models=[ServedModel(name=n, model_uri=uri, traffic_percent=p) for n, uri, p in served],
        keys=["flight_id"],
        online_store_path=str(store),
        feature_columns=FEATURES,
        request_fields=REQUEST_FIELDS,
        fallback=FALLBACK,
        **options,
    )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("serving")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        artifacts = (root / "artifacts").as_uri()
        experiment = mlflow.create_experiment("serving-tests", artifact_location=artifacts)
        client = MlflowClient()
        sample = training_data(0)[0][FEATURES].head(5)
        for version, (seed, c) in enumerate([(1, 1.0), (2, 0.01)], start=1):
            with mlflow.start_run(experiment_id=experiment):
                mlflow.sklearn.log_model(
                    fit_pipeline(seed, c), name="model", registered_model_name=MODEL,
                    signature=mlflow.models.infer_signature(sample), pyfunc_predict_fn="predict_proba",
                    # Named requirements skip their inference, a subprocess that reloads the model.
                    pip_requirements=["scikit-learn"],
                )
        client.set_registered_model_alias(MODEL, "champion", "1")
        client.set_registered_model_alias(MODEL, "challenger", "2")
        models = {v: mlflow.pyfunc.load_model(f"models:/{MODEL}/{v}") for v in ("1", "2")}

        serving_dir = root / "serving"
        store = publish_online_store(serving_dir / "stores" / "flights.arrow", store_table())
        champion = [("champion", f"models:/{MODEL}@champion", 100)]
        deploy_endpoint_config(serving_dir, endpoint("flights", champion, store, max_payload_bytes=4096,
                                                     max_records=50))
        deploy_endpoint_config(serving_dir, endpoint(
            "flights-ab", [("champion", f"models:/{MODEL}@champion", 90),
                           ("challenger", f"models:/{MODEL}@challenger", 10)], store))
        deploy_endpoint_config(serving_dir, endpoint("secure", champion, store, auth_token_env=TOKEN_ENV))
        deploy_endpoint_config(serving_dir, endpoint("swap", champion, store))

        logged_serving_dir = root / "serving-logged"
        logged_store = publish_online_store(logged_serving_dir / "flights.parquet.arrow", store_table())
        deploy_endpoint_config(logged_serving_dir, endpoint("flights", champion, logged_store))

        logs = root / "logs"
        logs.mkdir()
        # Both processes start together: their imports (MLflow, Dagster) take most of the start-up time.
        main = ServerProcess(serving_dir, root / "warehouse", logs)
        logged = ServerProcess(logged_serving_dir, root / "warehouse-logged", logs,
                               ["--log-flush-seconds", "3600"])
        try:
            main.wait_ready()
            logged.wait_ready()
            yield Deployment(root, tracking_uri, models, main, logged, logged_serving_dir)
        finally:
            main.stop()
            logged.stop()
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


@pytest.fixture
def client(deployment: Deployment) -> Any:
    connection = Client(deployment.main.port)
    yield connection
    connection.close()


RECORDS = [
    {"flight_id": 3, "distance": 1200.0, "dep_hour": 18, "carrier": "B6"},
    {"flight_id": 17, "distance": 300.5, "dep_hour": 7, "carrier": "DL"},
    {"flight_id": 40, "distance": 2400, "dep_hour": 21, "carrier": "ZZ"},
]


def test_deploy_resolves_aliases_to_versions_and_copies_the_model(deployment: Deployment) -> None:
    config = EndpointConfig.load(deployment.root / "serving" / "endpoints" / "flights-ab.json")
    assert [(m.name, m.model_name, m.model_version) for m in config.served_models] == [
        ("champion", MODEL, "1"), ("challenger", MODEL, "2")]
    for served in config.served_models:
        assert Path(served.model_path, "MLmodel").is_file()
        assert str(deployment.root / "serving") in served.model_path
    assert config.field_types == {"flight_id": "integer", "distance": "number", "dep_hour": "integer",
                                  "carrier": "string"}


def test_deploy_resolves_a_run_uri_to_the_version_registered_from_it(deployment: Deployment,
                                                                     tmp_path: Path) -> None:
    run_id = MlflowClient(deployment.tracking_uri).get_model_version(MODEL, "2").run_id
    store = publish_online_store(tmp_path / "store.arrow", store_table())
    by_run = endpoint("by-run", [("m", f"runs:/{run_id}/model", 100)], store)
    config = deploy_endpoint_config(tmp_path, by_run, tracking_uri=deployment.tracking_uri)
    (served,) = config.served_models
    assert (served.model_name, served.model_version, served.run_id) == (MODEL, "2", run_id)
    assert Path(served.model_path, "MLmodel").is_file()
    assert EndpointConfig.load(tmp_path / "endpoints" / "by-run.json") == config


def test_deploy_refuses_an_unknown_alias_and_a_store_without_the_key(deployment: Deployment,
                                                                      tmp_path: Path) -> None:
    store = publish_online_store(tmp_path / "store.arrow", store_table())
    with pytest.raises(EndpointConfigError, match="nonexistent"):
        deploy_endpoint_config(tmp_path, endpoint("bad", [("m", f"models:/{MODEL}@nonexistent", 100)], store),
                               tracking_uri=deployment.tracking_uri)
    keyless = publish_online_store(tmp_path / "keyless.arrow", store_table().drop_columns(["flight_id"]))
    with pytest.raises(EndpointConfigError, match="flight_id"):
        deploy_endpoint_config(tmp_path, endpoint("bad", [("m", f"models:/{MODEL}/1", 100)], keyless),
                               tracking_uri=deployment.tracking_uri)
    assert not (tmp_path / "endpoints" / "bad.json").exists()


def test_three_request_formats_give_the_in_process_predictions(deployment: Deployment,
                                                                client: Client) -> None:
    expected = deployment.expected("1", RECORDS)
    columns = list(RECORDS[0])
    payloads = {
        "dataframe_records": {"dataframe_records": RECORDS},
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns]
                                                                             for r in RECORDS]}},
        "inputs as records": {"inputs": RECORDS},
        "inputs as columns": {"inputs": {c: [r[c] for r in RECORDS] for c in columns}},
    }
    for label, payload in payloads.items():
        reply = client.invoke("flights", payload, {"X-Request-Id": f"formats-{label}"})
        assert reply.status == 200, (label, reply.body)
        np.testing.assert_allclose(reply.body["predictions"], expected, rtol=1e-9, err_msg=label)
        assert reply.body["served_model"] == {"name": "champion", "model_version": "1"}
        assert reply.headers["x-served-model-version"] == "1"
        assert reply.headers["x-request-id"] == f"formats-{label}"


def test_features_come_from_the_store_and_a_missing_key_falls_back(deployment: Deployment,
                                                                    client: Client) -> None:
    before = {m["name"]: m for m in client.get("/serving-endpoints/flights").body["served_models"]}
    known = {"flight_id": 5, "distance": 800.0, "dep_hour": 16, "carrier": "AA"}
    missing = {**known, "flight_id": MISSING_KEY}

    stored = client.invoke("flights", {"dataframe_records": [known]})
    fell_back = client.invoke("flights", {"dataframe_records": [missing]})

    assert close(stored.body["predictions"], deployment.expected("1", [known]))
    assert close(fell_back.body["predictions"], deployment.expected("1", [missing]))
    assert not close(stored.body["predictions"], fell_back.body["predictions"])
    after = {m["name"]: m for m in client.get("/serving-endpoints/flights").body["served_models"]}
    assert after["champion"]["fallbacks"] - before["champion"]["fallbacks"] == 1
    assert after["champion"]["requests"] - before["champion"]["requests"] == 2


def test_traffic_split_is_close_to_90_10_and_stable_per_request_id(deployment: Deployment,
                                                                    client: Client) -> None:
    record = {"dataframe_records": [RECORDS[0]]}
    served = {}
    for i in range(2000):
        request_id = f"ab-{i}"
        reply = client.invoke("flights-ab", record, {"X-Request-Id": request_id})
        assert reply.status == 200
        served[request_id] = reply.body["served_model"]["name"]
    shares = Counter(served.values())
    assert 0.87 <= shares["champion"] / 2000 <= 0.93, shares
    # The split is a published function of the id, so a caller can tell in advance which model answers.
    assert all(name == ("champion" if zlib.crc32(rid.encode()) % 100 < 90 else "challenger")
               for rid, name in served.items())
    for request_id in ["ab-1", "ab-2", "ab-3", "ab-4", "ab-5"]:
        again = client.invoke("flights-ab", record, {"X-Request-Id": request_id})
        assert again.body["served_model"]["name"] == served[request_id]
    challenger_id = next(rid for rid, name in served.items() if name == "challenger")
    reply = client.invoke("flights-ab", record, {"X-Request-Id": challenger_id})
    assert reply.headers["x-served-model-version"] == "2"
    assert close(reply.body["predictions"], deployment.expected("2", [RECORDS[0]]))


def test_a_request_without_an_id_gets_a_generated_one(client: Client) -> None:
    reply = client.invoke("flights", {"dataframe_records": [RECORDS[0]]})
    assert reply.status == 200
    assert len(reply.headers["x-request-id"]) == 36


def test_token_is_required_when_the_endpoint_has_one(client: Client) -> None:
    payload = {"dataframe_records": [RECORDS[0]]}
    missing = client.invoke("secure", payload)
    wrong = client.invoke("secure", payload, {"Authorization": "Bearer not-the-token"})
    right = client.invoke("secure", payload, {"Authorization": f"Bearer {TOKEN}"})
    assert (missing.status, missing.body["error_code"]) == (401, "UNAUTHENTICATED")
    assert wrong.status == 401
    assert right.status == 200
    assert client.invoke("flights", payload).status == 200


@pytest.mark.parametrize(("payload", "status", "code", "named"), [
    (b'{"dataframe_records": [', 400, "MALFORMED_REQUEST", "JSON"),
    ({"records": [RECORDS[0]]}, 400, "UNSUPPORTED_FORMAT", "records"),
    ({"dataframe_records": [{k: v for k, v in RECORDS[0].items() if k != "distance"}]}, 400, "MISSING_FIELD",
     "distance"),
    ({"dataframe_records": [{**RECORDS[0], "dep_hour": "18"}]}, 400, "INVALID_TYPE", "dep_hour"),
    ({"dataframe_records": [{**RECORDS[0], "flight_id": 3.5}]}, 400, "INVALID_TYPE", "flight_id"),
    ({"dataframe_records": [{**RECORDS[0], "distance": None}]}, 400, "INVALID_TYPE", "distance"),
    ({"dataframe_split": {"columns": ["flight_id"], "data": [[1, 2]]}}, 400, "INVALID_TYPE", "data[0]"),
    ({"dataframe_records": [RECORDS[0]] * 51}, 400, "TOO_MANY_RECORDS", "at most 50"),
    ({"dataframe_records": [{**RECORDS[0], "carrier": "x" * 5000}]}, 413, "PAYLOAD_TOO_LARGE", "4096"),
])
def test_bad_requests_get_a_4xx_naming_the_problem_and_the_server_keeps_serving(
    client: Client, payload: Any, status: int, code: str, named: str
) -> None:
    reply = client.invoke("flights", payload)
    assert (reply.status, reply.body["error_code"]) == (status, code), reply.body
    assert named in reply.body["message"]
    if code == "INVALID_TYPE" and named in RECORDS[0]:
        assert reply.body["field"] == named
        assert "must be" in reply.body["message"]
    assert Client(client.port).invoke("flights", {"dataframe_records": [RECORDS[0]]}).status == 200


def test_unknown_endpoint_is_404_and_status_routes_answer(client: Client) -> None:
    reply = client.invoke("no-such-endpoint", {"dataframe_records": [RECORDS[0]]})
    assert (reply.status, reply.body["error_code"]) == (404, "ENDPOINT_NOT_FOUND")
    assert client.get("/health").status == 200
    ready = client.get("/ready")
    assert ready.status == 200 and ready.body["ready"]
    assert set(ready.body["endpoints"]) == {"flights", "flights-ab", "secure", "swap"}
    described = client.get("/serving-endpoints/flights-ab").body
    assert [m["scorer"] for m in described["served_models"]] == ["compiled", "compiled"]
    assert described["config"]["keys"] == ["flight_id"]
    assert client.get("/serving-endpoints/nope").status == 404


def test_redeploy_swaps_the_model_under_load_without_failing_a_request(
    deployment: Deployment, client: Client
) -> None:
    outcomes: list[tuple[int, str]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        sender = Client(deployment.main.port)
        while not stop.is_set():
            try:
                reply = sender.invoke("swap", {"dataframe_records": [RECORDS[0]]})
                outcomes.append((reply.status, reply.headers["x-served-model-version"]))
            except Exception as error:  # noqa: BLE001 - collected, then asserted on: none may fail
                failures.append(error)
                sender = Client(deployment.main.port)

    sender_thread = threading.Thread(target=load)
    sender_thread.start()
    try:
        time.sleep(0.5)
        MlflowClient(deployment.tracking_uri).set_registered_model_alias(MODEL, "champion", "2")
        deploy_endpoint_config(deployment.root / "serving",
                               endpoint("swap", [("champion", f"models:/{MODEL}@champion", 100)],
                                        deployment.root / "serving" / "stores" / "flights.arrow"),
                               tracking_uri=deployment.tracking_uri)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (outcomes and outcomes[-1][1] == "2"):
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        sender_thread.join(10)
        MlflowClient(deployment.tracking_uri).set_registered_model_alias(MODEL, "champion", "1")

    assert not failures
    assert outcomes and all(status == 200 for status, _ in outcomes)
    versions = [version for _, version in outcomes]
    switch = versions.index("2")
    assert switch > 0 and set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}
    reply = client.invoke("swap", {"dataframe_records": [RECORDS[1]]})
    assert close(reply.body["predictions"], deployment.expected("2", [RECORDS[1]]))


def test_inference_table_holds_every_request_after_a_graceful_stop(deployment: Deployment) -> None:
    sender = Client(deployment.logged.port)
    sent = {}
    for i in range(300):
        request_id = f"log-{i:04d}"
        record = {**RECORDS[i % len(RECORDS)], "flight_id": STORE_KEYS[i % 40] if i % 10 else MISSING_KEY}
        payload = {"dataframe_records": [record]} if i % 50 else {"dataframe_records": [{"flight_id": 1}]}
        reply = sender.invoke("flights", payload, {"X-Request-Id": request_id})
        sent[request_id] = (reply.status, record, reply.body.get("predictions"))
    sender.close()

    stats = Client(deployment.logged.port).get("/ready").body["inference_log"]
    # This server flushes hourly (or at 1,000 rows), so every row below was written by the shutdown.
    assert stats["written"] == 0 and stats["dropped"] == 0
    assert deployment.logged.stop() in (0, -signal.SIGTERM)

    table = DeltaWarehouse(root=str(deployment.logged.warehouse), catalog=CATALOG).read(
        "monitoring", "inference_log").to_pylist()
    assert len(table) == len(sent)
    assert {row["request_id"] for row in table} == set(sent)
    for row in table:
        status, record, predictions = sent[row["request_id"]]
        assert (row["endpoint"], row["served_model"], row["model_version"]) == ("flights", "champion", "1")
        assert row["status_code"] == status
        if status != 200:
            assert row["error_code"] == "MISSING_FIELD" and row["predictions"] is None
            continue
        features = json.loads(row["features"])[0]
        expected_store = next((r for r in store_table().to_pylist() if r["flight_id"] == record["flight_id"]),
                              FALLBACK)
        assert features == {**{f: record[f] for f in REQUEST_FIELDS}, **{f: expected_store[f]
                                                                          for f in STORE_FEATURES}}
        assert json.loads(row["keys"]) == [{"flight_id": record["flight_id"]}]
        assert close(json.loads(row["predictions"]), predictions)
        assert row["n_fallbacks"] == (1 if record["flight_id"] == MISSING_KEY else 0)
        assert row["latency_ms"] > 0
