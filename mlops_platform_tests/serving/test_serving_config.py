"""The ``serving:`` section of a use case, and how aliases become served versions: no server, no registry."""

import shutil
from pathlib import Path
from unittest.mock import MagicMock

import dagster as dg
import pytest
import yaml

from mlops_platform.defs.serving.assets import resolve_aliases
from mlops_platform.serving.routing import request_id_for, route
from mlops_platform.settings import PROJECT_ROOT, ConfigError, load_settings

pytestmark = pytest.mark.timeout(60)


def config_with(tmp_path: Path, change) -> Path:
    """A copy of the project's config/ whose flights use case went through ``change``."""
    shutil.copytree(PROJECT_ROOT / "config", tmp_path / "config")
    path = tmp_path / "config" / "usecases" / "flights.yaml"
    raw = yaml.safe_load(path.read_text())
    change(raw["serving"]["delay"])
    path.write_text(yaml.safe_dump(raw))
    return tmp_path / "config"


def test_the_flights_endpoint_is_configured_for_both_stages() -> None:
    endpoint = load_settings("local").usecases["flights"].serving["delay"]
    assert endpoint.model == "delay"
    assert [(m.alias, m.traffic_percent) for m in endpoint.served_models] == [("champion", 90), ("challenger", 10)]
    assert (endpoint.stages.staging.name, endpoint.stages.production.name) == ("flights-delay-staging",
                                                                               "flights-delay")
    assert endpoint.online_store.keys == ["carrier", "origin", "dest", "tailnum"]
    assert len(endpoint.smoke.batch) >= 2


@pytest.mark.parametrize(("change", "field", "message"), [
    (lambda e: e["served_models"][1].update(traffic_percent=20), "serving.delay.served_models",
     "must sum to 100, got 110"),
    (lambda e: e.update(served_models=[{"alias": "challenger", "traffic_percent": 100}]), "serving.delay.served_models",
     "must include the 'champion' alias"),
    (lambda e: e["online_store"].update(keys=["carrier", "origin", "dest"]), "serving.delay.online_store.keys",
     "feature table 'plane_attributes' is looked up by ['tailnum']"),
    (lambda e: e["online_store"].update(tables=["carrier_delays"]), "serving.delay.online_store.tables",
     "are neither request fields nor in online_store.tables"),
    (lambda e: e["smoke"]["single"].pop("hour"), "serving.delay.smoke.single", "lacks ['hour']"),
    (lambda e: e["fallback"].update(distance=1.0), "serving.delay.fallback", "names ['distance']"),
    (lambda e: e["stages"]["production"].update(name="flights-delay-staging"), "serving.delay.stages.production.name",
     "different endpoint names"),
    (lambda e: e["databricks"].update(workload_size="Huge"), "serving.delay.databricks.workload_size",
     "Input should be 'Small', 'Medium' or 'Large'"),
])
def test_a_wrong_serving_section_names_the_file_and_the_field(tmp_path: Path, change, field: str,
                                                              message: str) -> None:
    config_dir = config_with(tmp_path, change)
    with pytest.raises(ConfigError) as refused:
        load_settings("local", config_dir)
    text = str(refused.value)
    assert str(config_dir / "usecases" / "flights.yaml") in text
    assert f"field '{field}': " in text and message in text
    assert message in text


def test_a_missing_challenger_gives_its_share_to_the_champion() -> None:
    spec = load_settings("local").usecases["flights"].serving["delay"]
    client = MagicMock()
    client.get_registered_model.return_value.aliases = {"champion": 4}

    served, missing = resolve_aliases(client, "flights_delay", spec)

    client.get_registered_model.assert_called_once_with("flights_delay")
    assert [(m.alias, m.version, m.traffic_percent) for m in served] == [("champion", "4", 100)]
    assert missing == ["challenger"]
    client.get_registered_model.return_value.aliases = {"champion": 4, "challenger": 5}
    served, missing = resolve_aliases(client, "flights_delay", spec)
    assert [(m.alias, m.version, m.traffic_percent) for m in served] == [("champion", "4", 90),
                                                                         ("challenger", "5", 10)]
    assert missing == []


def test_no_champion_means_nothing_to_deploy() -> None:
    spec = load_settings("local").usecases["flights"].serving["delay"]
    client = MagicMock()
    client.get_registered_model.return_value.aliases = {"challenger": 5}
    with pytest.raises(dg.Failure, match="has no 'champion' version"):
        resolve_aliases(client, "flights_delay", spec)


def test_request_ids_route_like_the_server_does() -> None:
    traffic = [("champion", 90), ("challenger", 10)]
    routed = [route(f"id-{i}", traffic) for i in range(2000)]
    assert 0.87 < routed.count("champion") / len(routed) < 0.93
    assert route("id-7", traffic) == route("id-7", traffic)
    fresh = {request_id_for("challenger", traffic, prefix="smoke-") for _ in range(20)}
    assert len(fresh) == 20 and {route(i, traffic) for i in fresh} == {"challenger"}
    with pytest.raises(ValueError, match="does not sum to 100"):
        route("id-1", [("champion", 90)])
