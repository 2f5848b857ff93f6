"""The replay's wall time split into compute (inside steps) and orchestration (everything else Dagster does).

    python -m benchmarks.bench_replay [--days 14]

The same days are replayed three times, each into a fresh data folder, through ``mlops_platform.replay`` (the code
behind the README's main command, daily job only):

- ``in-memory``: an ephemeral instance, the baseline: nothing is written but the tables;
- ``sqlite``: a persistent SQLite instance as dagster.yaml configures it, with every commit fsynced;
- ``sqlite, no fsync``: the same instance as the main command opens it (``persistent_instance(durable=False)``).

Figures go to stdout and ``benchmarks/results/replay.json``, as ratios against the in-memory replay.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
from pathlib import Path

import dagster as dg

from mlops_platform.defs import build_definitions
from mlops_platform.instance import persistent_instance
from mlops_platform.landing import day_range
from mlops_platform.replay import RunTiming, replay
from mlops_platform.settings import DATA_DIR_ENV, PROJECT_ROOT, load_settings

RESULTS = Path(__file__).resolve().parent / "results" / "replay.json"
FIRST_DAY = dt.date(2013, 1, 1)


def _replay(days: list[dt.date], instance_kind: str, folder: Path) -> RunTiming:
    os.environ[DATA_DIR_ENV] = str(folder / "data")
    settings = load_settings("local")
    usecase = settings.usecases["flights"]
    if instance_kind == "in-memory":
        instance = dg.DagsterInstance.ephemeral()
    else:
        home = folder / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(home)
        instance = persistent_instance(durable=instance_kind == "sqlite")
    total = RunTiming()
    for outcome in replay(settings, usecase, build_definitions(settings), instance, days):
        if not outcome.success:
            raise RuntimeError(f"{outcome.day} failed: {outcome.errors}")
        total.add(outcome.timing)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args()
    days = day_range(FIRST_DAY, args.days)
    # The durable SQLite run goes first: the no-fsync one installs a process-wide SQLite hook.
    figures = {}
    for kind in ("in-memory", "sqlite", "sqlite, no fsync"):
        with tempfile.TemporaryDirectory() as folder:
            timing = _replay(days, kind, Path(folder))
        figures[kind] = {"wall_seconds": round(timing.wall_seconds, 2),
                         "compute_seconds": round(timing.compute_seconds, 2),
                         "orchestration_seconds": round(timing.orchestration_seconds, 2),
                         "seconds_per_day": round(timing.wall_seconds / len(days), 2)}
    baseline = figures["in-memory"]["wall_seconds"]
    print(f"replay of {len(days)} days (daily job: tables, features), wall time against the in-memory instance")
    print(f"{'instance':18} {'s/day':>6} {'compute':>8} {'orchestr.':>9} {'x in-memory':>11}")
    for kind, figure in figures.items():
        figure["ratio_to_in_memory"] = round(figure["wall_seconds"] / baseline, 2)
        print(f"{kind:18} {figure['seconds_per_day']:6.2f} {figure['compute_seconds']:8.1f} "
              f"{figure['orchestration_seconds']:9.1f} {figure['ratio_to_in_memory']:11.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"days": len(days), "machine": platform.node(), "cpus": os.cpu_count(),
                                   "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
