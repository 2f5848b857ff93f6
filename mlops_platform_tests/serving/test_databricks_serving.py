"""The Databricks serving target against a fake workspace client: the exact databricks-sdk calls and payloads."""

import datetime as dt
from unittest.mock import MagicMock, patch

import dagster as dg
import pytest
from databricks.sdk.errors import NotFound
from databricks.sdk.service.serving import (
    AutoCaptureConfigInput,
    EndpointCoreConfigInput,
    EndpointCoreConfigOutput,
    Route,
    ServedEntityInput,
    ServedEntityOutput,
    ServingEndpointDetailed,
    TrafficConfig,
)

from mlops_platform.defs import build_definitions
from mlops_platform.defs.serving.assets import serving_assets
from mlops_platform.defs.stages import endpoint_key
from mlops_platform.resources.databricks import DatabricksWorkspace
from mlops_platform.resources.serving import (
    DatabricksServing,
    EndpointDeployment,
    LocalServing,
    ResolvedModel,
)
from mlops_platform.settings import load_settings

pytestmark = pytest.mark.timeout(120)

HOST = "https://adb-123.azuredatabricks.net"
TOKEN = "dapi-test-token"
TIMEOUT = dt.timedelta(minutes=30)


CLIENT = "mlops_platform.resources.databricks.WorkspaceClient"


def target() -> DatabricksServing:
    return DatabricksServing(serving_dir="/unused", catalog="mlops_dev",
                             workspace=DatabricksWorkspace(host=HOST + "/", token=TOKEN))


def deployment(challenger: bool = True) -> EndpointDeployment:
    models = [ResolvedModel("champion", "mlops_dev.models.flights_delay", "7", 90 if challenger else 100)]
    if challenger:
        models.append(ResolvedModel("challenger", "mlops_dev.models.flights_delay", "8", 10))
    return EndpointDeployment(name="flights-delay", models=tuple(models), keys=("carrier",), request_fields=(),
                              feature_columns=("carrier",), fallback={}, online_store_path="/unused.arrow",
                              workload_size="Small", scale_to_zero=True)


def expected_entities() -> list[ServedEntityInput]:
    return [
        ServedEntityInput(name="champion", entity_name="mlops_dev.models.flights_delay", entity_version="7",
                          workload_size="Small", scale_to_zero_enabled=True),
        ServedEntityInput(name="challenger", entity_name="mlops_dev.models.flights_delay", entity_version="8",
                          workload_size="Small", scale_to_zero_enabled=True),
    ]


EXPECTED_TRAFFIC = TrafficConfig(routes=[Route(served_model_name="champion", traffic_percentage=90),
                                         Route(served_model_name="challenger", traffic_percentage=10)])
EXPECTED_CAPTURE = AutoCaptureConfigInput(catalog_name="mlops_dev", schema_name="monitoring",
                                          table_name_prefix="flights_delay", enabled=True)


def existing(versions: tuple[str, ...], percents: tuple[int, ...]) -> ServingEndpointDetailed:
    names = ["champion", "challenger"][: len(versions)]
    return ServingEndpointDetailed(name="flights-delay", config=EndpointCoreConfigOutput(
        served_entities=[ServedEntityOutput(name=n, entity_name="mlops_dev.models.flights_delay", entity_version=v)
                         for n, v in zip(names, versions, strict=True)],
        traffic_config=TrafficConfig(routes=[Route(served_model_name=n, traffic_percentage=p)
                                             for n, p in zip(names, percents, strict=True)]),
    ))


