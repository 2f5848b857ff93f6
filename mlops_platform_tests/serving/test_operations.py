"""Operating the local serving process under load, through the ``LocalServing`` resource the assets use.

Real server processes, real HTTP clients keeping connections alive, a real Delta inference table: a redeploy in the
middle of a load test, a server that is busy (stopped with SIGSTOP) while a deploy comes, a port held by another
program, a deployment the server cannot load, two deploys at once, SIGTERM under load and ``kill -9`` under load.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import mlflow
import pytest
from deltalake import DeltaTable

from mlops_platform.ml.training import input_signature
from mlops_platform.polling import poll_until
from mlops_platform.resources.serving import EndpointDeployment, LocalServing, ResolvedModel, ServingError
from mlops_platform.serving.process import read_pid_file, stop_server
from mlops_platform_tests.serving.broken_model import UnscorableModel
from mlops_platform_tests.serving.conftest import mlflow_store
from mlops_platform_tests.serving.support import (
    REQUEST_FIELDS,
    ROW_KEY,
    fit_pipeline,
    publish,
    register,
    store_and_requests,
)

pytestmark = [pytest.mark.timeout(900), pytest.mark.xdist_group("serving-operations")]

MODEL = "flights_delay"
ENDPOINT = "flights-delay"
CLIENTS = 8


@dataclass
class Registry:
    tracking_uri: str
    versions: dict[str, str]
    features: list[str]
    store: Any
    records: list[dict[str, Any]]


@pytest.fixture(scope="module")
def registry(tmp_path_factory, migrated_mlflow, frames, features, configs, scored_rows) -> Registry:
    root = tmp_path_factory.mktemp("operations-mlflow")
    tracking = mlflow_store(migrated_mlflow, root)
    experiment = tracking.experiment_id("/operations")
    config = configs["classification"]
    train = frames["classification"][frames["classification"]["split"] == "train"]
    versions = {"first": register(fit_pipeline("hist_gradient_boosting", config, train.head(4_000), features),
                                  config, features, experiment),
                "second": register(fit_pipeline("hist_gradient_boosting", config, train.tail(4_000), features, 5),
                                   config, features, experiment)}
    with mlflow.start_run(experiment_id=experiment):
        versions["unloadable"] = str(mlflow.pyfunc.log_model(
            name="model", python_model=UnscorableModel(), registered_model_name=MODEL,
            signature=input_signature(config, features), pip_requirements=["mlflow"]).registered_model_version)
    store, records = store_and_requests(scored_rows.head(100), features)
    return Registry(tracking.tracking_uri, versions, features, store, records)


def serving(root: Path, registry: Registry) -> LocalServing:
    local = LocalServing(serving_dir=str(root / "serving"), port=0, warehouse_root=str(root / "warehouse"),
                         catalog="test", busy_timeout_seconds=60)
    publish(Path(local.serving_dir), ENDPOINT, registry.store)
    return local


def deployment(local: LocalServing, registry: Registry, version: str, name: str = ENDPOINT) -> EndpointDeployment:
    return EndpointDeployment(
        name=name, models=(ResolvedModel("champion", MODEL, registry.versions[version], 100),),
        keys=(ROW_KEY,), request_fields=tuple(REQUEST_FIELDS), feature_columns=tuple(registry.features),
        fallback={f: None for f in registry.features if f not in REQUEST_FIELDS},
        online_store_path=str(local.store_path(ENDPOINT)), usecase="flights")


@pytest.fixture
def world(tmp_path: Path, registry: Registry):
    local = serving(tmp_path, registry)
    try:
        yield local
    finally:
        stop_server(local.serving_dir)


@dataclass
class Load:
    """Clients with keep-alive connections sending requests until stopped; every outcome is kept."""

    url: str
    records: list[dict[str, Any]]
    answers: list[tuple[int, str, str]] = field(default_factory=list)  # status, x-request-id, served version
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    answered: threading.Condition = field(default_factory=threading.Condition)

    def client(self, index: int) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                body = {"dataframe_records": [self.records[(index + len(self.answers)) % len(self.records)]]}
                try:
                    answer = client.post(self.url, json=body, headers={"X-Request-Id": f"load-{index}"})
                except httpx.ConnectError as error:
                    self.failures.append(f"connect: {error}")  # never accepted: nothing was sent
                    time.sleep(0.05)
                    continue
                except httpx.HTTPError as error:
                    self.failures.append(f"sent, no answer: {type(error).__name__}: {error}")
                    continue
                with self.answered:
                    self.answers.append((answer.status_code, answer.headers.get("x-request-id", ""),
                                         answer.headers.get("x-served-model-version", "")))
                    self.answered.notify_all()

    def __enter__(self) -> Self:
        self.pool = concurrent.futures.ThreadPoolExecutor(CLIENTS)
        self.jobs = [self.pool.submit(self.client, i) for i in range(CLIENTS)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for job in self.jobs:
            job.result()
        self.pool.shutdown()

    def wait_for(self, answers: int, timeout: float = 120.0) -> None:
        with self.answered:
            enough = self.answered.wait_for(lambda: len(self.answers) >= answers, timeout)
        assert enough, f"only {len(self.answers)} answers: {self.failures[:3]}"


def serving_processes(serving_dir: str) -> list[int]:
    """Every process on this machine running a serving process for ``serving_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mlops_platform.serving" in command and serving_dir.encode() in command:
                found.append(int(entry.name))
    return found


