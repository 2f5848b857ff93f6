"""Serving endpoints as assets, end to end: Delta feature tables, a real MLflow registry, a real serving process.

The warehouse holds small feature tables shaped like the flights use case's; the registry holds small versions
of the flights_delay pipeline (the platform's own ``build_pipeline`` on synthetic rows, a second or less to fit)
and one that loads but cannot score. The serving process is started by the ``LocalServing`` resource itself on a
free loopback port, once for the module, and reused by every deploy.
"""

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mlops_platform.defs.serving.assets import SMOKE_TEST, deploy_endpoints, serving_assets
from mlops_platform.defs.stages import endpoint_key, online_store_key
from mlops_platform.features import feature_columns
from mlops_platform.ml import packaging
from mlops_platform.ml.estimators import build_pipeline
from mlops_platform.ml.scoring import feature_frame
from mlops_platform.ml.training import input_signature
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.serving import LocalServing
from mlops_platform.resources.warehouse import DeltaWarehouse
from mlops_platform.serving.online_store import read_table
from mlops_platform.serving.process import (
    ServerProcess,
    read_pid_file,
    running_server,
    stop_server,
    write_pid_file,
)
from mlops_platform.serving.routing import request_id_for
from mlops_platform.settings import UseCaseConfig, load_settings
from mlops_platform_tests.conftest import flights_table
from mlops_platform_tests.serving.broken_model import UnscorableModel
from mlops_platform_tests.serving.support import register

pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("serving")]

MODEL = "delay"
REGISTERED = "flights_delay"
ENDPOINT = "delay"
DAYS = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(10)]
# (carrier, origin, dest, tailnum): the smoke records' planes, one plane without registry attributes, one
# flight without a tail number (never a store key).
FLIGHTS = [("UA", "EWR", "IAH", "N14228"), ("AA", "JFK", "MIA", "N619AA"), ("B6", "JFK", "BQN", "N804JB"),
           ("DL", "LGA", "ATL", "N900DL"), ("US", "EWR", "CLT", "N111US"), ("MQ", "LGA", "DTW", None)]
NO_PLANE = "N900DL"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _numbers(rng: np.random.Generator, columns: list[str], rows: int) -> dict[str, Any]:
    return {c: (rng.integers(0, 300, rows) if "_rows_" in c else rng.normal(10, 5, rows)) for c in columns}


def write_warehouse(usecase: UseCaseConfig, warehouse: DeltaWarehouse) -> None:
    rng = np.random.default_rng(3)
    gold = [{"flight_date": day, "carrier": c, "origin": o, "dest": d, "tailnum": t}
            for day in DAYS for c, o, d, t in FLIGHTS]
    warehouse.overwrite(*flights_table("gold", "flights"), pa.Table.from_pylist(gold))
    carriers = sorted({f[0] for f in FLIGHTS})
    routes = sorted({(f[1], f[2]) for f in FLIGHTS})
    spec = usecase.features
    carrier_rows = [(c, day) for c in carriers for day in DAYS]
    warehouse.overwrite(*flights_table("features", "carrier_delays"), pa.table({
        "carrier": [c for c, _ in carrier_rows], "feature_date": [d for _, d in carrier_rows],
        **_numbers(rng, list(spec["carrier_delays"].columns), len(carrier_rows))}))
    route_rows = [(o, d, day) for o, d in routes for day in DAYS]
    warehouse.overwrite(*flights_table("features", "route_delays"), pa.table({
        "origin": [r[0] for r in route_rows], "dest": [r[1] for r in route_rows],
        "feature_date": [r[2] for r in route_rows],
        **_numbers(rng, list(spec["route_delays"].columns), len(route_rows))}))
    hours = [dt.datetime(2013, 1, 10, h) for h in range(24)]
    weather_rows = [(o, h) for o in ("EWR", "JFK", "LGA") for h in hours]
    warehouse.overwrite(*flights_table("features", "origin_weather"), pa.table({
        "origin": [o for o, _ in weather_rows], "scheduled_hour": [h for _, h in weather_rows],
        **_numbers(rng, list(spec["origin_weather"].columns), len(weather_rows))}))
    planes = sorted({f[3] for f in FLIGHTS if f[3] and f[3] != NO_PLANE})
    warehouse.overwrite(*flights_table("features", "plane_attributes"), pa.table({
        "tailnum": planes, "plane_year": rng.integers(1990, 2013, len(planes)),
        "plane_seats": rng.integers(50, 300, len(planes)), "plane_engines": [2] * len(planes),
        "plane_type": ["Fixed wing multi engine"] * len(planes),
        "plane_manufacturer": ["BOEING", "AIRBUS", "EMBRAER", "BOEING"][: len(planes)]}))


