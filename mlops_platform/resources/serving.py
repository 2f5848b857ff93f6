"""Where endpoints are deployed: the local serving process, or Databricks Model Serving.

Both targets take the same :class:`EndpointDeployment` (an endpoint name, the served model versions the registry
aliases resolved to, their traffic shares) and answer the same HTTP contract at :meth:`ServingTarget.invocation_url`,
so the endpoint assets and the smoke test do not know which one they talk to.

- :class:`LocalServing` writes ``<serving_dir>/endpoints/<name>.json`` (``deploy_endpoint_config``) and makes sure one
  ``python -m mlops_platform.serving`` process serves that folder: started detached with a pid file when none runs,
  reused when one does; it picks up every redeploy without a restart.
- ``DatabricksServing`` (``mlops_platform.resources.databricks_serving``) creates or updates a Model Serving
  endpoint with databricks-sdk.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from mlops_platform.serving.config import (
    EndpointConfig,
    ServedModel,
    deploy_endpoint_config,
    endpoint_config_path,
)

PID_FILE = "server.pid"
LOG_FILE = "server.log"
LOCK_FILE = "server.lock"
STORES_DIR = "stores"


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


def _get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child of this process that exited stays a zombie until reaped: kill(0) succeeds, yet nothing serves.
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    return True


@dataclass(frozen=True)
class ServerProcess:
    """A serving process of one serving folder, as its pid file records it."""

    pid: int
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def read_pid_file(serving_dir: str | Path) -> ServerProcess | None:
    path = Path(serving_dir) / PID_FILE
    try:
        recorded = json.loads(path.read_text())
        return ServerProcess(int(recorded["pid"]), str(recorded["host"]), int(recorded["port"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def write_pid_file(serving_dir: str | Path, process: ServerProcess) -> None:
    from mlops_platform.serving.config import write_atomically

    payload = {"pid": process.pid, "host": process.host, "port": process.port}
    write_atomically(Path(serving_dir) / PID_FILE, json.dumps(payload).encode())


def running_server(serving_dir: str | Path) -> ServerProcess | None:
    """The process serving this folder, if its pid file names a live process that answers ``/health``."""
    recorded = read_pid_file(serving_dir)
    if recorded is None or not _alive(recorded.pid):
        return None
    try:
        status, _ = _get(recorded.host, recorded.port, "/health")
    except OSError:
        return None
    return recorded if status == 200 else None


def stop_server(serving_dir: str | Path, timeout: float = 30.0) -> bool:
    """Stop the serving process of this folder gracefully (SIGTERM flushes its inference log); True if one ran."""
    recorded = read_pid_file(serving_dir)
    if recorded is None:
        return False
    pid_file = Path(serving_dir) / PID_FILE
    if not _alive(recorded.pid):
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(recorded.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(recorded.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(recorded.pid):
        os.kill(recorded.pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class LocalServing(ServingTarget):
    """The local serving process of ``serving_dir`` on ``host:port`` (port 0: a free port, kept while it runs),
    logging requests to the inference table under ``warehouse_root`` in ``catalog``."""

    host: str = "127.0.0.1"
    port: int = 8080
    warehouse_root: str
    catalog: str
    startup_timeout_seconds: float = 180.0
    load_timeout_seconds: float = 120.0

    def server_command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "mlops_platform.serving", "--serving-dir", str(Path(self.serving_dir).resolve()),
                "--host", self.host, "--port", str(port), "--warehouse-root", self.warehouse_root,
                "--catalog", self.catalog, "--log-level", "warning"]

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Two endpoint assets of one run (or two runs) must not both start a process for the same folder.
        Path(self.serving_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(self.serving_dir) / LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def ensure_running(self) -> ServerProcess:
        """The serving process of ``serving_dir``: the running one, or a new detached one once it answers."""
        with self._lock():
            current = running_server(self.serving_dir)
            if current is not None and (self.port in (0, current.port)) and current.host == self.host:
                return current
            if current is not None:
                stop_server(self.serving_dir)
            return self._start()

    def _start(self) -> ServerProcess:
        port = self.port or _free_port(self.host)
        log_path = Path(self.serving_dir) / LOG_FILE
        with log_path.open("ab") as log:
            # A new session: the server outlives the run (and the Dagster step process) that started it.
            process = subprocess.Popen(self.server_command(port), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        server = ServerProcess(process.pid, self.host, port)
        write_pid_file(self.serving_dir, server)
        deadline = time.monotonic() + self.startup_timeout_seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                Path(self.serving_dir, PID_FILE).unlink(missing_ok=True)
                tail = log_path.read_text(errors="replace")[-2000:]
                raise ServingError(f"the serving process for {self.serving_dir} exited with {process.returncode} "
                                   f"before answering on {server.base_url} (log {log_path}):\n{tail}")
            try:
                if _get(self.host, port, "/health")[0] == 200:
                    return server
            except OSError:
                pass
            time.sleep(0.1)
        stop_server(self.serving_dir)
        raise ServingError(f"the serving process for {self.serving_dir} did not answer on {server.base_url} within "
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
        )

    def deploy(self, deployment: EndpointDeployment, *, tracking_uri: str) -> DeployOutcome:
        config = self.endpoint_config(deployment)
        path = endpoint_config_path(self.serving_dir, deployment.name)
        changed = not _same_deployment(path, config)
        if changed:
            deploy_endpoint_config(self.serving_dir, config, tracking_uri=tracking_uri, registry_uri=tracking_uri)
        server = self.ensure_running()
        self._wait_loaded(server, deployment)
        return DeployOutcome(
            name=deployment.name, url=self.invocation_url(deployment.name), changed=changed,
            served_versions={m.alias: m.version for m in deployment.models},
            traffic={m.alias: m.traffic_percent for m in deployment.models},
            detail={"config_path": str(path), "server_pid": server.pid},
        )

    def _wait_loaded(self, server: ServerProcess, deployment: EndpointDeployment) -> None:
        """Wait until the process serves exactly the deployed versions; a config it cannot load fails the deploy."""
        wanted = {m.alias: m.version for m in deployment.models}
        deadline = time.monotonic() + self.load_timeout_seconds
        # A load error seen before the watcher's next poll may be the previous configuration's.
        settled = time.monotonic() + 2.0
        last: Any = None
        while time.monotonic() < deadline:
            try:
                _, status = _get(server.host, server.port, "/serving-endpoints")
            except OSError as error:
                last = str(error)
                time.sleep(0.1)
                continue
            last = (status or {}).get(deployment.name)
            if last and last["state"] == "READY" and last["served_models"] == wanted and not last["last_load_error"]:
                return
            if last and last["last_load_error"] and time.monotonic() > settled:
                raise ServingError(f"endpoint '{deployment.name}': the serving process at {server.base_url} cannot "
                                   f"load the deployed configuration: {last['last_load_error']}")
            time.sleep(0.1)
        raise ServingError(f"endpoint '{deployment.name}' was not serving {wanted} at {server.base_url} after "
                           f"{self.load_timeout_seconds:.0f} s; last status: {last}")


def _same_deployment(path: Path, config: EndpointConfig) -> bool:
    """Whether ``path`` already deploys ``config``: same served versions and traffic, same request handling."""
    if not path.is_file():
        return False
    try:
        current = EndpointConfig.load(path)
    except ValueError:
        return False
    ignored = {"served_models", "field_types", "deployed_at"}

    def served(endpoint: EndpointConfig) -> list[tuple[str, str | None, int]]:
        return [(m.name, m.model_uri, m.traffic_percent) for m in endpoint.served_models]

    return (served(current) == served(config)
            and current.model_dump(exclude=ignored) == config.model_dump(exclude=ignored))


def serving_target(settings: Any) -> ServingTarget:
    """The serving target of an environment: Databricks when it has a ``databricks`` section, else local."""
    env = settings.environment
    serving_dir = str(settings.serving_dir)
    if env.databricks is not None:
        from mlops_platform.resources.databricks_serving import databricks_serving

        return databricks_serving(settings)
    return LocalServing(serving_dir=serving_dir, host=env.serving.host, port=env.serving.port,
                        warehouse_root=str(settings.warehouse_dir), catalog=env.catalog)


def serve_foreground(target: LocalServing) -> int:
    """Run the serving process of ``target`` in this process until SIGINT/SIGTERM; deploys reuse it meanwhile."""
    from mlops_platform.serving.__main__ import main

    with target._lock():
        current = running_server(target.serving_dir)
        if current is not None:
            print(f"already serving {target.serving_dir} at {current.base_url} (pid {current.pid})", file=sys.stderr)
            return 1
        port = target.port or _free_port(target.host)
        write_pid_file(target.serving_dir, ServerProcess(os.getpid(), target.host, port))
    print(f"serving {target.serving_dir} at http://{target.host}:{port}/serving-endpoints/<name>/invocations",
          flush=True)
    try:
        return main(target.server_command(port)[3:])
    finally:
        Path(target.serving_dir, PID_FILE).unlink(missing_ok=True)
