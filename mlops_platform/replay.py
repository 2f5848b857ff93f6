"""Replay a use case day by day, as its schedules and sensors would have run it, into a Dagster instance.

Each day lands its files and runs the daily job (tables, features, the champion's predictions and monitoring,
with every check). After the bootstrap days the training job makes a first champion; from then on, after every
day, the retraining sensor is evaluated on the same instance and each run it requests is executed, tagged as the
daemon would tag it: real drift fails a check, the sensor retrains, the gate decides, the endpoints follow. The
UI shows the same history afterwards, and a daemon started later treats those requests as already handled.

This is what the README's main command runs.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from mlops_platform import names
from mlops_platform.defs.stages import monitoring_key
from mlops_platform.errors import describe_error
from mlops_platform.landing import land_day, load_source_data
from mlops_platform.ml.gate import CHAMPION
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.settings import Settings, UseCaseConfig

# Runs are logged in full to the instance (and the UI); the terminal gets one line per day instead.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
SNAPSHOT_REFRESH_DAYS = 7
BOOTSTRAP_TAG = "mlops/bootstrap"
# The tags the daemon puts on a sensor's runs; a daemon started after the replay skips run keys it finds there.
SENSOR_NAME_TAG = "dagster/sensor_name"
RUN_KEY_TAG = "dagster/run_key"


@dataclass
class RunTiming:
    """Wall time of a run, and the part of it spent inside steps: the rest is orchestration."""

    wall_seconds: float = 0.0
    compute_seconds: float = 0.0

    def add(self, other: RunTiming) -> None:
        self.wall_seconds += other.wall_seconds
        self.compute_seconds += other.compute_seconds

    @property
    def orchestration_seconds(self) -> float:
        return max(0.0, self.wall_seconds - self.compute_seconds)


@dataclass(frozen=True)
class Progress:
    """Where a replay stands after a day: days done and left, and when it should end at the recent pace."""

    done: int
    left: int
    elapsed_seconds: float
    eta_seconds: float | None

    def describe(self) -> str:
        eta = "" if self.eta_seconds is None else f", about {_duration(self.eta_seconds)} left"
        return f"{self.done}/{self.done + self.left} days, {_duration(self.elapsed_seconds)} so far{eta}"


# The estimate follows the last days' pace: days cost more once a champion scores and is monitored.
ETA_WINDOW_DAYS = 14


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def progress_after(day_seconds: list[float], total_days: int) -> Progress:
    """Progress once ``day_seconds`` (wall seconds of each day done, in order) of ``total_days`` are done."""
    done, left = len(day_seconds), total_days - len(day_seconds)
    recent = day_seconds[-ETA_WINDOW_DAYS:]
    eta = left * sum(recent) / len(recent) if recent else None
    return Progress(done, left, sum(day_seconds), eta if left else 0.0)


@dataclass
class DayOutcome:
    day: dt.date
    success: bool
    checks: Counter = field(default_factory=Counter)
    failed_checks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    drift_share: float | None = None
    quality: float | None = None
    scored_by: str | None = None
    champion: str | None = None
    retraining: str = ""
    timing: RunTiming = field(default_factory=RunTiming)
    progress: Progress | None = None


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """Each failed step with its error's whole cause chain: where it failed (file, line) and the reason beneath."""
    return [f"{event.step_key}: {describe_error(event.event_specific_data.error)}"
            for event in result.get_step_failure_events()]


def _record_checks(result: dg.ExecuteInProcessResult, outcome: DayOutcome) -> None:
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.event_specific_data
        outcome.checks["passed" if evaluation.passed else "failed"] += 1
        if not evaluation.passed:
            outcome.failed_checks.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")


def _materialization_metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, object]:
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION" and event.asset_key == key:
            return {name: value.value for name, value in event.event_specific_data.materialization.metadata.items()}
    return {}


def _execute(job: dg.JobDefinition, instance: dg.DagsterInstance, **kwargs) -> tuple[dg.ExecuteInProcessResult,
                                                                                     RunTiming]:
    started = time.perf_counter()
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET, **kwargs)
    compute_ms = sum(event.event_specific_data.duration_ms for event in result.all_events
                     if event.event_type_value == "STEP_SUCCESS")
    return result, RunTiming(time.perf_counter() - started, compute_ms / 1000)