def logged(local: LocalServing) -> list[str]:
    path = Path(local.warehouse_root) / "monitoring" / "inference_log"
    return DeltaTable(str(path)).to_pyarrow_table(columns=["databricks_request_id"]).column(0).to_pylist()


def test_a_redeploy_under_load_fails_no_request_and_keeps_one_server(world: LocalServing, registry: Registry) -> None:
    first = world.deploy(deployment(world, registry, "first"), tracking_uri=registry.tracking_uri)
    pid = read_pid_file(world.serving_dir).pid
    health: list[float] = []

    with Load(first.url, registry.records) as load:
        load.wait_for(200)
        second = world.deploy(deployment(world, registry, "second"), tracking_uri=registry.tracking_uri)
        with httpx.Client(timeout=10) as probe:
            for _ in range(20):
                started = time.perf_counter()
                assert probe.get(f"{read_pid_file(world.serving_dir).base_url}/health").status_code == 200
                health.append(time.perf_counter() - started)
        served = len(load.answers)
        load.wait_for(served + 200)

    assert second.changed and second.served_versions == {"champion": registry.versions["second"]}
    assert load.failures == []
    statuses = Counter(status for status, _, _ in load.answers)
    assert set(statuses) == {200}, statuses
    versions = [version for _, _, version in load.answers]
    switch = versions.index(registry.versions["second"])
    assert set(versions[:switch]) == {registry.versions["first"]}
    assert set(versions[switch:]) <= {registry.versions["first"], registry.versions["second"]}
    assert versions[-1] == registry.versions["second"]
    assert sorted(health)[len(health) // 2] < 0.05
    assert read_pid_file(world.serving_dir).pid == pid
    assert serving_processes(str(Path(world.serving_dir).resolve())) == [pid]


def test_a_busy_server_is_waited_for_never_doubled(world: LocalServing, registry: Registry) -> None:
    world.deploy(deployment(world, registry, "first"), tracking_uri=registry.tracking_uri)
    server = read_pid_file(world.serving_dir)
    os.kill(server.pid, signal.SIGSTOP)  # alive, its port accepts connections, nothing answers
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            redeploy = pool.submit(world.deploy, deployment(world, registry, "second"),
                                   tracking_uri=registry.tracking_uri)
            done, _ = concurrent.futures.wait([redeploy], timeout=3)
            assert not done, "the deploy must wait for the busy server"
            os.kill(server.pid, signal.SIGCONT)
            outcome = redeploy.result(timeout=120)
    finally:
        os.kill(server.pid, signal.SIGCONT)

    assert outcome.detail["server_pid"] == server.pid
    assert serving_processes(str(Path(world.serving_dir).resolve())) == [server.pid]


def test_a_busy_server_that_never_answers_fails_the_deploy_without_a_second_one(
        world: LocalServing, registry: Registry) -> None:
    world.deploy(deployment(world, registry, "first"), tracking_uri=registry.tracking_uri)
    server = read_pid_file(world.serving_dir)
    impatient = world.model_copy(update={"busy_timeout_seconds": 3.0})
    os.kill(server.pid, signal.SIGSTOP)
    try:
        with pytest.raises(ServingError, match=f"serving process {server.pid} .* is busy .* not starting a second"):
            impatient.deploy(deployment(world, registry, "second"), tracking_uri=registry.tracking_uri)
        assert serving_processes(str(Path(world.serving_dir).resolve())) == [server.pid]
    finally:
        os.kill(server.pid, signal.SIGCONT)


def test_a_port_held_by_another_program_is_reported_not_fought_over(tmp_path: Path, registry: Registry) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        local = serving(tmp_path, registry).model_copy(update={"port": port})

        with pytest.raises(ServingError, match=f"port {port} on 127.0.0.1 is held by a process that is not"):
            local.deploy(deployment(local, registry, "first"), tracking_uri=registry.tracking_uri)
    assert read_pid_file(local.serving_dir) is None


def test_a_deployment_the_server_cannot_load_leaves_the_previous_one_serving(world: LocalServing,
                                                                              registry: Registry) -> None:
    good = world.deploy(deployment(world, registry, "first"), tracking_uri=registry.tracking_uri)
    config = Path(world.serving_dir, "endpoints", f"{ENDPOINT}.json")
    before = config.read_bytes()

    with pytest.raises(ServingError) as failure:
        world.deploy(deployment(world, registry, "unloadable"), tracking_uri=registry.tracking_uri)

    message = str(failure.value)
    assert "cannot load the deployment" in message and "sklearn" in message
    assert f"The previous deployment ({{'champion': '{registry.versions['first']}'}}" in message
    assert config.read_bytes() == before
    answer = httpx.post(good.url, json={"dataframe_records": registry.records[:1]})
    assert answer.status_code == 200 and answer.headers["x-served-model-version"] == registry.versions["first"]


def test_two_deploys_at_once_take_turns_on_one_server(world: LocalServing, registry: Registry) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(
            lambda args: world.deploy(deployment(world, registry, args[0], args[1]), tracking_uri=registry.tracking_uri),
            [("first", "flights-delay-a"), ("second", "flights-delay-b")]))

    assert {o.detail["server_pid"] for o in outcomes} == {read_pid_file(world.serving_dir).pid}
    assert len(serving_processes(str(Path(world.serving_dir).resolve()))) == 1
    for outcome in outcomes:
        assert httpx.post(outcome.url, json={"dataframe_records": registry.records[:1]}).status_code == 200