def test_a_new_endpoint_is_created_with_entities_routes_and_inference_table() -> None:
    workspace = MagicMock()
    workspace.serving_endpoints.get.side_effect = NotFound("endpoint flights-delay does not exist")
    with patch(CLIENT, return_value=workspace) as client_class:
        outcome = target().deploy(deployment(), tracking_uri="databricks-uc")

    client_class.assert_called_once_with(host=HOST + "/", token=TOKEN)
    workspace.serving_endpoints.get.assert_called_once_with("flights-delay")
    workspace.serving_endpoints.create.assert_called_once_with(
        name="flights-delay",
        config=EndpointCoreConfigInput(name="flights-delay", served_entities=expected_entities(),
                                       traffic_config=EXPECTED_TRAFFIC, auto_capture_config=EXPECTED_CAPTURE),
    )
    workspace.serving_endpoints.create.return_value.result.assert_called_once_with(timeout=TIMEOUT)
    workspace.serving_endpoints.update_config.assert_not_called()
    # What goes over the wire, as the REST API documents it.
    (config,) = [call.kwargs["config"] for call in workspace.serving_endpoints.create.call_args_list]
    assert config.as_dict() == {
        "name": "flights-delay",
        "served_entities": [
            {"name": "champion", "entity_name": "mlops_dev.models.flights_delay", "entity_version": "7",
             "workload_size": "Small", "scale_to_zero_enabled": True},
            {"name": "challenger", "entity_name": "mlops_dev.models.flights_delay", "entity_version": "8",
             "workload_size": "Small", "scale_to_zero_enabled": True},
        ],
        "traffic_config": {"routes": [{"served_model_name": "champion", "traffic_percentage": 90},
                                      {"served_model_name": "challenger", "traffic_percentage": 10}]},
        "auto_capture_config": {"catalog_name": "mlops_dev", "schema_name": "monitoring",
                                "table_name_prefix": "flights_delay", "enabled": True},
    }
    assert outcome.changed and outcome.detail["action"] == "created"
    assert outcome.url == f"{HOST}/serving-endpoints/flights-delay/invocations"
    assert outcome.served_versions == {"champion": "7", "challenger": "8"}
    assert outcome.traffic == {"champion": 90, "challenger": 10}


def test_an_existing_endpoint_gets_its_config_updated() -> None:
    workspace = MagicMock()
    workspace.serving_endpoints.get.return_value = existing(("6",), (100,))
    with patch(CLIENT, return_value=workspace):
        outcome = target().deploy(deployment(), tracking_uri="databricks-uc")

    workspace.serving_endpoints.update_config.assert_called_once_with(
        name="flights-delay", served_entities=expected_entities(), traffic_config=EXPECTED_TRAFFIC,
        auto_capture_config=EXPECTED_CAPTURE,
    )
    workspace.serving_endpoints.update_config.return_value.result.assert_called_once_with(timeout=TIMEOUT)
    workspace.serving_endpoints.create.assert_not_called()
    assert outcome.changed and outcome.detail["action"] == "updated"


def test_an_endpoint_already_serving_the_versions_is_left_alone() -> None:
    workspace = MagicMock()
    workspace.serving_endpoints.get.return_value = existing(("7", "8"), (90, 10))
    with patch(CLIENT, return_value=workspace):
        outcome = target().deploy(deployment(), tracking_uri="databricks-uc")

    workspace.serving_endpoints.update_config.assert_not_called()
    workspace.serving_endpoints.create.assert_not_called()
    assert not outcome.changed and outcome.detail["action"] == "unchanged"


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
    # The resource cannot be initialised: the run fails before any step, naming the variable.
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    assert failures and "DATABRICKS_HOST" in str(failures[0].event_specific_data)


def test_the_environment_picks_the_target_and_building_the_graph_needs_no_workspace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    monkeypatch.delenv("DATABRICKS_TOKEN", raising=False)
    with patch(CLIENT) as client_class:
        dev = build_definitions(load_settings("dev"))
        local = build_definitions(load_settings("local"))
    client_class.assert_not_called()
    assert isinstance(dev.resources["serving"], DatabricksServing)
    assert dev.resources["serving"].catalog == "mlops_dev"
    assert isinstance(local.resources["serving"], LocalServing)


def test_the_staging_asset_deploys_the_aliases_to_databricks() -> None:
    usecase = load_settings("dev").usecases["flights"]
    registry = MagicMock()
    registry.tracking_uri = "databricks-uc"
    registry.client.return_value.get_registered_model.return_value.aliases = {"champion": 7, "challenger": 8}
    workspace = MagicMock()
    workspace.serving_endpoints.get.side_effect = NotFound("no such endpoint")
    staging = endpoint_key("flights", "delay", "staging")
    with patch(CLIENT, return_value=workspace):
        result = dg.materialize([d for d in serving_assets(usecase) if staging in d.keys],
                                resources={"mlflow": registry, "serving": target()})

    assert result.success
    registry.client.return_value.get_registered_model.assert_called_once_with("mlops_dev.models.flights_delay")
    (call,) = workspace.serving_endpoints.create.call_args_list
    assert call.kwargs["name"] == "flights-delay-staging"
    assert call.kwargs["config"].served_entities == expected_entities()
    assert call.kwargs["config"].traffic_config == EXPECTED_TRAFFIC
    assert call.kwargs["config"].auto_capture_config.table_name_prefix == "flights_delay_staging"
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["endpoint_url"].value == f"{HOST}/serving-endpoints/flights-delay-staging/invocations"
    assert metadata["served_versions"].value == {"champion": "7", "challenger": "8"}
