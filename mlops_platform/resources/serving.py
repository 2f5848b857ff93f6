"""Where endpoints are deployed: the local serving process, or Databricks Model Serving.

Both targets take the same :class:`EndpointDeployment` (an endpoint name, the served model versions the registry
aliases resolved to, their traffic shares) and answer the same HTTP contract at :meth:`ServingTarget.invocation_url`,
so the endpoint assets and the smoke test do not know which one they talk to.

- :class:`LocalServing` writes ``<serving_dir>/endpoints/<name>.json`` (``serving/deploy.py``) and makes sure one
  serving process (``serving/process.py``) serves that folder. One deploy at a time, under a lock on the folder. A
  process its pid file names is waited for while it is busy or starting, never replaced; a port held by anything
  else is reported, not fought over. A deployment the process cannot load is rolled back on disk (the process never
  stopped serving the previous one) and the deploy fails saying why.
- ``DatabricksServing`` (``mlops_platform.resources.databricks_serving``) creates or updates a Model Serving
  endpoint with databricks-sdk.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from mlops_platform.polling import poll_until
from mlops_platform.serving.config import (
    EndpointConfig,
    EndpointConfigError,
    ServedModel,
    endpoint_config_path,
    write_atomically,
)
from mlops_platform.serving.deploy import deploy_endpoint_config
from mlops_platform.serving.process import (
    PID_FILE,
    ServerOptions,
    ServerProcess,
    port_accepts,
    probe,
    read_pid_file,
    run_server,
    serving_lock,
    stop_server,
    wait_until_serving,
)

LOG_FILE = "server.log"
STORES_DIR = "stores"

if TYPE_CHECKING:
    from mlops_platform.resources.online_feature_store import OnlinePublish
    from mlops_platform.resources.warehouse import Warehouse
    from mlops_platform.settings import UseCaseConfig


class ServingError(RuntimeError):
    """An endpoint could not be deployed, or the serving process could not be started."""


@dataclass(frozen=True)
class ResolvedModel:
    """A served model: the alias it was asked for, the registered version it resolved to, its traffic share."""

    alias: str
    registered_name: str
    version: str
    traffic_percent: int


@dataclass(frozen=True)
class EndpointDeployment:
    """What to deploy: an endpoint's served versions, and (locally) how its requests become model inputs."""

    name: str
    models: tuple[ResolvedModel, ...]
    keys: tuple[str, ...]
    request_fields: tuple[str, ...]
    feature_columns: tuple[str, ...]
    fallback: dict[str, Any]
    online_store_path: str
    auth_token_env: str | None = None
    max_records: int = 1_000
    workload_size: str = "Small"
    scale_to_zero: bool = True
    usecase: str | None = None


@dataclass(frozen=True)
class DeployOutcome:
    """What a deploy did: ``changed`` is False when the endpoint already served exactly these versions."""

    name: str
    url: str
    changed: bool
    served_versions: dict[str, str]
    traffic: dict[str, int]
    detail: dict[str, Any] = field(default_factory=dict)


class ServingTarget(dg.ConfigurableResource):
    """Deploys endpoints and tells where they answer; ``serving_dir`` holds the online stores either way."""

    serving_dir: str

    def store_path(self, endpoint: str) -> Path:
        return Path(self.serving_dir) / STORES_DIR / f"{endpoint}.arrow"

    def invocation_url(self, name: str) -> str:
        raise NotImplementedError

    def auth_token(self, token_env: str | None) -> str | None:
        """The bearer token a caller of the endpoint sends, read from the environment when it is needed."""
        return os.environ.get(token_env) if token_env else None

    def deploy(self, deployment: EndpointDeployment, *, tracking_uri: str) -> DeployOutcome:
        raise NotImplementedError

    def served_model_url(self, name: str, served_model: str) -> str:
        """Where one served model answers by itself: the endpoint's own URL where a request's id picks the model."""
        return self.invocation_url(name)

    def publish_online_features(self, usecase: UseCaseConfig, endpoint: str,
                                warehouse: Warehouse) -> OnlinePublish | None:
        """Publish the feature tables ``endpoint`` looks features up in to an online store the target runs; None
        where the target serves from the Arrow store the ``online_store`` asset writes to ``store_path``."""
        return None


class _NotYet(Exception):
    """The serving process does not serve the deployment yet; polled again until the deadline."""


