"""The remote entry point on local Spark: under ``PipesSubprocessClient``, and as the task of a (fake) Databricks run.

Both start from one real landed day processed by the embedded engine, then run the remote twin of ``silver/flights``
for that day. What arrives in Dagster must be what the embedded engine's own materialization reported: the same
asset keys, row counts, table name, schema and quarantine figures, the same checks with the same outcome. Values that
legitimately differ are left out: the engine's name, the Delta version (the remote run is the table's next commit)
and samples/previews, whose row order is the engine's.

Each test starts one JVM, in the entry point's subprocess.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from unittest.mock import MagicMock
from urllib.parse import parse_qsl, unquote, urlsplit

import dagster as dg
import pytest
from dagster_databricks import PipesDatabricksClient
from databricks.sdk.service import jobs
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlops_platform.defs import build_definitions
from mlops_platform.defs.local_pipes import PipesCompleteLinesMessageReader, subprocess_pipes_client
from mlops_platform.defs.remote import remote_twin
from mlops_platform.resources.databricks import DatabricksWorkspace
from mlops_platform.resources.spark import DATABRICKS_RUNTIME_ENV
from mlops_platform.settings import PROJECT_ROOT, ServerlessSpec, Settings, load_settings
from mlops_platform_tests.conftest import FIRST_DAY, QUIET, flights_key, run_day

pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark"), pytest.mark.timeout(900)]

if shutil.which("java") is None:
    pytest.skip("Java 17 is needed for the remote entry point on Spark (no `java` on PATH)", allow_module_level=True)

SILVER = flights_key("silver", "flights")
QUARANTINE = flights_key("silver", "flights_quarantine")
DAY = FIRST_DAY.isoformat()
# batch_id is the run's id; versions are the tables' own in each warehouse.
DIFFERS_LEGITIMATELY = {"engine", "delta_version", "preview", "batch_id", "bronze_version", "versions"}
ENTRY_POINT = [sys.executable, "-m", "mlops_platform.remote"]


def _comparable(metadata) -> dict[str, object]:
    return {name: value for name, value in metadata.items()
            if name not in DIFFERS_LEGITIMATELY and "sample" not in name}


def _materializations(result) -> dict[str, dict[str, object]]:
    return {event.asset_key.to_user_string(): dict(event.step_materialization_data.materialization.metadata)
            for event in result.get_asset_materialization_events()}


def _checks(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def _silver_node(definitions: dg.Definitions) -> dg.AssetsDefinition:
    return next(node for node in definitions.assets or []
                if isinstance(node, dg.AssetsDefinition) and SILVER in node.keys)


def _assert_same_as_embedded(embedded, remote) -> None:
    local_mats, remote_mats = _materializations(embedded), _materializations(remote)
    for key in (SILVER, QUARANTINE):
        name = key.to_user_string()
        assert _comparable(remote_mats[name]) == _comparable(local_mats[name]), name
    assert remote_mats[SILVER.to_user_string()]["engine"].value == "spark"
    assert local_mats[SILVER.to_user_string()]["engine"].value == "polars"

    # The orchestrator-side freshness check, when the daily job runs it, is no part of the silver step.
    local_checks = {k: v for k, v in _checks(embedded).items() if k[0] == SILVER.to_user_string()
                    and k[1] != "freshness"}
    remote_checks = _checks(remote)
    assert set(remote_checks) == set(local_checks) == {
        ("flights/silver/flights", "keys_unique"), ("flights/silver/flights", "rows_reconcile"), ("flights/silver/flights", "quarantine_share"),
        ("flights/silver/flights", "keys_consistent")}
    for key, local in local_checks.items():
        assert (remote_checks[key].passed, remote_checks[key].severity) == (local.passed, local.severity), key
        assert _comparable(remote_checks[key].metadata) == _comparable(local.metadata), key


@pytest.fixture
def embedded(landed_settings: Settings):
    """The first landed day through the embedded engine up to silver: the reference the remote run must match."""
    result = run_day(build_definitions(landed_settings), FIRST_DAY, up_to=[SILVER, QUARANTINE])
    assert result.success
    return result


def test_entry_point_under_pipes_subprocess_reports_what_the_embedded_engine_reports(landed_settings, embedded):
    definitions = build_definitions(landed_settings)

    def launch(context, arguments):
        return subprocess_pipes_client().run(command=[*ENTRY_POINT, *arguments], context=context).get_results()

    twin = remote_twin(_silver_node(definitions), launch)
    remote = dg.materialize([twin], partition_key=DAY, resources=definitions.resources, run_config=QUIET)

    assert remote.success
    _assert_same_as_embedded(embedded, remote)


def test_a_failed_remote_step_fails_with_its_own_message(landed_settings):
    definitions = build_definitions(landed_settings)

    def launch(context, arguments):
        return subprocess_pipes_client().run(command=[*ENTRY_POINT, "flights/silver/nowhere"],
                                              context=context).get_results()

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([remote_twin(_silver_node(definitions), launch)], partition_key=DAY, instance=instance,
                            resources=definitions.resources, raise_on_error=False, run_config=QUIET)

    assert not result.success
    # The remote exception arrives with the Pipes session's close, as an engine event carrying the error.
    events = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    errors = [entry.dagster_event.engine_event_data.error for entry in events
              if entry.dagster_event.engine_event_data.error is not None]
    assert any("no asset flights/silver/nowhere in the local environment" in error.message for error in errors)


class FakeDatabricks:
    """A workspace whose ``jobs.submit`` runs the submitted wheel task here, as a cluster would."""

    RUN_ID = 4242
    RUN_URL = "https://dbc-fake.cloud.databricks.com/?o=1#job/1/run/4242"

    def __init__(self) -> None:
        self.submitted: list[jobs.SubmitTask] = []
        self.outcome: subprocess.CompletedProcess | None = None
        self.client = MagicMock()
        self.client.jobs.submit.side_effect = self.submit
        self.client.jobs.get_run.side_effect = self.get_run

    def submit(self, tasks: list[jobs.SubmitTask], **_: object) -> MagicMock:
        (task,) = tasks
        self.submitted.append(task)
        # Databricks runs the wheel's console script; `python -m` is the same function.
        self.outcome = subprocess.run(
            [*ENTRY_POINT, *task.python_wheel_task.parameters],
            env={**os.environ, **(task.new_cluster.spark_env_vars or {})}, capture_output=True, text=True,
            check=False,
        )
        waiter = MagicMock()
        waiter.bind.return_value = {"run_id": self.RUN_ID}
        return waiter

    def get_run(self, run_id: int) -> jobs.Run:
        assert run_id == self.RUN_ID and self.outcome is not None
        ok = self.outcome.returncode == 0
        return jobs.Run(run_id=run_id, run_page_url=self.RUN_URL, state=jobs.RunState(
            life_cycle_state=jobs.RunLifeCycleState.TERMINATED,
            result_state=jobs.RunResultState.SUCCESS if ok else jobs.RunResultState.FAILED,
            state_message="" if ok else self.outcome.stderr[-2000:]))


@pytest.fixture
def prod_on_delta(landed_settings, tmp_path) -> Settings:
    """prod, with its config folder and wheel where this machine has them and data in the test's folder. Its tables
    are Delta folders: Unity Catalog cannot exist here (its statements are tested in test_unity_catalog.py)."""
    config_dir = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config_dir)
    prod_yaml = config_dir / "environments" / "prod.yaml"
    prod_yaml.write_text(prod_yaml.read_text().replace("tables: unity_catalog", "tables: delta"))
    prod = load_settings("prod", config_dir=config_dir)
    assert prod.environment.tables == "delta"
    databricks = prod.environment.databricks.model_copy(update={
        "config_dir": str(config_dir), "wheel": "/Volumes/mlops_prod/platform/artifacts/test.whl"})
    prod = prod.model_copy(update={"environment": prod.environment.model_copy(update={"databricks": databricks})})
    assert prod.data_dir == landed_settings.data_dir
    return prod


def test_databricks_twin_submits_the_wheel_task_and_reports_the_run(landed_settings, embedded, prod_on_delta):
    prod = prod_on_delta
    config_dir = prod.environment.databricks.config_dir
    definitions = build_definitions(prod)
    fake = FakeDatabricks()

    class FakeWorkspace(DatabricksWorkspace):
        def pipes_client(self) -> PipesDatabricksClient:
            return PipesDatabricksClient(client=fake.client, context_injector=dg.PipesTempFileContextInjector(),
                                         message_reader=PipesCompleteLinesMessageReader(), poll_interval_seconds=0.05)

    resources = {**definitions.resources,
                 "databricks": FakeWorkspace(host="https://dbc-fake.cloud.databricks.com", token="fake")}
    remote = dg.materialize([_silver_node(definitions)], partition_key=DAY, resources=resources,
                            run_config=QUIET, raise_on_error=False)
    assert fake.outcome is not None
    assert remote.success, fake.outcome.stderr[-3000:]

    (task,) = fake.submitted
    submitted = task.as_dict()
    env = submitted["new_cluster"].pop("spark_env_vars")
    assert set(env) == {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
    assert submitted == {
        "task_key": "flights_silver_flights",
        "new_cluster": {"spark_version": "15.4.x-scala2.12", "node_type_id": "m5d.xlarge", "num_workers": 4,
                        "spark_conf": {"spark.sql.session.timeZone": "UTC"}},
        "libraries": [{"whl": "/Volumes/mlops_prod/platform/artifacts/test.whl"}],
        "python_wheel_task": {"package_name": "mlops_platform", "entry_point": "mlops-remote", "parameters": [
            "flights/silver/flights", "flights/silver/flights_quarantine", "--partition", DAY,
            "--env", "prod", "--config-dir", config_dir, "--data-dir", str(landed_settings.data_dir)]},
    }

    materializations = _materializations(remote)
    for key in (SILVER, QUARANTINE):
        metadata = materializations[key.to_user_string()]
        assert metadata["Databricks Job Run ID"].value == str(FakeDatabricks.RUN_ID)
        assert metadata["Databricks Job Run URL"] == dg.MetadataValue.url(FakeDatabricks.RUN_URL)
    # The table is named in the environment's catalog; everything else matches the embedded engine's run.
    assert materializations["flights/silver/flights"]["dagster/table_name"].value == "mlops_prod.flights_silver.flights"
    for metadata in materializations.values():
        for name in ("Databricks Job Run ID", "Databricks Job Run URL", "dagster/table_name"):
            metadata.pop(name)
    local = _materializations(embedded)
    for key in (SILVER, QUARANTINE):
        local[key.to_user_string()].pop("dagster/table_name")
        assert _comparable(materializations[key.to_user_string()]) == _comparable(local[key.to_user_string()])
    assert {k: v.passed for k, v in _checks(remote).items()} == {
        k: v.passed for k, v in _checks(embedded).items() if k[0] == "flights/silver/flights" and k[1] != "freshness"}


# --- what a Databricks runtime has: the wheel's dependencies and its own Spark ------------------------------------

RUNTIME_SPARK = {"pyspark", "py4j"}


def wheel_dependencies(distribution: str = "mlops_platform") -> set[str]:
    """Every distribution installing the wheel brings (names canonical), resolved through what is installed here."""
    seen: set[str] = set()
    pending: list[tuple[str, frozenset[str]]] = [(distribution, frozenset())]
    while pending:
        name, extras = pending.pop()
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            markers = [{"extra": extra} for extra in extras or {""}]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in markers):
                continue
            dependency = canonicalize_name(requirement.name)
            if dependency not in seen:
                seen.add(dependency)
                pending.append((dependency, frozenset(requirement.extras)))
    return seen


def test_the_wheel_brings_no_spark_of_its_own():
    # A pyspark from PyPI would replace the Databricks runtime's Spark on the cluster.
    dependencies = wheel_dependencies()
    assert {"dagster", "dagster-pipes", "mlflow", "deltalake", "evidently"} <= dependencies
    assert not dependencies & {"pyspark", "dagster-pyspark", "dagster-databricks", "dagster-webserver"}


ON_THE_RUNTIME = """
import importlib.abc, json, sys