def test_sigterm_under_load_answers_every_request_already_sent_and_logs_it(world: LocalServing,
                                                                           registry: Registry) -> None:
    outcome = world.deploy(deployment(world, registry, "first"), tracking_uri=registry.tracking_uri)
    server = read_pid_file(world.serving_dir)

    with Load(outcome.url, registry.records) as load:
        load.wait_for(300)
        os.kill(server.pid, signal.SIGTERM)
        gone = poll_until(lambda: read_pid_file(world.serving_dir) is None, 120, interval=0.05)
        assert gone, "the server removes its pid file as it exits"

    sent_unanswered = [f for f in load.failures if f.startswith("sent")]
    assert sent_unanswered == []
    assert load.failures, "connections after the drain began must have been refused"
    answered = [rid for _, rid, _ in load.answers]
    assert sorted(logged(world)) == sorted(answered)
    assert not list(Path(world.serving_dir, "spool").glob("*.jsonl")), "a drained server leaves nothing to ship"


def test_kill_9_under_load_loses_no_answered_request_and_a_restart_ships_them_once(
        world: LocalServing, registry: Registry) -> None:
    outcome = world.deploy(deployment(world, registry, "first"), tracking_uri=registry.tracking_uri)
    server = read_pid_file(world.serving_dir)

    with Load(outcome.url, registry.records) as load:
        load.wait_for(300)
        os.kill(server.pid, signal.SIGKILL)
        time.sleep(0.5)
    answered = [rid for _, rid, _ in load.answers]
    assert list(Path(world.serving_dir, "spool").glob("*.jsonl")), "the dead server's spool is left behind"

    restarted = world.ensure_running()
    rows: list[str] = []

    def shipped() -> bool:
        nonlocal rows
        rows = logged(world) if (Path(world.warehouse_root) / "monitoring" / "inference_log").exists() else []
        return set(answered) <= set(rows)

    poll_until(shipped, 120, interval=0.2)

    assert restarted.pid != server.pid
    assert set(answered) <= set(rows), f"{len(set(answered) - set(rows))} answered requests are not logged"
    assert len(rows) == len(set(rows)), "a restart must not log a request twice"
    # A request spooled in the instant before the kill may have had no time to be answered: logged, never seen.
    assert len(rows) - len(answered) <= CLIENTS
