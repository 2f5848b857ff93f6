"""What the replay and start-up benchmarks share: a data folder with a champion, the orchestrator's floor, and the
windows of a run's steps.

- ``benchmark_settings``: the local environment with all data (and the Dagster home) in one folder, the serving
  process on a free port, and optionally a smaller tuning budget or training window;
- ``bootstrap``: land the days, load the reference tables, run the daily job over the first days as one ranged run
  (as a backfill does), then the training job: a first champion, registered, promoted and served;
- ``noop_twin``: the same job's graph (assets, dependencies, checks, partitions) with bodies that do nothing: the
  orchestrator's floor for that job;
- ``step_windows``: when each step of a run started and ended, and the stage (asset group) it belongs to.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from benchmarks.profiling import Window
from mlops_platform import names
from mlops_platform.instance import ensure_home, persistent_instance
from mlops_platform.landing import day_range, land_days
from mlops_platform.replay import QUIET, failure_messages
from mlops_platform.settings import DATA_DIR_ENV, SERVING_PORT_ENV, ModelConfig, Settings, load_settings

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
NOOP_PREFIX = "noop"


def benchmark_settings(folder: Path, usecase_name: str, *, trials: int | None = None,
                       window_days: int | None = None) -> Settings:
    """The local environment with data under ``folder``; ``trials``/``window_days`` shrink the training budget."""
    os.environ[DATA_DIR_ENV] = str(folder / "data")
    os.environ[SERVING_PORT_ENV] = "0"
    os.environ["DAGSTER_HOME"] = str(folder / "dagster_home")
    ensure_home()
    settings = load_settings("local")
    usecase = settings.usecases[usecase_name]
    if trials is not None:
        usecase = usecase.model_copy(update={"models": {name: _with_trials(config, trials)
                                                        for name, config in usecase.models.items()}})
    if window_days is not None:
        spec = usecase.training_set
        usecase = usecase.model_copy(update={"training_set": spec.model_copy(
            update={"split": spec.split.model_copy(update={"window_days": window_days})})})
    return settings.model_copy(update={"usecases": {**settings.usecases, usecase_name: usecase}})


def _with_trials(config: ModelConfig, trials: int) -> ModelConfig:
    tuning = {**config.tuning.model_dump(), "max_trials": trials}
    return ModelConfig.model_validate({**config.model_dump(), "tuning": tuning})


def open_instance() -> dg.DagsterInstance:
    """The persistent SQLite instance under ``DAGSTER_HOME``, opened as ``mlops run`` opens it (no fsync)."""
    return persistent_instance(durable=False)


def run_seconds(job: dg.JobDefinition, instance: dg.DagsterInstance, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` runs of ``job`` (a no-op twin, as a rule: the orchestrator's floor)."""
    seconds = []
    for _ in range(repeats):
        clock = time.perf_counter()
        execute(job, instance)
        seconds.append(time.perf_counter() - clock)
    return seconds


def execute(job: dg.JobDefinition, instance: dg.DagsterInstance, **kwargs) -> dg.ExecuteInProcessResult:
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET, **kwargs)
    if not result.success:
        raise RuntimeError(f"{job.name} failed: {failure_messages(result)}")
    return result


@dataclass(frozen=True)
class Bootstrap:
    land_seconds: float
    backfill_seconds: float
    training_seconds: float
    champion: dict[str, str]


def backfill(definitions: dg.Definitions, settings: Settings, usecase_name: str, instance: dg.DagsterInstance,
             days: Sequence[dt.date]) -> None:
    """Reference tables, then the daily job over ``days`` as one ranged run."""
    usecase = settings.usecases[usecase_name]
    execute(definitions.resolve_job_def(names.snapshot_job(usecase.name)), instance)
    execute(definitions.resolve_job_def(names.daily_job(usecase.name)), instance,
            tags={RANGE_START_TAG: days[0].isoformat(), RANGE_END_TAG: days[-1].isoformat()})


def land(settings: Settings, usecase_name: str, first: dt.date, count: int) -> list[dt.date]:
    days = day_range(first, count)
    land_days(settings.usecases[usecase_name], settings.landing_dir, days)
    return days


def train(definitions: dg.Definitions, settings: Settings, usecase_name: str, instance: dg.DagsterInstance,
          **kwargs) -> dg.ExecuteInProcessResult:
    return execute(definitions.resolve_job_def(names.training_job(usecase_name)), instance,
                   **kwargs)


def _nodes(definitions: dg.Definitions, job: dg.JobDefinition) -> dict[str, dg.AssetsDefinition]:
    """Each step (node) of an asset job and the definition it executes: assets with their checks, or checks alone."""
    by_node = {assets.node_def.name: assets for assets in definitions.resolve_asset_graph().assets_defs
               if assets.is_executable}
    return {node.name: by_node[node.name] for node in job.graph.nodes}