class LocalServing(ServingTarget):
    """The local serving process of ``serving_dir`` on ``host:port`` (port 0: a free port, kept while it runs),
    logging requests to the inference table under ``warehouse_root`` in ``catalog``."""

    host: str = "127.0.0.1"
    port: int = 8080
    warehouse_root: str
    catalog: str
    startup_timeout_seconds: float = 180.0
    load_timeout_seconds: float = 120.0
    busy_timeout_seconds: float = 120.0

    def server_options(self) -> ServerOptions:
        return ServerOptions(serving_dir=str(Path(self.serving_dir).resolve()), warehouse_root=self.warehouse_root,
                             catalog=self.catalog, host=self.host, port=self.port, log_level="warning")

    def server_command(self) -> list[str]:
        options = self.server_options()
        return [sys.executable, "-m", "mlops_platform.serving", "--serving-dir", options.serving_dir,
                "--host", options.host, "--port", str(options.port), "--warehouse-root", options.warehouse_root,
                "--catalog", options.catalog, "--log-level", options.log_level]

    def ensure_running(self) -> ServerProcess:
        """The serving process of ``serving_dir``: the running one (waited for while busy), or a new one."""
        with serving_lock(self.serving_dir):
            return self._ensure_running()

    def _ensure_running(self) -> ServerProcess:
        recorded = read_pid_file(self.serving_dir)
        if recorded is not None:
            server = self._wait_for(recorded)
            if server is not None:
                if self.port in (0, server.port) and server.host == self.host:
                    return server
                # The configuration moved the server: the old one drains (SIGTERM) before the new one binds.
                stop_server(self.serving_dir)
            Path(self.serving_dir, PID_FILE).unlink(missing_ok=True)
        if self.port and port_accepts(self.host, self.port):
            raise ServingError(f"port {self.port} on {self.host} is held by a process that is not the serving process "
                               f"of {self.serving_dir} (no live pid file names it): stop it, or move the server with "
                               "MLOPS_SERVING_PORT")
        return self._start()

    def _wait_for(self, recorded: ServerProcess) -> ServerProcess | None:
        """``recorded`` once it serves; None when it is gone. A busy or starting process is waited for."""
        state = "starting"

        def settled() -> bool:
            nonlocal state
            state = probe(recorded)
            return state in ("serving", "gone")

        if not poll_until(settled, self.busy_timeout_seconds, interval=0.2):
            raise ServingError(
                f"the serving process {recorded.pid} at {recorded.base_url} is {state} and has not answered "
                f"/health for {self.busy_timeout_seconds:.0f} s; not starting a second one beside it (log "
                f"{Path(self.serving_dir) / LOG_FILE})")
        return recorded if state == "serving" else None

    def _start(self) -> ServerProcess:
        log_path = Path(self.serving_dir) / LOG_FILE
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            # A new session: the server outlives the run (and the Dagster step process) that started it.
            process = subprocess.Popen(self.server_command(), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        server = wait_until_serving(process, self.serving_dir, self.startup_timeout_seconds)
        if server is not None:
            return server
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServingError(f"the serving process for {self.serving_dir} exited with {process.returncode} "
                               f"before serving (log {log_path}):\n{tail}")
        process.terminate()
        raise ServingError(f"the serving process for {self.serving_dir} did not serve within "
                           f"{self.startup_timeout_seconds:.0f} s (log {log_path})")

    def invocation_url(self, name: str) -> str:
        current = read_pid_file(self.serving_dir)
        port = current.port if current is not None and self.port in (0, current.port) else self.port
        return f"http://{self.host}:{port}/serving-endpoints/{name}/invocations"

    def endpoint_config(self, deployment: EndpointDeployment) -> EndpointConfig:
        return EndpointConfig(
            name=deployment.name,
            served_models=[ServedModel(name=m.alias, model_uri=f"models:/{m.registered_name}/{m.version}",
                                       traffic_percent=m.traffic_percent) for m in deployment.models],
            keys=list(deployment.keys),
            online_store_path=deployment.online_store_path,
            feature_columns=list(deployment.feature_columns),
            request_fields=list(deployment.request_fields),
            fallback=deployment.fallback,
            auth_token_env=deployment.auth_token_env,
            max_records=deployment.max_records,
            usecase=deployment.usecase,
        )

    def deploy(self, deployment: EndpointDeployment, *, tracking_uri: str) -> DeployOutcome:
        """Deploy under the folder's lock; a deployment the process cannot load leaves the previous one serving."""
        config = self.endpoint_config(deployment)
        path = endpoint_config_path(self.serving_dir, deployment.name)
        with serving_lock(self.serving_dir):
            server = self._ensure_running()
            changed = not _same_deployment(path, config)
            if changed:
                previous = path.read_bytes() if path.is_file() else None
                try:
                    resolved = deploy_endpoint_config(self.serving_dir, config, tracking_uri=tracking_uri,
                                                      registry_uri=tracking_uri)
                except EndpointConfigError as error:
                    raise ServingError(f"endpoint '{deployment.name}' was not deployed: {error}. "
                                       f"{_still_serving(previous)}") from None
                try:
                    self._wait_loaded(server, deployment, resolved.deployed_at)
                except ServingError as error:
                    if previous is None:
                        path.unlink(missing_ok=True)
                    else:
                        write_atomically(path, previous)
                    raise ServingError(f"{error}. {_still_serving(previous)}") from None
            else:
                self._wait_loaded(server, deployment, None)
        return DeployOutcome(
            name=deployment.name, url=self.invocation_url(deployment.name), changed=changed,
            served_versions={m.alias: m.version for m in deployment.models},
            traffic={m.alias: m.traffic_percent for m in deployment.models},
            detail={"config_path": str(path), "server_pid": server.pid},
        )

    def _wait_loaded(self, server: ServerProcess, deployment: EndpointDeployment, deployed_at: str | None) -> None:
        """Wait until the process serves the deployment written at ``deployed_at`` (None: the versions already
        deployed); a deployment it cannot load fails the deploy with the process's reason."""
        wanted = {m.alias: m.version for m in deployment.models}
        name = deployment.name
        last: dict[str, Any] = {}

        def check() -> None:
            nonlocal last
            try:
                answer = httpx.get(f"{server.base_url}/ready", timeout=10.0)
            except httpx.HTTPError as error:
                raise _NotYet(str(error)) from None
            last = answer.json().get("endpoints", {}).get(name) or {}
            if deployed_at is not None and last.get("failed_deployed_at") == deployed_at:
                raise ServingError(f"endpoint '{name}': the serving process at {server.base_url} cannot load the "
                                   f"deployment: {last.get('last_load_error')}")
            if last.get("state") != "READY" or last.get("served_models") != wanted or (
                    deployed_at is not None and last.get("deployed_at") != deployed_at):
                raise _NotYet(f"serving {last}")

        try:
            for attempt in Retrying(retry=retry_if_exception_type(_NotYet), wait=wait_fixed(0.1),
                                    stop=stop_after_delay(self.load_timeout_seconds), reraise=True):
                with attempt:
                    check()
        except _NotYet:
            raise ServingError(f"endpoint '{name}' was not serving {wanted} at {server.base_url} after "
                               f"{self.load_timeout_seconds:.0f} s; last status: {last}") from None


def _still_serving(previous: bytes | None) -> str:
    if previous is None:
        return "Nothing was serving this endpoint before; nothing is now"
    earlier = EndpointConfig.model_validate_json(previous)
    versions = {m.name: m.model_version for m in earlier.served_models}
    return f"The previous deployment ({versions}, deployed {earlier.deployed_at}) keeps serving"


def _same_deployment(path: Path, config: EndpointConfig) -> bool:
    """Whether ``path`` already deploys ``config``: same served versions and traffic, same request handling."""
    if not path.is_file():
        return False
    try:
        current = EndpointConfig.load(path)
    except ValueError:
        return False
    ignored = {"served_models", "field_types", "nullable_fields", "deployed_at"}

    def served(endpoint: EndpointConfig) -> list[tuple[str, str | None, int]]:
        return [(m.name, m.model_uri, m.traffic_percent) for m in endpoint.served_models]

    return (served(current) == served(config)
            and current.model_dump(exclude=ignored) == config.model_dump(exclude=ignored))


def serve_foreground(target: LocalServing) -> int:
    """Run the serving process of ``target`` in this process until SIGTERM/SIGINT; deploys reuse it meanwhile."""
    with serving_lock(target.serving_dir):
        recorded = read_pid_file(target.serving_dir)
        if recorded is not None and probe(recorded) != "gone":
            print(f"already serving {target.serving_dir} at {recorded.base_url} (pid {recorded.pid})", file=sys.stderr)
            return 1
        if target.port and port_accepts(target.host, target.port):
            print(f"port {target.port} on {target.host} is held by another process", file=sys.stderr)
            return 1
    print(f"serving {target.serving_dir} on {target.host} (port {target.port or 'free'}); "
          "POST /serving-endpoints/<name>/invocations", flush=True)
    return run_server(target.server_options())
