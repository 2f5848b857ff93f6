"""A fake Databricks workspace on loopback, speaking the REST APIs databricks-sdk calls for serving.

It serves Model Serving endpoints (create, get, update config, AI Gateway), Unity Catalog tables and schemas, the
data-quality monitors API, the Feature Store online stores and publish, and SQL statements; it records every
request (method, path, query, JSON body) so tests assert exactly what went over the wire. Endpoint state follows
what the workspace does: an update is IN_PROGRESS for ``updating_polls`` reads, then NOT_UPDATING and READY, or
what a test sets (``stuck``, ``fail_updates``, ``not_ready``, ``refuse``).
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

SERVING = "/api/2.0/serving-endpoints"
TABLES = "/api/2.1/unity-catalog/tables/"
SCHEMAS = "/api/2.1/unity-catalog/schemas/"
MONITORS = "/api/data-quality/v1/monitors"
ONLINE_STORES = "/api/2.0/feature-store/online-stores"
FEATURE_TABLES = "/api/2.0/feature-store/tables/"
STATEMENTS = "/api/2.0/sql/statements"

WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.method, self.path, self.body))


@dataclass
class FakeWorkspace:
    host: str = ""
    requests: list[Request] = field(default_factory=list)
    endpoints: dict[str, dict] = field(default_factory=dict)
    tables: dict[str, dict] = field(default_factory=dict)
    schemas: dict[str, dict] = field(default_factory=dict)
    monitors: dict[str, dict] = field(default_factory=dict)
    online_stores: dict[str, dict] = field(default_factory=dict)
    statements: list[str] = field(default_factory=list)
    # Behaviour a test sets.
    updating_polls: int = 0
    stuck: bool = False
    fail_updates: bool = False
    not_ready: bool = False
    store_starting_polls: int = 0
    answer_as: str | None = None
    refuse: dict[tuple[str, str], tuple[int, str, str]] = field(default_factory=dict)
    _polls_left: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def writes(self) -> list[Request]:
        """Every request that changes something, in order (statements included)."""
        return [r for r in self.requests if r.method in WRITES]

    def paths(self, method: str | None = None) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests if method is None or r.method == method]

    def add_table(self, full_name: str, columns: dict[str, bool], *, properties: dict[str, str] | None = None,
                  primary_key: dict | None = None) -> str:
        """A Unity Catalog table: ``columns`` maps each name to whether it is nullable."""
        table_id = str(uuid.uuid4())
        self.tables[full_name] = {
            "full_name": full_name, "table_id": table_id, "properties": properties or {},
            "columns": [{"name": n, "nullable": nullable, "type_name": "STRING"} for n, nullable in columns.items()],
            "table_constraints": [{"primary_key_constraint": primary_key}] if primary_key else [],
        }
        return table_id

    def add_schema(self, full_name: str) -> str:
        schema_id = str(uuid.uuid4())
        self.schemas[full_name] = {"full_name": full_name, "schema_id": schema_id}
        return schema_id

    def add_endpoint(self, name: str, body: dict) -> None:
        """An endpoint that exists already, as created by ``body`` (a create request's body) and settled."""
        self.endpoints[name] = self._endpoint_from(body)
        self._settle(name)

    # --- endpoint state ----------------------------------------------------------------------------------------

    def _endpoint_from(self, body: dict) -> dict:
        config = copy.deepcopy(body.get("config") or {})
        config.pop("name", None)
        endpoint = {"name": body["name"], "id": uuid.uuid4().hex, "config": config,
                    "route_optimized": bool(body.get("route_optimized")),
                    "state": {"ready": "NOT_READY", "config_update": "IN_PROGRESS"}}
        if body.get("ai_gateway") is not None:
            endpoint["ai_gateway"] = copy.deepcopy(body["ai_gateway"])
        if endpoint["route_optimized"]:
            endpoint["endpoint_url"] = f"{self.host}/ro-{endpoint['id']}/serving-endpoints/{body['name']}/invocations"
        return endpoint

    def _start_update(self, name: str) -> None:
        self.endpoints[name]["state"]["config_update"] = "IN_PROGRESS"
        self._polls_left[name] = self.updating_polls

    def _settle(self, name: str) -> None:
        endpoint = self.endpoints[name]
        if self.fail_updates:
            endpoint["state"]["config_update"] = "UPDATE_FAILED"
            return
        endpoint["state"] = {"config_update": "NOT_UPDATING", "ready": "NOT_READY" if self.not_ready else "READY"}
        for entity in endpoint["config"].get("served_entities", []):
            entity["state"] = ({"deployment": "DEPLOYMENT_FAILED", "deployment_state_message": "container build "
                               "failed: could not install model dependencies"} if self.not_ready else
                               {"deployment": "DEPLOYMENT_READY", "deployment_state_message": ""})

    def _read_endpoint(self, name: str) -> dict:
        endpoint = self.endpoints[name]
        if endpoint["state"]["config_update"] == "IN_PROGRESS" and not self.stuck:
            left = self._polls_left.get(name, 0)
            if left <= 0:
                self._settle(name)
            else:
                self._polls_left[name] = left - 1
        return endpoint

    # --- the server --------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any, authorization: str | None = None
               ) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.requests.append(Request(method, path, query, body, authorization))
            if (method, path) in self.refuse:
                status, code, message = self.refuse[(method, path)]
                return status, {"error_code": code, "message": message}, {}
            if path.startswith("/serving-endpoints/") and path.endswith("/invocations"):
                return self._invoke(path, body)
            return (*self._route(method, path, query, body), {})

    def _invoke(self, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        """An endpoint's (or one served entity's) answer: a probability per record, naming the entity that answered."""
        parts = path.strip("/").split("/")
        endpoint = self.endpoints.get(parts[1])
        if endpoint is None:
            return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"endpoint {parts[1]}"}, {}
        served = parts[3] if parts[2] == "served-models" else endpoint["config"]["served_entities"][0]["name"]
        records = body.get("dataframe_records") or []
        return 200, {"predictions": [0.25] * len(records)}, {"served-model-name": self.answer_as or served}

    def _missing(self, what: str) -> tuple[int, dict]:
        return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"{what} does not exist"}

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == SERVING and method == "POST":
            if body["name"] in self.endpoints:
                return 409, {"error_code": "RESOURCE_ALREADY_EXISTS", "message": f"{body['name']} exists"}
            self.endpoints[body["name"]] = self._endpoint_from(body)
            self._start_update(body["name"])
            return 200, self.endpoints[body["name"]]
        if path.startswith(SERVING + "/"):
            name, _, rest = path.removeprefix(SERVING + "/").partition("/")
            if name not in self.endpoints:
                return self._missing(f"endpoint {name}")
            endpoint = self.endpoints[name]
            if method == "GET" and not rest:
                return 200, self._read_endpoint(name)
            if method == "PUT" and rest == "config":
                if endpoint["state"]["config_update"] == "IN_PROGRESS":
                    return 409, {"error_code": "RESOURCE_CONFLICT", "message": f"{name} is being updated"}
                for key in ("served_entities", "traffic_config"):
                    if key in body:
                        endpoint["config"][key] = copy.deepcopy(body[key])
                self._start_update(name)
                return 200, endpoint
            if method == "PUT" and rest == "ai-gateway":
                endpoint["ai_gateway"] = copy.deepcopy(body)
                return 200, body
        if path.startswith(TABLES) and method == "GET":
            name = unquote(path.removeprefix(TABLES))
            return (200, self.tables[name]) if name in self.tables else self._missing(f"table {name}")
        if path.startswith(SCHEMAS) and method == "GET":
            name = unquote(path.removeprefix(SCHEMAS))
            return (200, self.schemas[name]) if name in self.schemas else self._missing(f"schema {name}")
        if path == MONITORS and method == "POST":
            self.monitors[body["object_id"]] = copy.deepcopy(body)
            return 200, body
        if path.startswith(MONITORS + "/"):
            object_id = path.rsplit("/", 1)[1]
            if object_id not in self.monitors:
                return self._missing(f"monitor of {object_id}")
            if method == "PATCH":
                self.monitors[object_id] = copy.deepcopy(body)
            return 200, self.monitors[object_id]
        if path == ONLINE_STORES and method == "POST":
            self.online_stores[body["name"]] = {**body, "state": "STARTING", "polls": self.store_starting_polls}
            return 200, {k: v for k, v in self.online_stores[body["name"]].items() if k != "polls"}
        if path.startswith(ONLINE_STORES + "/") and method == "GET":
            name = path.rsplit("/", 1)[1]
            if name not in self.online_stores:
                return self._missing(f"online store {name}")
            store = self.online_stores[name]
            if store["state"] == "STARTING":
                store["polls"] -= 1
                if store["polls"] < 0:
                    store["state"] = "AVAILABLE"
            return 200, {k: v for k, v in store.items() if k != "polls"}
        if path.startswith(FEATURE_TABLES) and path.endswith("/publish") and method == "POST":
            source = unquote(path.removeprefix(FEATURE_TABLES).removesuffix("/publish"))
            if source not in self.tables:
                return self._missing(f"table {source}")
            return 200, {"online_table_name": body["publish_spec"]["online_table_name"],
                         "pipeline_id": f"pipeline-{source.rsplit('.', 1)[1]}"}
        if path.rstrip("/") == STATEMENTS and method == "POST":
            self.statements.append(body["statement"])
            return 200, {"statement_id": f"s{len(self.statements)}", "status": {"state": "SUCCEEDED"}}
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no fake for {method} {path}"}


@contextmanager
def fake_workspace(**behaviour: Any) -> Iterator[FakeWorkspace]:
    workspace = FakeWorkspace(**behaviour)

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw) if raw else None
            status, answer, headers = workspace.handle(self.command, url.path, dict(parse_qsl(url.query)), body,
                                                       self.headers.get("Authorization"))
            payload = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    workspace.host = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield workspace
    finally:
        server.shutdown()
        server.server_close()
