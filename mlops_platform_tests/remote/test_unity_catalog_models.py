"""Models of a Databricks environment live in the Unity Catalog registry, under three-level names.

The orchestrator moves the ``champion`` and ``challenger`` aliases itself, so those calls are tested end to end: the
real MLflow client, configured by the environment's resource, talks HTTP to a fake workspace that answers as the
Unity Catalog model registry REST API does and records every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qsl, urlsplit

import dagster as dg
import pytest

from mlops_platform.defs import build_definitions
from mlops_platform.defs.registry.assets import registry_assets
from mlops_platform.defs.stages import champion_key
from mlops_platform.resources.alerts import AlertSinks
from mlops_platform.resources.databricks import DatabricksWorkspace
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.warehouse import DeltaWarehouse
from mlops_platform.settings import PROJECT_ROOT, ConfigError, load_settings

pytestmark = pytest.mark.timeout(120)

TOKEN = "dapi-orchestrator"
MODEL = "mlops_prod.models.flights_delay"
UC = "/api/2.0/mlflow/unity-catalog"


class UnityCatalogRegistry(BaseHTTPRequestHandler):
    """One registered model with a champion (7) and a challenger (8); every request is recorded."""

    requests: ClassVar[list[tuple[str, str, dict]]] = []
    tokens: ClassVar[set[str]] = set()
    models: ClassVar[dict[str, dict]] = {}

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else dict(parse_qsl(url.query))
        self.requests.append((method, url.path.removeprefix(UC), body))
        self.tokens.add(self.headers.get("Authorization", ""))
        status, answer = self._answer(method, url.path.removeprefix(UC), body)
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _answer(self, method: str, path: str, body: dict) -> tuple[int, dict]:
        model = self.models.get(body.get("name", ""))
        if model is None:
            return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"{body.get('name')} does not exist"}
        if (method, path) == ("GET", "/registered-models/get"):
            return 200, {"registered_model": {
                "name": model["name"], "aliases": [{"alias": a, "version": v} for a, v in model["aliases"].items()],
                "tags": [{"key": k, "value": v} for k, v in model["tags"].items()]}}
        if (method, path) == ("GET", "/registered-models/alias"):
            version = model["aliases"].get(body["alias"])
            if version is None:
                return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"no alias {body['alias']}"}
            return 200, {"model_version": {"name": model["name"], "version": version,
                                           "aliases": [body["alias"]], "status": "READY"}}
        if (method, path) == ("POST", "/registered-models/alias"):
            model["aliases"][body["alias"]] = body["version"]
        elif (method, path) == ("DELETE", "/registered-models/alias"):
            model["aliases"].pop(body["alias"])
        elif (method, path) == ("POST", "/registered-models/set-tag"):
            model["tags"][body["key"]] = body["value"]
        elif (method, path) != ("POST", "/model-versions/set-tag"):
            return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{method} {path}"}
        return 200, {}

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def workspace_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    UnityCatalogRegistry.requests = []
    UnityCatalogRegistry.tokens = set()
    UnityCatalogRegistry.models = {MODEL: {"name": MODEL, "aliases": {"champion": "7", "challenger": "8"},
                                           "tags": {"champion_history": "[5]"}}}
    server = ThreadingHTTPServer(("127.0.0.1", 0), UnityCatalogRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    # The resource exports the workspace's credentials for MLflow; monkeypatch puts the environment back.
    monkeypatch.setenv("DATABRICKS_HOST", url)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    yield url
    server.shutdown()


def unity_catalog_mlflow(url: str) -> MlflowTracking:
    """The prod environment's MLflow resource, its credentials resolved to the fake workspace."""
    configured = build_definitions(load_settings("prod")).resources["mlflow"]
    return MlflowTracking(tracking_uri=configured.tracking_uri, registry_uri=configured.registry_uri,
                          experiment_root=configured.experiment_root,
                          workspace=DatabricksWorkspace(host=url, token=TOKEN))