blocked = set(json.loads(sys.argv[1]))


class NotOnTheRuntime(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}: not installed with the wheel", name=name)
        return None


sys.meta_path.insert(0, NotOnTheRuntime())
import dagster as dg
from mlops_platform.remote import materialize_step
from mlops_platform.settings import load_settings

env, config_dir, data_dir, day, *keys = sys.argv[2:]
result = materialize_step(load_settings(env, config_dir, data_dir), [dg.AssetKey.from_user_string(k) for k in keys],
                          (day, day))
metadata = {event.asset_key.to_user_string(): event.step_materialization_data.materialization.metadata
            for event in result.get_asset_materialization_events()}
failures = [event.step_failure_data.error.to_string() for event in result.get_step_failure_events()]
print(json.dumps({"success": result.success, "failures": failures, "materialized": sorted(metadata),
                  "engine": metadata["flights/silver/flights"]["engine"].value if metadata else None}))
"""


def test_a_remote_step_runs_with_only_the_wheels_dependencies_and_the_runtimes_spark(embedded, prod_on_delta):
    allowed = wheel_dependencies() | RUNTIME_SPARK
    blocked = sorted(module for module, distributions in importlib.metadata.packages_distributions().items()
                     if not {canonicalize_name(d) for d in distributions} & allowed
                     and canonicalize_name(distributions[0]) != "mlops-platform")
    assert {"dagster_pyspark", "dagster_databricks", "dagster_webserver", "pytest"} <= set(blocked)

    settings = [prod_on_delta.environment.name, prod_on_delta.environment.databricks.config_dir,
                str(prod_on_delta.data_dir)]
    outcome = subprocess.run(
        [sys.executable, "-c", ON_THE_RUNTIME, json.dumps(blocked), *settings, DAY,
         *(key.to_user_string() for key in (SILVER, QUARANTINE))],
        env={**os.environ, DATABRICKS_RUNTIME_ENV: "15.4"}, capture_output=True, text=True, check=False, timeout=600)

    assert outcome.returncode == 0, outcome.stderr[-3000:]
    report = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert report == {"success": True, "failures": [], "materialized": ["flights/silver/flights", "flights/silver/flights_quarantine"],
                      "engine": "spark"}


# --- serverless: the Jobs and Files APIs of a (fake) workspace, over HTTP ------------------------------------------

class FakeWorkspaceApi(BaseHTTPRequestHandler):
    """``jobs/runs/submit`` runs the wheel task here in the background, ``jobs/runs/get`` reports it; the Files API
    serves this machine's files under the same absolute paths (the volume the task and the orchestrator share)."""

    submitted: ClassVar[list[dict]] = []
    outcomes: ClassVar[dict[int, subprocess.CompletedProcess]] = {}

    def _reply(self, status: int, payload: bytes = b"{}", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, answer: dict) -> None:
        self._reply(status, json.dumps(answer).encode())

    def _local(self, prefix: str) -> Path:
        return Path(unquote(urlsplit(self.path).path).removeprefix(prefix))

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _run(self, run_id: int, task: dict) -> None:
        self.outcomes[run_id] = subprocess.run([*ENTRY_POINT, *task["python_wheel_task"]["parameters"]],
                                               capture_output=True, text=True, check=False)

    def do_POST(self) -> None:
        assert urlsplit(self.path).path == "/api/2.2/jobs/runs/submit", self.path
        body = json.loads(self._body())
        self.submitted.append(body)
        run_id = FakeDatabricks.RUN_ID + len(self.submitted)
        threading.Thread(target=self._run, args=(run_id, body["tasks"][0]), daemon=True).start()
        self._json(200, {"run_id": run_id})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/api/2.2/jobs/runs/get":
            run_id = int(dict(parse_qsl(url.query))["run_id"])
            outcome = self.outcomes.get(run_id)
            state = ({"life_cycle_state": "RUNNING"} if outcome is None else
                     {"life_cycle_state": "TERMINATED", "state_message": outcome.stderr[-2000:],
                      "result_state": "SUCCESS" if outcome.returncode == 0 else "FAILED"})
            self._json(200, {"run_id": run_id, "run_page_url": f"{FakeDatabricks.RUN_URL[:-4]}{run_id}",
                             "state": state})
        elif url.path.startswith("/api/2.0/fs/files/"):
            path = self._local("/api/2.0/fs/files")
            if path.is_file():
                self._reply(200, path.read_bytes(), "application/octet-stream")
            else:
                self._json(404, {"error_code": "NOT_FOUND", "message": f"{path} does not exist"})
        elif url.path.startswith("/api/2.0/fs/directories/"):
            path = self._local("/api/2.0/fs/directories")
            if path.is_dir():
                self._json(200, {"contents": [{"path": str(entry), "name": entry.name, "is_directory": entry.is_dir()}
                                              for entry in sorted(path.iterdir())]})
            else:
                self._json(404, {"error_code": "NOT_FOUND", "message": f"{path} does not exist"})

    def do_PUT(self) -> None:
        if self.path.startswith("/api/2.0/fs/directories/"):
            self._local("/api/2.0/fs/directories").mkdir(parents=True, exist_ok=True)
        else:
            self._local("/api/2.0/fs/files").write_bytes(self._body())
        self._json(200, {})

    def do_DELETE(self) -> None:
        if self.path.startswith("/api/2.0/fs/directories/"):
            self._local("/api/2.0/fs/directories").rmdir()
        else:
            self._local("/api/2.0/fs/files").unlink()
        self._json(200, {})

    def log_message(self, *args: object) -> None:
        pass