def training_rows(usecase: UseCaseConfig, seed: int, rows: int = 400) -> tuple[pd.DataFrame, pd.Series]:
    config = usecase.models[MODEL]
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        column: (rng.choice(["UA", "AA", "B6", "DL", "US", "EWR", "JFK", "LGA", "BOEING"], rows)
                 if column in config.categorical else rng.normal(10, 5, rows))
        for column in feature_columns(usecase)
    })
    label = (frame["hour"] + rng.normal(0, 3, rows) > 10).astype(int)
    return feature_frame(frame, config, feature_columns(usecase)), label


def register_pipeline(usecase: UseCaseConfig, experiment: str, seed: int) -> str:
    config, features = usecase.models[MODEL], feature_columns(usecase)
    frame, label = training_rows(usecase, seed)
    pipeline = build_pipeline(config, features, {"max_iter": 10, "max_leaf_nodes": 7}, seed).fit(frame, label)
    return register(pipeline, config, features, experiment)


def register_unscorable(usecase: UseCaseConfig, experiment: str) -> str:
    """A version that loads and deploys but refuses every request: it was fitted on categories coded as numbers."""
    config, features = usecase.models[MODEL], feature_columns(usecase)
    frame, label = training_rows(usecase, 3)
    coded = frame.assign(**{c: frame[c].astype("category").cat.codes.astype(float) for c in config.categorical})
    pipeline = Pipeline([("prepare", ColumnTransformer([("all", "passthrough", features)])),
                         ("model", LogisticRegression())]).fit(coded.fillna(0.0), label)
    return register(pipeline, config, features, experiment)


def register_unloadable(usecase: UseCaseConfig, experiment: str) -> str:
    """A version whose artifacts the serving process cannot load as a scikit-learn pipeline."""
    config = usecase.models[MODEL]
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(name="model", python_model=UnscorableModel(),
                                       registered_model_name=config.registered_name,
                                       signature=input_signature(config, feature_columns(usecase)),
                                       pip_requirements=["mlflow"])
    return str(info.registered_model_version)


class World:
    def __init__(self, root: Path, usecase: UseCaseConfig, warehouse: DeltaWarehouse, tracking: MlflowTracking,
                 serving: LocalServing, versions: dict[str, str]) -> None:
        self.root, self.usecase, self.warehouse, self.tracking = root, usecase, warehouse, tracking
        self.serving, self.versions = serving, versions

    @property
    def resources(self) -> dict[str, object]:
        return {"warehouse": self.warehouse, "mlflow": self.tracking, "serving": self.serving}

    def aliases(self, **aliases: str | None) -> None:
        client = self.tracking.client()
        current = client.get_registered_model(REGISTERED).aliases
        for alias, version in aliases.items():
            if version is None:
                if alias in current:
                    client.delete_registered_model_alias(REGISTERED, alias)
            else:
                client.set_registered_model_alias(REGISTERED, alias, version)

    def deploy(self, instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
        return dg.materialize(serving_assets(self.usecase), instance=instance or dg.DagsterInstance.ephemeral(),
                              resources=self.resources, raise_on_error=False, run_config=QUIET)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("endpoints")
    usecase = load_settings("local").usecases["flights"]
    warehouse = DeltaWarehouse(root=str(root / "warehouse"), catalog="test")
    write_warehouse(usecase, warehouse)
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{root}/mlflow/mlflow.db",
                              artifact_root=str(root / "mlflow" / "artifacts"))
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    tracking.configure()
    serving = LocalServing(serving_dir=str(root / "serving"), port=0, warehouse_root=str(root / "warehouse"),
                           catalog="test")
    try:
        experiment = tracking.experiment_id("/flights/serving-tests")
        versions = {"good": register_pipeline(usecase, experiment, 1),
                    "other": register_pipeline(usecase, experiment, 2),
                    "broken": register_unscorable(usecase, experiment),
                    "unloadable": register_unloadable(usecase, experiment)}
        yield World(root, usecase, warehouse, tracking, serving, versions)
    finally:
        stop_server(serving.serving_dir)
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def materialized(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any] | None:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    if not events:
        return None
    return {name: value.value for name, value in events[-1].materialization.metadata.items()}


def smoke(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == SMOKE_TEST]
    return evaluation


def invoke(url: str, records: list[dict[str, Any]], request_id: str = "test-1") -> httpx.Response:
    return httpx.post(url, json={"dataframe_records": records}, headers={"X-Request-Id": request_id}, timeout=30)