def step_stages(definitions: dg.Definitions, job: dg.JobDefinition) -> dict[str, str]:
    """Each step of an asset job and the asset group it works on (bronze, silver, ..., monitoring); a step of
    checks alone is ``<group> checks`` after the assets it checks (the champion gate: ``training checks``)."""
    graph = definitions.resolve_asset_graph()
    stages = {}
    for name, assets in _nodes(definitions, job).items():
        keys = list(assets.keys) or [check.asset_key for check in assets.check_specs]
        group = "/".join(sorted({graph.get(key).group_name for key in keys}))
        stages[name] = group if assets.keys else f"{group} checks"
    return stages


def step_windows(instance: dg.DagsterInstance, run_id: str, stages: dict[str, str]) -> list[Window]:
    """The wall-clock window of each step of a run, from the run's own step events."""
    events = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
                                                dg.DagsterEventType.STEP_FAILURE})
    starts, windows = {}, []
    for event in events:
        if event.dagster_event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = event.timestamp
        elif event.step_key in starts:
            step = event.step_key
            windows.append(Window(stages.get(step, step), starts.pop(step), event.timestamp))
    return windows


def noop_twin(definitions: dg.Definitions, job: dg.JobDefinition) -> dg.JobDefinition:
    """``job``'s graph with bodies that only report their assets and passing checks: the same steps, assets and
    checks, the same dependencies between them and the same partitions, under keys prefixed ``noop/`` so their
    history stays apart from the real assets'."""
    selected = set(job.asset_layer.selected_asset_keys)

    def twin_key(key: dg.AssetKey) -> dg.AssetKey:
        return key.with_prefix(NOOP_PREFIX)

    twins = []
    for name, assets in sorted(_nodes(definitions, job).items()):
        specs = [spec.replace_attributes(key=twin_key(spec.key),
                                         deps=[twin_key(dep.asset_key) for dep in spec.deps
                                               if dep.asset_key in selected])
                 for spec in assets.specs if spec.key in selected]
        checks = [dg.AssetCheckSpec(check.name, asset=twin_key(check.asset_key), blocking=check.blocking)
                  for check in assets.check_specs]
        twins.append(_noop_assets(name, specs, checks, assets.partitions_def) if specs else _noop_checks(name, checks))
    twin_job = f"{NOOP_PREFIX}_{job.name}"
    twin_definitions = dg.Definitions(
        assets=[twin for twin in twins if isinstance(twin, dg.AssetsDefinition) and twin.keys],
        asset_checks=[twin for twin in twins if not twin.keys],
        jobs=[dg.define_asset_job(twin_job, selection=dg.AssetSelection.assets(*map(twin_key, selected)),
                                  partitions_def=job.partitions_def, executor_def=dg.in_process_executor)])
    return twin_definitions.resolve_job_def(twin_job)


def _noop_assets(name: str, specs: list[dg.AssetSpec], checks: list[dg.AssetCheckSpec],
                 partitions: dg.PartitionsDefinition | None) -> dg.AssetsDefinition:
    @dg.multi_asset(name=f"{NOOP_PREFIX}_{name}", specs=specs, check_specs=checks, partitions_def=partitions)
    def noop():
        for spec in specs:
            yield dg.MaterializeResult(asset_key=spec.key)
        for check in checks:
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)

    return noop


def _noop_checks(name: str, checks: list[dg.AssetCheckSpec]) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(name=f"{NOOP_PREFIX}_{name}", specs=checks)
    def noop():
        for check in checks:
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)

    return noop


def one_fit_seconds(config, frame, features) -> float:
    """One fit of the model's pipeline on the train split at the middle of its space, on one thread: the unit every
    trial and the refit cost."""
    from threadpoolctl import threadpool_limits

    from mlops_platform.ml.training import build_pipeline, search_space, split

    train = split(frame, config).train
    middle = {name: (low + high) / 2 if isinstance(low, float) else (low + high) // 2
              for name, (low, high) in search_space(config).items()}
    pipeline = build_pipeline(config, features, middle, config.tuning.seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        clock = time.perf_counter()
        pipeline.fit(train[features], train[config.label])
        return time.perf_counter() - clock


class LoadSampler:
    """The 1-minute load average every ``every`` seconds on a thread: over the whole run and since a mark."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._mark = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="load-sampler", daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.every):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def mark(self) -> None:
        self._mark = len(self.samples)

    def since_mark(self) -> dict[str, float]:
        return self.summary(self.samples[self._mark:] or self.samples[-1:] or [os.getloadavg()[0]])

    def summary(self, samples: list[float] | None = None) -> dict[str, float]:
        chosen = (self.samples if samples is None else samples) or [os.getloadavg()[0]]
        return {"mean": statistics.fmean(chosen), "min": min(chosen), "max": max(chosen), "samples": len(chosen)}