def test_a_serverless_step_runs_the_wheel_in_its_environment_and_reports_through_a_volume(
        landed_settings, embedded, prod_on_delta, tmp_path):
    volume = tmp_path / "volume"     # the pipes_volume, seen at the same path by the task and the Files API
    volume.mkdir()
    databricks = prod_on_delta.environment.databricks
    databricks = databricks.model_copy(update={"compute": {**databricks.compute, "tables": ServerlessSpec(serverless=True)},
                                               "pipes_volume": str(volume)})
    settings = prod_on_delta.model_copy(update={
        "environment": prod_on_delta.environment.model_copy(update={"databricks": databricks})})
    definitions = build_definitions(settings)
    FakeWorkspaceApi.submitted, FakeWorkspaceApi.outcomes = [], {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeWorkspaceApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        workspace = DatabricksWorkspace(host=f"http://127.0.0.1:{server.server_address[1]}", token="dapi-test",
                                        poll_interval_seconds=0.2)
        remote = dg.materialize([_silver_node(definitions)], partition_key=DAY, run_config=QUIET,
                                resources={**definitions.resources, "databricks": workspace}, raise_on_error=False)
    finally:
        server.shutdown()

    (outcome,) = FakeWorkspaceApi.outcomes.values()
    assert remote.success, outcome.stderr[-3000:]
    (submitted,) = FakeWorkspaceApi.submitted
    (task,) = submitted.pop("tasks")
    parameters = task["python_wheel_task"].pop("parameters")
    assert submitted == {"environments": [{"environment_key": "tables", "spec": {
        "environment_version": "2", "dependencies": ["/Volumes/mlops_prod/platform/artifacts/test.whl"]}}]}
    assert task == {"task_key": "flights_silver_flights", "environment_key": "tables",
                    "python_wheel_task": {"package_name": "mlops_platform", "entry_point": "mlops-remote"}}
    assert parameters[:10] == ["flights/silver/flights", "flights/silver/flights_quarantine", "--partition", DAY, "--env", "prod",
                               "--config-dir", databricks.config_dir, "--data-dir", str(landed_settings.data_dir)]
    assert parameters[10::2] == ["--dagster-pipes-context", "--dagster-pipes-messages"]
    # Pipes' exchange files were on the volume, and are gone.
    assert list((volume / "tmp").iterdir()) == []

    materializations = _materializations(remote)
    run_id = str(FakeDatabricks.RUN_ID + 1)
    local = _materializations(embedded)
    tables = {SILVER: "mlops_prod.flights_silver.flights", QUARANTINE: "mlops_prod.flights_silver.flights_quarantine"}
    for key in (SILVER, QUARANTINE):
        metadata = materializations[key.to_user_string()]
        assert metadata.pop("Databricks Job Run ID").value == run_id
        assert metadata.pop("Databricks Job Run URL").value.endswith(f"/run/{run_id}")
        assert metadata.pop("dagster/table_name").value == tables[key]
        local[key.to_user_string()].pop("dagster/table_name")
        assert _comparable(metadata) == _comparable(local[key.to_user_string()])