def expected_prediction(world: World, version: str, record: dict[str, Any]) -> Any:
    """What the version's pyfunc answers for ``record`` with its features taken from the published store."""
    store = read_table(world.serving.store_path(ENDPOINT)).to_pylist()
    keys = world.usecase.serving[ENDPOINT].online_store.keys
    (row,) = [r for r in store if all(r[k] == record[k] for k in keys)]
    features = feature_columns(world.usecase)
    frame = pd.DataFrame([{**row, **record}])[features]
    answer = packaging.load_served(f"models:/{REGISTERED}/{version}").predict(frame)
    return answer.to_dict(orient="records")[0]


def test_smoke_test_passes_and_production_serves_the_staged_champion(world: World) -> None:
    world.aliases(champion=world.versions["good"], challenger=None)
    result = world.deploy()

    assert result.success
    store = materialized(result, online_store_key("flights", ENDPOINT))
    # Five key combinations have a tail number; one of their planes has no registry attributes.
    assert store["dagster/row_count"] == 5
    assert store["missing_keys"] == {"carrier_delays": 0, "route_delays": 0, "origin_weather": 0,
                                     "plane_attributes": 1}
    staging = materialized(result, endpoint_key("flights", ENDPOINT, "staging"))
    production = materialized(result, endpoint_key("flights", ENDPOINT, "production"))
    # No challenger right now: its 10 % go to the champion.
    for deployed in (staging, production):
        assert deployed["served_versions"] == {"champion": world.versions["good"]}
        assert deployed["traffic"] == {"champion": 100}
        assert deployed["missing_aliases"] == ["challenger"]
    assert staging["endpoint_name"] == "flights-delay-staging" and production["endpoint_name"] == "flights-delay"
    evaluation = smoke(result)
    assert evaluation.passed, evaluation.description
    assert evaluation.metadata["requests"].value == 2

    record = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N14228", "hour": 17, "distance": 1400.0}
    answer = invoke(production["endpoint_url"], [record])
    assert answer.status_code == 200, answer.text
    assert (answer.headers["served-model-name"], answer.headers["x-served-model-version"]) == (
        "champion", world.versions["good"])
    assert answer.json()["predictions"] == [expected_prediction(world, world.versions["good"], record)]
    assert set(answer.json()["predictions"][0]) == {"probability", "label"}
    ids = [a["request_id"] for a in evaluation.metadata["answers"].value]
    assert len(set(ids)) == len(ids) == 2, "every smoke request carries a fresh id"
    server = running_server(world.serving.serving_dir)
    assert server is not None and staging["endpoint_url"].startswith(server.base_url)


def test_a_redeploy_of_the_same_versions_changes_nothing_and_a_challenger_gets_its_share(world: World) -> None:
    world.aliases(champion=world.versions["good"], challenger=None)
    instance = dg.DagsterInstance.ephemeral()
    assert world.deploy(instance).success
    config = Path(world.serving.serving_dir, "endpoints", "flights-delay.json")
    written = config.stat().st_mtime_ns
    pid = read_pid_file(world.serving.serving_dir).pid

    again = world.deploy(instance)

    assert again.success
    assert materialized(again, endpoint_key("flights", ENDPOINT, "staging"))["changed"] is False
    assert materialized(again, endpoint_key("flights", ENDPOINT, "production"))["changed"] is False
    assert config.stat().st_mtime_ns == written
    assert read_pid_file(world.serving.serving_dir).pid == pid

    world.aliases(challenger=world.versions["other"])
    split = world.deploy(instance)

    assert split.success, smoke(split).description
    staging = materialized(split, endpoint_key("flights", ENDPOINT, "staging"))
    production = materialized(split, endpoint_key("flights", ENDPOINT, "production"))
    assert staging["changed"] is True and production["changed"] is True
    assert production["served_versions"] == {"champion": world.versions["good"], "challenger": world.versions["other"]}
    assert production["traffic"] == {"champion": 90, "challenger": 10}
    answers = smoke(split).metadata["answers"].value
    assert {(a["served_model"], a["payload"]) for a in answers} == {
        (alias, payload) for alias in ("champion", "challenger") for payload in ("single", "batch")}
    challenger_id = request_id_for("challenger", [("champion", 90), ("challenger", 10)])
    record = {"carrier": "AA", "origin": "JFK", "dest": "MIA", "tailnum": "N619AA", "hour": 9, "distance": 1089.0}
    answer = invoke(production["endpoint_url"], [record], challenger_id)
    assert answer.status_code == 200 and answer.headers["x-served-model-version"] == world.versions["other"]
    assert read_pid_file(world.serving.serving_dir).pid == pid


