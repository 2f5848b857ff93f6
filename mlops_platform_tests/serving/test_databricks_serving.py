"""The Databricks serving target against a fake workspace over HTTP: the exact REST requests databricks-sdk sends
for a create, an update, a traffic-only update, an AI Gateway change, a no-op redeploy and the failure paths."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path
from unittest.mock import MagicMock, patch

import dagster as dg
import pytest

from mlops_platform.defs import build_definitions
from mlops_platform.defs.serving.assets import serving_assets
from mlops_platform.defs.stages import endpoint_key
from mlops_platform.resources.databricks import DatabricksWorkspace
from mlops_platform.resources.databricks_serving import (
    DatabricksServing,
    EndpointOptions,
    ProfilingOptions,
    RateLimitOptions,
)
from mlops_platform.resources.serving import EndpointDeployment, LocalServing, ResolvedModel, ServingError
from mlops_platform.settings import load_settings
from mlops_platform_tests.remote.fake_workspace import SERVING, FakeWorkspace, fake_workspace

pytestmark = pytest.mark.timeout(120)

TOKEN = "dapi-test-token"
MODEL = "mlops_dev.models.flights_delay"
# Imported by DatabricksWorkspace.workspace_client when called, so the SDK's own name is patched.
CLIENT = "databricks.sdk.WorkspaceClient"


def target(host: str, **options: object) -> DatabricksServing:
    return DatabricksServing(serving_dir="/unused", catalog="mlops_dev", inference_catalog="mlops_dev",
                             inference_schema="monitoring", workspace=DatabricksWorkspace(host=host, token=TOKEN),
                             **options)


def deployment(versions: tuple[str, ...] = ("7", "8"), percents: tuple[int, ...] = (90, 10),
               workload_size: str = "Small") -> EndpointDeployment:
    models = tuple(ResolvedModel(alias, MODEL, version, percent)
                   for alias, version, percent in zip(("champion", "challenger"), versions, percents, strict=False))
    return EndpointDeployment(name="flights-delay", models=models, keys=("carrier",), request_fields=(),
                              feature_columns=("carrier",), fallback={}, online_store_path="/unused.arrow",
                              workload_size=workload_size, scale_to_zero=True)


def entities(versions: tuple[str, ...] = ("7", "8"), workload_size: str = "Small") -> list[dict]:
    return [{"name": alias, "entity_name": MODEL, "entity_version": version, "workload_size": workload_size,
             "scale_to_zero_enabled": True} for alias, version in zip(("champion", "challenger"), versions,
                                                                      strict=False)]


def routes(percents: tuple[int, ...] = (90, 10)) -> dict:
    return {"routes": [{"served_entity_name": alias, "traffic_percentage": percent}
                       for alias, percent in zip(("champion", "challenger"), percents, strict=False)]}


INFERENCE_TABLE = {"catalog_name": "mlops_dev", "schema_name": "monitoring", "table_name_prefix": "flights_delay",
                   "enabled": True}


def existing(workspace: FakeWorkspace, versions: tuple[str, ...] = ("7", "8"), percents: tuple[int, ...] = (90, 10),
             ai_gateway: dict | None = None) -> None:
    workspace.add_endpoint("flights-delay", {
        "name": "flights-delay", "config": {"served_entities": entities(versions), "traffic_config": routes(percents)},
        "ai_gateway": ai_gateway if ai_gateway is not None else {"inference_table_config": INFERENCE_TABLE}})
    workspace.requests.clear()


def bodies(workspace: FakeWorkspace) -> list[str]:
    return [str(r.body) for r in workspace.requests]


def test_a_new_endpoint_is_created_with_entities_routes_and_an_ai_gateway_inference_table() -> None:
    with fake_workspace() as workspace:
        serving = target(workspace.host, endpoints={"flights-delay": EndpointOptions(
            table_prefix="flights_delay", rate_limits=[RateLimitOptions(calls=600), RateLimitOptions(
                calls=60, key="user")])})
        outcome = serving.deploy(deployment(), tracking_uri="databricks-uc")

    assert [(r.method, r.path) for r in workspace.requests] == [
        ("GET", f"{SERVING}/flights-delay"), ("POST", SERVING), ("GET", f"{SERVING}/flights-delay")]
    assert workspace.requests[1].body == {
        "name": "flights-delay",
        "config": {"name": "flights-delay", "served_entities": entities(), "traffic_config": routes()},
        "ai_gateway": {"inference_table_config": INFERENCE_TABLE,
                       "rate_limits": [{"calls": 600, "key": "endpoint", "renewal_period": "minute"},
                                       {"calls": 60, "key": "user", "renewal_period": "minute"}]},
        "route_optimized": False,
    }
    assert "auto_capture_config" not in str(bodies(workspace))
    assert outcome.changed and outcome.detail["action"] == "created" and outcome.detail["writes"] == ["create"]
    assert outcome.detail["inference_table"] == "mlops_dev.monitoring.flights_delay_payload"
    assert outcome.url == f"{workspace.host}/serving-endpoints/flights-delay/invocations"
    assert outcome.served_versions == {"champion": "7", "challenger": "8"}
    assert outcome.traffic == {"champion": 90, "challenger": 10}


def test_a_new_version_updates_entities_and_routes_in_place() -> None:
    with fake_workspace(updating_polls=1) as workspace:
        existing(workspace, versions=("6",), percents=(100,))
        outcome = target(workspace.host).deploy(deployment(), tracking_uri="databricks-uc")

    writes = workspace.writes()
    assert [(r.method, r.path) for r in writes] == [("PUT", f"{SERVING}/flights-delay/config")]
    assert writes[0].body == {"served_entities": entities(), "traffic_config": routes()}
    # The update was waited for until it settled.
    assert workspace.paths("GET")[-2:] == [f"GET {SERVING}/flights-delay"] * 2
    assert outcome.changed and outcome.detail["writes"] == ["update_config"]


def test_a_traffic_change_sends_the_routes_alone_and_recreates_nothing() -> None:
    with fake_workspace() as workspace:
        existing(workspace, percents=(50, 50))
        outcome = target(workspace.host).deploy(deployment(), tracking_uri="databricks-uc")

    (write,) = workspace.writes()
    assert (write.method, write.path, write.body) == ("PUT", f"{SERVING}/flights-delay/config",
                                                      {"traffic_config": routes()})
    assert outcome.detail["writes"] == ["update_traffic"]
    assert workspace.endpoints["flights-delay"]["config"]["served_entities"][0]["entity_version"] == "7"


def test_a_no_op_redeploy_only_reads() -> None:
    with fake_workspace() as workspace:
        existing(workspace)
        outcome = target(workspace.host).deploy(deployment(), tracking_uri="databricks-uc")

    assert workspace.writes() == []
    assert workspace.paths() == [f"GET {SERVING}/flights-delay"]
    assert not outcome.changed and outcome.detail["action"] == "unchanged"


def test_a_compute_size_change_is_an_entity_change() -> None:
    with fake_workspace() as workspace:
        existing(workspace)
        target(workspace.host).deploy(deployment(workload_size="Medium"), tracking_uri="databricks-uc")

    (write,) = workspace.writes()
    assert write.body["served_entities"] == entities(workload_size="Medium")


def test_new_rate_limits_go_through_put_ai_gateway_keeping_what_the_platform_does_not_manage() -> None:
    guardrails = {"input": {"safety": True}}
    with fake_workspace() as workspace:
        existing(workspace, ai_gateway={"inference_table_config": INFERENCE_TABLE, "guardrails": guardrails})
        serving = target(workspace.host, endpoints={"flights-delay": EndpointOptions(
            table_prefix="flights_delay", rate_limits=[RateLimitOptions(calls=100, key="service_principal",
                                                                        principal="app-1")])})
        outcome = serving.deploy(deployment(), tracking_uri="databricks-uc")

    (write,) = workspace.writes()
    assert (write.method, write.path) == ("PUT", f"{SERVING}/flights-delay/ai-gateway")
    assert write.body == {"inference_table_config": INFERENCE_TABLE, "guardrails": guardrails, "rate_limits": [
        {"calls": 100, "key": "service_principal", "principal": "app-1", "renewal_period": "minute"}]}
    assert outcome.detail["writes"] == ["put_ai_gateway"]


def test_an_endpoint_without_an_inference_table_gets_one_without_being_recreated() -> None:
    with fake_workspace() as workspace:
        existing(workspace, ai_gateway={})
        target(workspace.host).deploy(deployment(), tracking_uri="databricks-uc")

    (write,) = workspace.writes()
    assert write.path.endswith("/ai-gateway") and write.body == {"inference_table_config": INFERENCE_TABLE,
                                                                 "rate_limits": []}


def test_route_optimized_is_set_at_creation_and_its_own_url_is_used() -> None:
    options = {"flights-delay": EndpointOptions(table_prefix="flights_delay", route_optimized=True)}
    with fake_workspace() as workspace:
        serving = target(workspace.host, endpoints=options)
        outcome = serving.deploy(deployment(), tracking_uri="databricks-uc")
        url = serving.served_model_url("flights-delay", "champion")

    assert workspace.requests[1].body["route_optimized"] is True
    endpoint_id = workspace.endpoints["flights-delay"]["id"]
    assert outcome.url == f"{workspace.host}/ro-{endpoint_id}/serving-endpoints/flights-delay/invocations"
    assert url == f"{workspace.host}/ro-{endpoint_id}/serving-endpoints/flights-delay/served-models/champion/invocations"


def test_route_optimized_on_an_existing_endpoint_is_reported_not_forced() -> None:
    options = {"flights-delay": EndpointOptions(table_prefix="flights_delay", route_optimized=True)}
    with fake_workspace() as workspace:
        existing(workspace)
        outcome = target(workspace.host, endpoints=options).deploy(deployment(), tracking_uri="databricks-uc")

    assert workspace.writes() == []
    assert "can only be set when an endpoint is created" in outcome.detail["notes"][0]


@pytest.mark.parametrize("fresh", [True, False], ids=["create", "update"])
def test_a_failed_update_fails_the_deploy_naming_the_endpoint(fresh: bool) -> None:
    with fake_workspace() as workspace:
        if not fresh:
            existing(workspace, versions=("6",), percents=(100,))
        workspace.fail_updates = True
        with pytest.raises(ServingError, match=r"endpoint 'flights-delay': the configuration update failed.*"
                                               r"UPDATE_FAILED"):
            target(workspace.host).deploy(deployment(), tracking_uri="databricks-uc")


def test_an_endpoint_stuck_updating_times_out() -> None:
    with fake_workspace(stuck=True) as workspace, pytest.raises(
            ServingError, match=r"'flights-delay' was still updating after 0.03 minutes"):
        target(workspace.host, timeout_minutes=0.03).deploy(deployment(), tracking_uri="databricks-uc")


def test_an_endpoint_that_is_not_ready_fails_with_each_entitys_state() -> None:
    with fake_workspace(not_ready=True) as workspace:
        with pytest.raises(ServingError, match=r"'flights-delay' is not ready.*NOT_READY.*champion.*"
                                               r"DEPLOYMENT_FAILED: container build failed"):
            target(workspace.host).deploy(deployment(), tracking_uri="databricks-uc")
        # A redeploy of the same versions writes nothing, and still refuses to call the endpoint healthy.
        workspace.requests.clear()
        with pytest.raises(ServingError, match="is not ready"):
            target(workspace.host).deploy(deployment(), tracking_uri="databricks-uc")
        assert workspace.writes() == []


def test_a_refused_request_fails_with_the_workspaces_message() -> None:
    with fake_workspace() as workspace:
        existing(workspace, versions=("6",), percents=(100,))
        workspace.refuse[("PUT", f"{SERVING}/flights-delay/config")] = (
            403, "PERMISSION_DENIED", "User does not have CAN_MANAGE on endpoint flights-delay")
        with pytest.raises(ServingError, match=r"'flights-delay': the workspace refused a request: PermissionDenied: "
                                               r"User does not have CAN_MANAGE"):
            target(workspace.host).deploy(deployment(), tracking_uri="databricks-uc")


# --- data profiling of the inference table, through the data-quality API -------------------------------------------

PROFILING = ProfilingOptions(output_schema="monitoring", granularities=["1 day", "1 hour"],
                             slicing_exprs=["served_entity_id"])


def test_the_inference_table_gets_a_data_profiling_monitor_once() -> None:
    with fake_workspace() as workspace:
        table_id = workspace.add_table("mlops_dev.monitoring.flights_delay_payload",
                                       {"request_time": True, "served_entity_id": True})
        schema_id = workspace.add_schema("mlops_dev.monitoring")
        serving = target(workspace.host, profiling=PROFILING)
        first = serving.deploy(deployment(), tracking_uri="databricks-uc")
        created = [r for r in workspace.writes() if r.path.startswith("/api/data-quality")]
        workspace.requests.clear()
        second = serving.deploy(deployment(), tracking_uri="databricks-uc")

    (create,) = created
    assert (create.method, create.path) == ("POST", "/api/data-quality/v1/monitors")
    assert create.body == {"object_type": "table", "object_id": table_id, "data_profiling_config": {
        "output_schema_id": schema_id,
        "time_series": {"timestamp_column": "request_time",
                        "granularities": ["AGGREGATION_GRANULARITY_1_DAY", "AGGREGATION_GRANULARITY_1_HOUR"]},
        "slicing_exprs": ["served_entity_id"]}}
    assert first.detail["data_profiling"] == {"action": "created",
                                              "table": "mlops_dev.monitoring.flights_delay_payload"}
    assert workspace.writes() == [] and second.detail["data_profiling"]["action"] == "unchanged"
    assert "quality-monitors" not in str(workspace.paths())


def test_a_changed_profile_is_patched_field_by_field() -> None:
    with fake_workspace() as workspace:
        workspace.add_table("mlops_dev.monitoring.flights_delay_payload", {"request_time": True})
        workspace.add_schema("mlops_dev.monitoring")
        target(workspace.host, profiling=PROFILING).deploy(deployment(), tracking_uri="databricks-uc")
        workspace.requests.clear()
        wider = PROFILING.model_copy(update={"granularities": ["1 week"]})
        outcome = target(workspace.host, profiling=wider).deploy(deployment(), tracking_uri="databricks-uc")

    (patch_request,) = workspace.writes()
    assert patch_request.method == "PATCH"
    assert patch_request.query == {"update_mask": "data_profiling_config.time_series"}
    assert outcome.detail["data_profiling"]["changed_fields"] == ["time_series"]


def test_a_monitor_waits_for_its_table() -> None:
    with fake_workspace() as workspace:
        outcome = target(workspace.host, profiling=PROFILING).deploy(deployment(), tracking_uri="databricks-uc")
    assert outcome.detail["data_profiling"]["action"] == "waiting_for_table"
    assert [r.path for r in workspace.writes()] == [SERVING]


# --- wiring: the environment's target, the staging asset and its smoke test -----------------------------------------

def test_missing_credentials_fail_the_deploy_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    settings = load_settings("dev")
    usecase = settings.usecases["flights"]
    staging = endpoint_key("flights", "delay", "staging")
    registry = MagicMock()
    registry.client.return_value.get_registered_model.return_value.aliases = {"champion": 7}
    with patch(CLIENT) as client_class:
        result = dg.materialize([d for d in serving_assets(usecase) if staging in d.keys], raise_on_error=False,
                                resources={"mlflow": registry, "serving": build_definitions(settings).resources["serving"]})
    assert not result.success
    client_class.assert_not_called()
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    assert failures and "DATABRICKS_HOST" in str(failures[0].event_specific_data)


def test_the_environment_picks_the_target_with_its_serving_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    monkeypatch.delenv("DATABRICKS_TOKEN", raising=False)
    with patch(CLIENT) as client_class:
        staging = build_definitions(load_settings("staging")).resources["serving"]
        local = build_definitions(load_settings("local")).resources["serving"]
    client_class.assert_not_called()
    assert isinstance(local, LocalServing)
    assert isinstance(staging, DatabricksServing)
    assert (staging.catalog, staging.inference_catalog, staging.inference_schema) == (
        "mlops_staging", "mlops_staging", "monitoring")
    assert staging.inference_table("flights-delay-staging") == "mlops_staging.monitoring.flights_delay_staging_payload"
    assert staging.profiling is not None and staging.profiling.granularities == ["1 day"]
    assert staging.online_store is not None and staging.online_store.name == "mlops-staging-features"


def _staging_run(workspace: FakeWorkspace) -> tuple[dg.ExecuteInProcessResult, MagicMock]:
    usecase = load_settings("dev").usecases["flights"]
    registry = MagicMock()
    registry.tracking_uri = "databricks-uc"
    registry.client.return_value.get_registered_model.return_value.aliases = {"champion": 7, "challenger": 8}
    staging = endpoint_key("flights", "delay", "staging")
    selected = [d for d in serving_assets(usecase)
                if staging in d.keys or any(check.asset_key == staging for check in d.check_keys)]
    result = dg.materialize(selected, resources={"mlflow": registry, "serving": target(workspace.host)},
                            raise_on_error=False)
    return result, registry


def test_the_staging_asset_deploys_and_smoke_tests_each_served_entity_with_keys_only_payloads() -> None:
    usecase = load_settings("dev").usecases["flights"]
    spec = usecase.serving["delay"]
    with fake_workspace() as workspace:
        result, registry = _staging_run(workspace)

    assert result.success
    registry.client.return_value.get_registered_model.assert_called_once_with(MODEL)
    (create,) = [r for r in workspace.writes() if r.path == SERVING]
    assert create.body["name"] == "flights-delay-staging"
    assert create.body["config"]["served_entities"] == entities()
    assert create.body["ai_gateway"]["inference_table_config"]["table_name_prefix"] == "flights_delay_staging"
    # The smoke test queried each served entity by itself, with the keys and request fields only.
    invocations = [r for r in workspace.requests if r.path.endswith("/invocations")]
    assert [r.path for r in invocations] == [
        f"/serving-endpoints/flights-delay-staging/served-models/{alias}/invocations"
        for alias in ("champion", "champion", "challenger", "challenger")]
    carried = [*spec.online_store.keys, *usecase.training_set.request_fields]
    for request in invocations:
        assert request.authorization == f"Bearer {TOKEN}"
        assert all(list(record) == list(dict.fromkeys(carried)) for record in request.body["dataframe_records"])
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.description
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["endpoint_url"].value == f"{workspace.host}/serving-endpoints/flights-delay-staging/invocations"
    assert metadata["served_versions"].value == {"champion": "7", "challenger": "8"}


def test_the_smoke_test_fails_when_another_entity_answers() -> None:
    with fake_workspace(answer_as="challenger") as workspace:
        result, _ = _staging_run(workspace)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert "champion single: answered by challenger vNone, deployed champion v7" in check.description


# Legacy inference tables (auto capture), Lakehouse Monitoring's quality_monitors, legacy online tables and endpoint
# rate limits outside AI Gateway: each deprecated or gone (README "Running on Databricks" has the dates).
DEPRECATED_NAMES = {"auto_capture_config", "AutoCaptureConfigInput", "quality_monitors", "QualityMonitorsAPI",
                    "online_tables", "OnlineTablesAPI", "create_online_table"}
DEPRECATED_PATHS = ("/quality-monitors", "/online-tables", "/rate-limits")


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def deprecated_calls(root: Path) -> list[tuple[str, str]]:
    """Every use in code (names, attributes, keywords, REST paths; not prose) of a deprecated Databricks API."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        prose = _docstrings(tree)
        for node in ast.walk(tree):
            words = []
            if isinstance(node, ast.Attribute):
                words.append(node.attr)
                if node.attr == "put" and isinstance(node.value, ast.Attribute) and \
                        node.value.attr == "serving_endpoints":
                    words.append("serving_endpoints.put")
            elif isinstance(node, ast.Name | ast.alias | ast.keyword):
                words.append(getattr(node, "id", None) or getattr(node, "name", None) or getattr(node, "arg", None))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
                words += [p for p in DEPRECATED_PATHS if p in node.value]
            found += [(str(path.relative_to(root)), w) for w in words
                      if w in DEPRECATED_NAMES or w in DEPRECATED_PATHS or w == "serving_endpoints.put"]
    return found