class Replay:
    """One replay of a use case into an instance: the jobs, the retraining sensor and its cursor."""

    def __init__(self, settings: Settings, usecase: UseCaseConfig, definitions: dg.Definitions,
                 instance: dg.DagsterInstance) -> None:
        self.settings, self.usecase, self.definitions, self.instance = settings, usecase, definitions, instance
        self.daily = self._job(names.daily_job(usecase.name))
        self.snapshot = self._job(names.snapshot_job(usecase.name))
        self.training = self._job(names.training_job(usecase.name))
        self.sensor = (definitions.resolve_sensor_def(names.retraining_sensor(usecase.name))
                       if self.training and usecase.monitoring else None)
        self.sensor_cursor: str | None = None
        self.mlflow = definitions.resources["mlflow"]

    def _job(self, name: str) -> dg.JobDefinition | None:
        jobs = {job.name for job in self.definitions.jobs or []}
        return self.definitions.resolve_job_def(name) if name in jobs else None

    def champion(self) -> str | None:
        monitored = self.usecase.monitoring.model if self.usecase.monitoring else next(iter(self.usecase.models))
        return self.mlflow.alias_version(self.usecase.models[monitored].registered_name, CHAMPION)

    def day(self, index: int, day: dt.date, data, bootstrap_days: int) -> DayOutcome:
        land_day(self.usecase, self.settings.landing_dir, day, data)
        timing = RunTiming()
        snapshot_tags = {names.SNAPSHOT_DAY_TAG: day.isoformat()}
        if self.daily is None:
            # A use case of snapshots: each day's snapshot is the day's work.
            result, spent = _execute(self.snapshot, self.instance, tags=snapshot_tags)
        else:
            if self.snapshot is not None and index % SNAPSHOT_REFRESH_DAYS == 0:
                refreshed, spent = _execute(self.snapshot, self.instance, tags=snapshot_tags)
                timing.add(spent)
                if not refreshed.success:
                    return DayOutcome(day=day, success=False, errors=failure_messages(refreshed), timing=timing)
            result, spent = _execute(self.daily, self.instance, partition_key=day.isoformat())
        timing.add(spent)
        outcome = DayOutcome(day=day, success=result.success, errors=failure_messages(result), timing=timing)
        _record_checks(result, outcome)
        if self.usecase.monitoring:
            monitored = _materialization_metadata(result, monitoring_key(self.usecase, self.usecase.monitoring.model))
            outcome.drift_share = monitored.get("drift_share")
            quality = monitored.get(self.usecase.monitoring.quality_metric)
            outcome.quality = None if quality is None or math.isnan(quality) else float(quality)
            outcome.scored_by = monitored.get("model_version")
        if outcome.success and self.training is not None:
            if self.champion() is None:
                if index + 1 >= bootstrap_days:
                    self._train(outcome, {BOOTSTRAP_TAG: "true"}, "first champion")
            elif self.sensor is not None:
                self._evaluate_sensor(outcome)
        outcome.champion = self.champion()
        return outcome

    def _evaluate_sensor(self, outcome: DayOutcome) -> None:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.sensor_cursor,
                                          definitions=self.definitions)
        requests = list(self.sensor(context))
        self.sensor_cursor = context.cursor
        for request in requests:
            tags = {**request.tags, SENSOR_NAME_TAG: self.sensor.name, RUN_KEY_TAG: request.run_key}
            self._train(outcome, tags, f"{request.tags.get('mlops/retraining_trigger', 'sensor')}")

    def _train(self, outcome: DayOutcome, tags: dict[str, str], reason: str) -> None:
        before = self.champion()
        result, spent = _execute(self.training, self.instance, tags=tags)
        outcome.timing.add(spent)
        after = self.champion()
        _record_checks(result, outcome)
        outcome.errors += failure_messages(result)
        if after is not None and after != before:
            verdict = f"champion v{before} -> v{after}" if before else f"champion v{after}"
        else:
            verdict = f"gate kept champion v{before}"
        outcome.retraining = f"retrained ({reason}): {verdict}"


def succeeded(outcomes: list[DayOutcome]) -> bool:
    """Whether a replay went through: every daily run succeeded and no training run failed. A failed retraining
    does not stop the days (the champion keeps scoring, as under the daemon), but the replay must not report success.
    """
    return all(outcome.success and not outcome.errors for outcome in outcomes)


def replay(
    settings: Settings,
    usecase: UseCaseConfig,
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    days: list[dt.date],
    progress: Callable[[DayOutcome], None] = lambda _: None,
    *,
    bootstrap_days: int | None = None,
) -> list[DayOutcome]:
    """Land and process each day in order; stop at the first day whose run fails (later days would build on it).

    Reference snapshots are refreshed on the first day and then weekly, as their schedule would. With
    ``bootstrap_days`` (and models configured) the first champion is trained after that many days, and the
    retraining loop runs after every later day; without it only the daily job runs.
    """
    runner = Replay(settings, usecase, definitions, instance)
    data = load_source_data(usecase)
    outcomes = []
    day_seconds: list[float] = []
    for index, day in enumerate(days):
        started = time.perf_counter()
        outcome = runner.day(index, day, data, bootstrap_days if bootstrap_days is not None else len(days) + 1)
        day_seconds.append(time.perf_counter() - started)
        outcome.progress = progress_after(day_seconds, len(days))
        outcomes.append(outcome)
        progress(outcome)
        if not outcome.success:
            break
    return outcomes


def layer_counts(warehouse: Warehouse, usecase: UseCaseConfig) -> dict[str, int]:
    """Rows per layer across the use case's tables, as they stand in the warehouse."""
    def rows(layer: str, table: str) -> int:
        return warehouse.row_count(*names.table(usecase.name, layer, table))

    return {
        names.BRONZE: sum(rows(names.BRONZE, name) for name in usecase.sources),
        names.SILVER: sum(rows(names.SILVER, name) for name in usecase.sources),
        "quarantine": sum(rows(names.SILVER, names.quarantine(name)) for name in usecase.sources),
        names.GOLD: sum(rows(names.GOLD, table) for table in usecase.gold),
    }


@dataclass
class ChampionSummary:
    model: str
    version: str | None
    metrics: dict[str, float]


def champions(usecase: UseCaseConfig, definitions: dg.Definitions) -> list[ChampionSummary]:
    """Each model's champion version now, with the test metrics of the run that trained it."""
    mlflow = definitions.resources["mlflow"]
    summaries = []
    for config in usecase.models.values():
        version = mlflow.alias_version(config.registered_name, CHAMPION)
        if version is None:
            summaries.append(ChampionSummary(config.registered_name, None, {}))
            continue
        client = mlflow.client()
        metrics = client.get_run(client.get_model_version(config.registered_name, version).run_id).data.metrics
        summaries.append(ChampionSummary(config.registered_name, version,
                                         {name: value for name, value in sorted(metrics.items())
                                          if name.startswith("test_")}))
    return summaries