def test_a_staging_endpoint_that_cannot_score_fails_the_smoke_test_and_production_is_not_deployed(
        world: World) -> None:
    world.aliases(champion=world.versions["good"], challenger=None)
    instance = dg.DagsterInstance.ephemeral()
    assert world.deploy(instance).success
    production_url = materialized(world.deploy(instance), endpoint_key("flights", ENDPOINT, "production"))["endpoint_url"]

    world.aliases(champion=world.versions["broken"])
    try:
        result = world.deploy(instance)
    finally:
        world.aliases(champion=world.versions["good"])

    staging = materialized(result, endpoint_key("flights", ENDPOINT, "staging"))
    assert staging["served_versions"] == {"champion": world.versions["broken"]}
    evaluation = smoke(result)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "champion single: HTTP 400" in evaluation.description and "MODEL_INPUT_ERROR" in evaluation.description
    assert materialized(result, endpoint_key("flights", ENDPOINT, "production")) is None
    production_step = [e for e in result.all_events if e.step_key and "production" in e.step_key]
    assert "STEP_SUCCESS" not in {e.event_type_value for e in production_step}
    # Production still serves the version that passed its smoke test.
    record = {"carrier": "B6", "origin": "JFK", "dest": "BQN", "tailnum": "N804JB", "hour": 5, "distance": 1576.0}
    answer = invoke(production_url, [record])
    assert answer.status_code == 200 and answer.headers["x-served-model-version"] == world.versions["good"]


def test_a_version_the_server_cannot_load_fails_staging_and_production_keeps_serving(world: World) -> None:
    world.aliases(champion=world.versions["good"], challenger=None)
    instance = dg.DagsterInstance.ephemeral()
    production_url = materialized(world.deploy(instance), endpoint_key("flights", ENDPOINT, "production"))["endpoint_url"]

    world.aliases(champion=world.versions["unloadable"])
    try:
        result = world.deploy(instance)
    finally:
        world.aliases(champion=world.versions["good"])

    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.event_specific_data.error.to_string()
    assert "cannot load the deployment" in message and "keeps serving" in message
    assert materialized(result, endpoint_key("flights", ENDPOINT, "production")) is None
    record = {"carrier": "B6", "origin": "JFK", "dest": "BQN", "tailnum": "N804JB", "hour": 5, "distance": 1576.0}
    answer = invoke(production_url, [record])
    assert answer.status_code == 200 and answer.headers["x-served-model-version"] == world.versions["good"]


def test_deploy_endpoints_runs_staging_only_when_asked(world: World) -> None:
    world.aliases(champion=world.versions["good"], challenger=None)
    result = deploy_endpoints(world.usecase, world.resources, dg.DagsterInstance.ephemeral(), stage="staging")

    assert result.success
    keys = {e.asset_key for e in result.get_asset_materialization_events()}
    assert keys == {online_store_key("flights", ENDPOINT), endpoint_key("flights", ENDPOINT, "staging")}
    assert smoke(result).passed


class StaticServing(LocalServing):
    """The process management of ``LocalServing`` around a server that starts in a blink: a static folder on a free
    port whose ``health`` file answers ``GET /health``, which records itself in the pid file as the real one does."""

    def server_command(self) -> list[str]:
        static = Path(self.serving_dir) / "static"
        static.mkdir(parents=True, exist_ok=True)
        (static / "health").write_text("{}")
        script = textwrap.dedent(f"""
            import functools, http.server, os
            from mlops_platform.serving.process import ServerProcess, _process_start, write_pid_file
            handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory={str(static)!r})
            server = http.server.HTTPServer(("127.0.0.1", 0), handler)
            write_pid_file({self.serving_dir!r}, ServerProcess(os.getpid(), "127.0.0.1", server.server_port,
                                                               _process_start(os.getpid())))
            server.serve_forever()
        """)
        return [sys.executable, "-c", script]


def test_a_stale_pid_file_starts_a_new_server_which_is_then_reused(tmp_path: Path) -> None:
    serving_dir = tmp_path / "serving"
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    write_pid_file(serving_dir, ServerProcess(finished.pid, "127.0.0.1", 9))
    local = StaticServing(serving_dir=str(serving_dir), port=0, warehouse_root=str(tmp_path), catalog="test")
    try:
        started = local.ensure_running()
        assert started.pid != finished.pid and running_server(serving_dir) == started
        assert local.ensure_running() == started
        assert local.invocation_url("x") == f"{started.base_url}/serving-endpoints/x/invocations"
    finally:
        assert stop_server(serving_dir)
    assert running_server(serving_dir) is None and read_pid_file(serving_dir) is None