def test_no_deprecated_databricks_serving_or_monitoring_api_is_called_anywhere(tmp_path: Path) -> None:
    (tmp_path / "legacy.py").write_text(
        '"""Not auto_capture_config: this docstring is prose."""\n'
        "client.serving_endpoints.update_config(name, auto_capture_config=capture)\n"
        "client.serving_endpoints.put(name, rate_limits=limits)\n"
        "client.api_client.do('POST', '/api/2.1/quality-monitors')\n")
    assert deprecated_calls(tmp_path) == [("legacy.py", "auto_capture_config"),
                                          ("legacy.py", "serving_endpoints.put"), ("legacy.py", "/quality-monitors")]
    root = Path(__file__).resolve().parents[2]
    assert deprecated_calls(root / "mlops_platform") == []
    assert deprecated_calls(root / "benchmarks") == []


# --- configuration: a wrong value names the file and the field ------------------------------------------------------

@pytest.mark.parametrize(("edit", "expected"), [
    (("config/environments/staging.yaml", "granularities: [\"1 day\"]", "granularities: [\"1 fortnight\"]"),
     r"staging.yaml.*databricks.serving.data_profiling.granularities.0"),
    (("config/environments/staging.yaml", "publish_mode: TRIGGERED", "publish_mode: SNAPSHOT"),
     r"staging.yaml.*databricks.serving.online_store.publish_mode"),
    (("config/usecases/flights.yaml", "databricks: {workload_size: Small, scale_to_zero: true}",
      "databricks: {rate_limits: [{calls: 10, principal: ops}]}"),
     r"flights.yaml.*serving.delay.databricks.rate_limits.0.*principal 'ops' needs key user"),
])
def test_a_wrong_serving_setting_names_the_file_and_the_field(tmp_path: Path, edit: tuple[str, str, str],
                                                              expected: str) -> None:
    from mlops_platform.settings import PROJECT_ROOT, ConfigError

    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    relative, old, new = edit
    path = tmp_path / relative
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(ConfigError, match=re.compile(expected, re.DOTALL)):
        load_settings("staging", config_dir=config)
