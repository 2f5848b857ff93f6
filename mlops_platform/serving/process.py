"""The serving process: how it runs, drains, and how another process finds and probes it.

:func:`run_server` is the whole program (``python -m mlops_platform.serving`` parses its options into
:class:`ServerOptions`). Once its socket is bound the process writes ``<serving_dir>/server.pid`` (pid, host, the
port actually bound, and its start time, so a pid reused by another program is not mistaken for it) and removes it
when it exits.

SIGTERM (or SIGINT) drains: the listening socket closes at once (new connections are refused, never half-accepted),
``/ready`` answers 503, every response carries ``Connection: close``, requests already sent on open connections are
answered, and once nothing has arrived for ``drain_idle_seconds`` the process stops, ships its inference spool to
Delta and exits. A second signal exits at once.

:func:`probe` tells a deployer what a pid file's process is doing: ``serving``, ``busy`` (alive, its port accepts
connections, but ``/health`` is slow), ``starting`` (alive, not bound yet) or ``gone``; a deployer waits for a busy
or starting process and never starts a second one beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn

from mlops_platform.polling import poll_until
from mlops_platform.serving.config import write_atomically
from mlops_platform.serving.inference_table import INFERENCE_SCHEMA, INFERENCE_TABLE

logger = logging.getLogger(__name__)

PID_FILE = "server.pid"
SPOOL_DIR = "spool"
State = Literal["serving", "busy", "starting", "gone"]


@dataclass(frozen=True)
class ServerOptions:
    serving_dir: str
    warehouse_root: str
    catalog: str
    host: str = "127.0.0.1"
    port: int = 8080
    inference_schema: str = INFERENCE_SCHEMA
    inference_table: str = INFERENCE_TABLE
    workers: int | None = None
    max_pending: int = 256
    max_batch_rows: int = 256
    log_batch_rows: int = 1_000
    log_flush_seconds: float = 1.0
    poll_seconds: float = 0.5
    compile_models: bool = True
    drain_idle_seconds: float = 0.5
    drain_max_seconds: float = 30.0
    log_level: str = "info"


@dataclass(frozen=True)
class ServerProcess:
    """A serving process of one serving folder, as its pid file records it."""

    pid: int
    host: str
    port: int
    started: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), which a reused pid does not share."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def read_pid_file(serving_dir: str | Path) -> ServerProcess | None:
    try:
        recorded = json.loads((Path(serving_dir) / PID_FILE).read_text())
        return ServerProcess(int(recorded["pid"]), str(recorded["host"]), int(recorded["port"]),
                             recorded.get("started"))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def write_pid_file(serving_dir: str | Path, process: ServerProcess) -> None:
    payload = {"pid": process.pid, "host": process.host, "port": process.port, "started": process.started}
    write_atomically(Path(serving_dir) / PID_FILE, json.dumps(payload).encode())


def alive(process: ServerProcess) -> bool:
    """Whether the recorded process still runs (and is the same process, not a reused pid)."""
    try:
        os.kill(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child of this process that exited stays a zombie until reaped: kill(0) succeeds, yet nothing serves.
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(process.pid, os.WNOHANG)
        if finished == process.pid:
            return False
    started = _process_start(process.pid)
    return process.started is None or started is None or started == process.started


def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def probe(process: ServerProcess, health_timeout: float = 2.0) -> State:
    if not alive(process):
        return "gone"
    try:
        if httpx.get(f"{process.base_url}/health", timeout=health_timeout).status_code == 200:
            return "serving"
    except httpx.TimeoutException:
        return "busy"
    except httpx.HTTPError:
        pass
    return "busy" if port_accepts(process.host, process.port) else "starting"


def running_server(serving_dir: str | Path) -> ServerProcess | None:
    """The process serving this folder, if its pid file names a live process that answers ``/health``."""
    recorded = read_pid_file(serving_dir)
    return recorded if recorded is not None and probe(recorded) == "serving" else None


def stop_server(serving_dir: str | Path, timeout: float = 60.0) -> bool:
    """Stop the serving process of this folder gracefully (SIGTERM drains it and ships its inference log);
    True if one ran. Killed when it outlives ``timeout``."""
    recorded = read_pid_file(serving_dir)
    pid_file = Path(serving_dir) / PID_FILE
    if recorded is None:
        return False
    if not alive(recorded):
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(recorded.pid, signal.SIGTERM)
    # Not necessarily this process's child, so nothing signals its exit portably: it is polled.
    if not poll_until(lambda: not alive(recorded), timeout, interval=0.05):
        logger.error("serving process %d did not stop within %.0f s; killing it", recorded.pid, timeout)
        os.kill(recorded.pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def wait_until_serving(process: subprocess.Popen, serving_dir: str | Path, timeout: float) -> ServerProcess | None:
    """``process``, just started on ``serving_dir``, once it serves (its pid file names it and ``/health``
    answers); None when it exited first or did not serve within ``timeout`` seconds (``process.poll()`` tells)."""

    def serving_or_exited() -> ServerProcess | bool:
        recorded = read_pid_file(serving_dir)
        if recorded is not None and recorded.pid == process.pid and probe(recorded) == "serving":
            return recorded
        return process.poll() is not None

    server = poll_until(serving_or_exited, timeout, interval=0.1)
    return server if isinstance(server, ServerProcess) else None


def spool_dir(serving_dir: str | Path) -> Path:
    return Path(serving_dir) / SPOOL_DIR


def run_server(options: ServerOptions) -> int:
    """Serve every endpoint of ``options.serving_dir`` until SIGTERM/SIGINT; returns the exit status."""
    logging.basicConfig(level=options.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from threadpoolctl import threadpool_limits

    from mlops_platform.serving.endpoints import EndpointRegistry
    from mlops_platform.serving.inference_log import InferenceLogger
    from mlops_platform.serving.pool import ScoringPool
    from mlops_platform.serving.server import ServingApp

    # One OpenMP and BLAS thread per scoring worker: a worker scores one micro-batch at a time, and more threads
    # only spin against each other and the event loop (a one-row booster predict measured p99 1.7 s -> 12 ms).
    threadpool_limits(1)
    # A background thread (the spool writer, a reload, a scorer) holding the GIL delays the event loop by up to the
    # switch interval; the default 5 ms would dominate the tail of millisecond requests.
    sys.setswitchinterval(0.0005)
    registry = EndpointRegistry(options.serving_dir, compile_models=options.compile_models,
                                poll_seconds=options.poll_seconds, freeze_gc=True)
    inference_log = InferenceLogger.to_delta(
        options.warehouse_root, options.catalog, spool_dir(options.serving_dir), schema=options.inference_schema,
        table=options.inference_table, batch_rows=options.log_batch_rows, flush_seconds=options.log_flush_seconds,
    )
    pool = ScoringPool(options.workers, max_pending=options.max_pending, max_batch_rows=options.max_batch_rows)
    app = ServingApp(registry, inference_log, pool)
    config = uvicorn.Config(
        app, host=options.host, port=options.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        ws="none", lifespan="on", access_log=False, log_level=options.log_level,
        timeout_graceful_shutdown=int(options.drain_max_seconds) + 1,
    )
    server = DrainingServer(config, app, options)
    try:
        server.run()
    finally:
        # Normally done by the lifespan shutdown already; this covers a failed start-up.
        inference_log.close()
        server.remove_pid_file()
    return 0 if server.started else 1


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains on SIGTERM (see the module docstring) and keeps the pid file."""

    def __init__(self, config: uvicorn.Config, app: Any, options: ServerOptions) -> None:
        super().__init__(config)
        self.app = app
        self.options = options
        self._drain_started: float | None = None
        self._pid_written: ServerProcess | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started and self.servers:
            port = self.servers[0].sockets[0].getsockname()[1]
            process = ServerProcess(os.getpid(), self.options.host, port, _process_start(os.getpid()))
            write_pid_file(self.options.serving_dir, process)
            self._pid_written = process
            logger.warning("serving %s at %s", self.options.serving_dir, process.base_url)

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Not uvicorn's: it would re-raise the signal after shutting down, killing the process before its pid file
        # is removed. The first signal drains, a second one exits at once.
        if self._drain_started is not None:
            self.should_exit = self.force_exit = True
            return
        self._drain_started = time.monotonic()
        if self._loop is None:
            self.should_exit = True
        else:
            self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        # The socket closes before any answer says "Connection: close": no client is reconnecting at that moment,
        # so no connection is left half-accepted in the listen backlog.
        for server in self.servers:
            server.close()
        self.app.start_draining()

    async def on_tick(self, counter: int) -> bool:
        if self._drain_started is not None and self.app.draining:
            now = time.monotonic()
            quiet = now - self.app.last_request >= self.options.drain_idle_seconds
            overdue = now - self._drain_started >= self.options.drain_max_seconds
            if (self.app.in_flight == 0 and quiet) or overdue:
                self.should_exit = True
        return await super().on_tick(counter)

    def remove_pid_file(self) -> None:
        if self._pid_written is not None and read_pid_file(self.options.serving_dir) == self._pid_written:
            (Path(self.options.serving_dir) / PID_FILE).unlink(missing_ok=True)


@contextlib.contextmanager
def serving_lock(serving_dir: str | Path, name: str = "deploy.lock") -> Iterator[None]:
    """An exclusive lock on the serving folder: one deploy (or start) at a time, across processes."""
    import fcntl

    Path(serving_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(serving_dir) / name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