def test_databricks_environments_register_models_in_unity_catalog_and_local_keeps_sqlite(monkeypatch):
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    prod, local = load_settings("prod"), load_settings("local")

    assert {m.registered_name for m in prod.usecases["flights"].models.values()} == {
        f"mlops_prod.models.{m.registered_name}" for m in local.usecases["flights"].models.values()}
    mlflow = build_definitions(prod).resources["mlflow"]
    assert (mlflow.tracking_uri, mlflow.registry, mlflow.artifact_root, mlflow.experiment_root) == (
        "databricks", "databricks-uc", None, "/Shared/mlops_platform/prod")
    local_mlflow = build_definitions(local).resources["mlflow"]
    assert local_mlflow.tracking_uri.startswith("sqlite:///") and local_mlflow.workspace is None


def test_unity_catalog_model_names_need_the_unity_catalog_registry(tmp_path: Path):
    config_dir = tmp_path / "config"
    (config_dir / "environments").mkdir(parents=True)
    prod = (PROJECT_ROOT / "config" / "environments" / "prod.yaml").read_text()
    (config_dir / "environments" / "prod.yaml").write_text(prod.replace("registry_uri: databricks-uc",
                                                                        "registry_uri: databricks"))
    with pytest.raises(ConfigError, match=r"(?s)prod.yaml.*field 'mlflow.registry_uri'.*needs registry_uri: databricks-uc"):
        load_settings("prod", config_dir=config_dir)


def test_alias_lookups_ask_unity_catalog_by_three_level_name(workspace_url):
    mlflow = unity_catalog_mlflow(workspace_url)

    assert mlflow.alias_version(MODEL, "champion") == "7"
    assert mlflow.alias_version("mlops_prod.models.nowhere", "champion") is None
    assert UnityCatalogRegistry.requests == [
        ("GET", "/registered-models/alias", {"name": MODEL, "alias": "champion"}),
        ("GET", "/registered-models/alias", {"name": "mlops_prod.models.nowhere", "alias": "champion"}),
    ]
    assert UnityCatalogRegistry.tokens == {f"Bearer {TOKEN}"}


def test_promotion_moves_the_unity_catalog_aliases_with_the_exact_registry_calls(workspace_url, tmp_path):
    usecase = load_settings("prod").usecases["flights"]
    model_name = next(name for name, m in usecase.models.items() if m.registered_name == MODEL)
    champion = next(d for d in registry_assets(usecase)
                    if isinstance(d, dg.AssetsDefinition) and champion_key("flights", model_name) in d.keys)
    alerts = AlertSinks(warehouse=DeltaWarehouse(root=str(tmp_path), catalog="mlops_prod"), routes={})

    result = dg.materialize([champion], resources={"mlflow": unity_catalog_mlflow(workspace_url), "alerts": alerts})

    assert result.success
    mutations = [request for request in UnityCatalogRegistry.requests if request[0] != "GET"]
    assert mutations == [
        ("POST", "/registered-models/set-tag", {"name": MODEL, "key": "champion_history", "value": "[5, 7]"}),
        ("POST", "/registered-models/alias", {"name": MODEL, "alias": "champion", "version": "8"}),
        ("POST", "/model-versions/set-tag", {"name": MODEL, "version": "8", "key": "promoted_from", "value": "7"}),
        ("DELETE", "/registered-models/alias", {"name": MODEL, "alias": "challenger"}),
    ]
    assert UnityCatalogRegistry.models[MODEL]["aliases"] == {"champion": "8"}
    (event,) = result.get_asset_materialization_events()
    metadata = event.step_materialization_data.materialization.metadata
    assert metadata["model_uri"].value == f"models:/{MODEL}@champion"
    assert metadata["model_version"].value == (
        f"{workspace_url}/explore/data/models/mlops_prod/models/flights_delay/version/8")
