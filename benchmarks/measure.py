"""Process-level measurements shared by the benchmarks: memory, child processes, SQL round trips, bytes on disk."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

KIB = 1024


def memory_mb(field: str = "VmHWM", pid: int | str = "self") -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of a process, in MB, from ``/proc``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * KIB / 1e6
    raise KeyError(f"/proc/{pid}/status has no {field}")


@dataclass(frozen=True)
class ChildRun:
    seconds: float
    peak_rss_mb: float
    returncode: int
    output: str


# Spawns the command from a bare interpreter and reports its wall time and rusage. Linux seeds an exec'ed child's
# peak RSS with its parent's at the exec, so a command spawned straight from a benchmark that imported Dagster
# would report the benchmark's peak instead of its own.
LAUNCHER = """
import json, os, shutil, sys, time
report, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawn(shutil.which(command[0]), command, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(report, "w") as out:
    json.dump({"seconds": seconds, "maxrss_kib": usage.ru_maxrss, "returncode": os.waitstatus_to_exitcode(status)}, out)
"""


def timed_child(command: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600.0) -> ChildRun:
    """Run a command to its end: wall time from spawn to exit, and the peak RSS of that process alone."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        output = Path(folder) / "output.txt"
        with output.open("wb") as sink:
            completed = subprocess.run([sys.executable, "-c", LAUNCHER, str(report), *command], stdout=sink,
                                       stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
        if completed.returncode != 0 or not report.exists():
            raise RuntimeError(f"the launcher of {list(command)} failed:\n{output.read_text(errors='replace')}")
        measured = json.loads(report.read_text())
        return ChildRun(measured["seconds"], measured["maxrss_kib"] * KIB / 1e6, measured["returncode"],
                        output.read_text(errors="replace"))


def median_child(command: Sequence[str], repeats: int, env: dict[str, str] | None = None) -> dict[str, float]:
    """The median wall time and peak RSS of ``repeats`` runs of a command that must succeed."""
    runs = []
    for _ in range(repeats):
        run = timed_child(command, env)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited with {run.returncode}:\n{run.output[-3000:]}")
        runs.append(run)
    return {"seconds": statistics.median(run.seconds for run in runs),
            "min_seconds": min(run.seconds for run in runs),
            "peak_rss_mb": statistics.median(run.peak_rss_mb for run in runs), "repeats": repeats}


def folder_bytes(folder: Path) -> int:
    if not folder.exists():
        return 0
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


class SqlStatements:
    """Counts SQL statements per database file through SQLAlchemy's engine events (Dagster's and MLflow's stores
    both go through SQLAlchemy): a round trip to the store is one statement."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def _count(self, connection, _cursor, _statement, _parameters, _context, _executemany) -> None:
        self.counts[Path(connection.engine.url.database or "memory").name] += 1

    def __enter__(self) -> Self:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc_info: object) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.remove(Engine, "before_cursor_execute", self._count)

    def by_store(self, mlflow_database: str) -> dict[str, int]:
        """Statements against the MLflow store and against everything else (Dagster's run, event and index dbs)."""
        mlflow = self.counts.get(mlflow_database, 0)
        return {"mlflow": mlflow, "dagster": sum(self.counts.values()) - mlflow}


class LoadRecorder:
    """The machine's 1-minute load average, read every ``interval`` seconds while running (a context manager):
    a figure measured on a shared machine names the load it was measured under."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.readings: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-recorder", daemon=True)

    def _run(self) -> None:
        self.readings.append(os.getloadavg()[0])
        while not self._stop.wait(self.interval):
            self.readings.append(os.getloadavg()[0])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def as_dict(self) -> dict[str, float]:
        return {"mean": round(statistics.mean(self.readings), 2), "max": round(max(self.readings), 2),
                "min": round(min(self.readings), 2), "readings": len(self.readings)}

    def summary(self) -> str:
        figures = self.as_dict()
        return f"mean {figures['mean']:.1f}, min {figures['min']:.1f}, max {figures['max']:.1f} on {os.cpu_count()} cpus"
