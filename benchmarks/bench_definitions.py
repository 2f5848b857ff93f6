"""Building the definitions, per use case: each shipped use case alone and all of them together.

    python -m benchmarks.bench_definitions [--repeats 5]

In one warm process (imports paid before the clock starts) each figure is the median of ``--repeats`` builds of
``build_definitions`` followed by resolving the whole asset graph, as loading the code location does. The
baseline, built and resolved the same way in the same run, is a ``Definitions`` of as many no-op assets, checks
and jobs as the real one: what Dagster itself costs for a graph of that size. Issue 13 asks for at most 2 s per
use case with three enabled. Figures go to ``benchmarks/results/definitions.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from benchmarks.measure import LoadRecorder
from mlops_platform.defs import build_definitions
from mlops_platform.settings import Settings, load_settings

RESULTS = Path(__file__).resolve().parent / "results" / "definitions.json"


def built(build: Callable[[], dg.Definitions]) -> tuple[float, dg.Definitions]:
    clock = time.perf_counter()
    definitions = build()
    definitions.resolve_asset_graph()
    definitions.resolve_all_job_defs()
    return time.perf_counter() - clock, definitions


def noop_definitions(real: dg.Definitions) -> Callable[[], dg.Definitions]:
    """A graph of the real one's size: one no-op asset (with its checks) per asset key, one job per job."""
    graph = real.resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())
    checks = {key: [check.name for check in graph.get(key).check_keys] for key in keys}
    jobs = len(real.resolve_all_job_defs())

    def build() -> dg.Definitions:
        assets = [_asset(key) for key in keys]
        asset_checks = [_check(key, name) for key in keys for name in checks[key]]
        return dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=[
            dg.define_asset_job(f"job_{index}", selection=keys[index % len(keys):][:5]) for index in range(jobs)])

    return build


def _asset(key: dg.AssetKey) -> dg.AssetsDefinition:
    @dg.asset(key=key)
    def noop() -> None:
        return None

    return noop


def _check(key: dg.AssetKey, name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=key, name=name)
    def noop() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    return noop


def measure(settings: Settings, names: list[str], repeats: int) -> dict:
    only = settings.model_copy(update={"usecases": {name: settings.usecases[name] for name in names}})
    runs = [built(lambda: build_definitions(only)) for _ in range(repeats)]
    definitions = runs[0][1]
    floors = [built(noop_definitions(definitions))[0] for _ in range(repeats)]
    graph = definitions.resolve_asset_graph()
    seconds = statistics.median(run[0] for run in runs)
    return {"usecases": names, "seconds": seconds, "seconds_per_usecase": seconds / len(names),
            "noop_seconds": statistics.median(floors), "assets": len(list(graph.get_all_asset_keys())),
            "jobs": len(definitions.resolve_all_job_defs())}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    settings = load_settings("local")
    shipped = list(settings.usecases)
    with LoadRecorder() as load:
        built(lambda: build_definitions(settings))  # warms imports and caches outside the clock
        figures = [measure(settings, [name], args.repeats) for name in shipped]
        figures.append(measure(settings, shipped, args.repeats))
    print(f"{'use cases':40} {'assets':>6} {'jobs':>4} {'seconds':>8} {'per use case':>12} {'x no-op graph':>13}")
    for figure in figures:
        print(f"{', '.join(figure['usecases']):40} {figure['assets']:6} {figure['jobs']:4} {figure['seconds']:8.2f} "
              f"{figure['seconds_per_usecase']:12.2f} {figure['seconds'] / figure['noop_seconds']:13.1f}")
    print(f"machine load (1-minute average) during the run: {load.summary()}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(), "load": load.as_dict(),
                                   "figures": figures}, indent=2))
    return figures


if __name__ == "__main__":
    main()
