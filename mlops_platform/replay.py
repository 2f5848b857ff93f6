"""Replay a use case day by day: land the day's files, then run the day's job with its checks, as a schedule would.

This is what the README's main command runs; every run is recorded in the Dagster instance it is given, so the
UI shows the same history afterwards.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from mlops_platform.defs.jobs import daily_job_name, reference_job_name
from mlops_platform.landing import land_day, load_source_data
from mlops_platform.resources.warehouse import DeltaWarehouse
from mlops_platform.settings import Settings, UseCaseConfig


# Runs are logged in full to the instance (and the UI); the terminal gets one line per day instead.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
REFERENCE_REFRESH_DAYS = 7


@dataclass
class DayOutcome:
    day: dt.date
    success: bool
    checks: Counter = field(default_factory=Counter)
    failed_checks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """Each failed step with the innermost error message: the one written for a person, not Dagster's wrapper."""
    messages = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error.cause is not None:
            error = error.cause
        messages.append(f"{event.step_key}: {error.message.strip()}")
    return messages


def _check_outcomes(result: dg.ExecuteInProcessResult, outcome: DayOutcome) -> None:
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.event_specific_data
        outcome.checks["passed" if evaluation.passed else "failed"] += 1
        if not evaluation.passed:
            outcome.failed_checks.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")


def replay(
    settings: Settings,
    usecase: UseCaseConfig,
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    days: list[dt.date],
    progress: Callable[[DayOutcome], None] = lambda _: None,
) -> list[DayOutcome]:
    """Land and process each day in order; stop at the first day whose run fails (later days would build on it).

    Reference snapshots are refreshed on the first day and then weekly, as their schedule would.
    """
    daily = definitions.resolve_job_def(daily_job_name(usecase))
    reference = definitions.resolve_job_def(reference_job_name(usecase))
    data = load_source_data(usecase)
    outcomes = []
    for index, day in enumerate(days):
        land_day(usecase, settings.landing_dir, day, data)
        if index % REFERENCE_REFRESH_DAYS == 0:
            refreshed = reference.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
            if not refreshed.success:
                outcomes.append(DayOutcome(day=day, success=False, errors=failure_messages(refreshed)))
                progress(outcomes[-1])
                break
        result = daily.execute_in_process(
            partition_key=day.isoformat(), instance=instance, raise_on_error=False, run_config=QUIET
        )
        outcome = DayOutcome(day=day, success=result.success)
        outcome.errors = failure_messages(result)
        _check_outcomes(result, outcome)
        outcomes.append(outcome)
        progress(outcome)
        if not result.success:
            break
    return outcomes


def layer_counts(warehouse: DeltaWarehouse, usecase: UseCaseConfig) -> dict[str, int]:
    """Rows per layer across the use case's tables, as they stand in the warehouse."""
    rows = warehouse.row_count
    return {
        "bronze": sum(rows("bronze", name) for name in usecase.sources),
        "silver": sum(rows("silver", name) for name in usecase.sources),
        "quarantine": sum(rows("silver", f"{name}_quarantine") for name in usecase.sources),
        "gold": sum(rows("gold", table) for table in usecase.gold),
    }


@dataclass
class ChampionSummary:
    model: str
    version: str | None
    metrics: dict[str, float]


def train_and_promote(usecase: UseCaseConfig, definitions: dg.Definitions, instance: dg.DagsterInstance
                      ) -> tuple[dg.ExecuteInProcessResult, list[ChampionSummary]]:
    """Run the training job (training set, tuned models, gates, promotions) and read back each champion."""
    from mlflow.exceptions import MlflowException

    from mlops_platform.defs.training.assets import training_job_name
    from mlops_platform.ml.gate import CHAMPION

    result = definitions.resolve_job_def(training_job_name(usecase)).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET
    )
    client = definitions.resources["mlflow"].client()
    champions = []
    for config in usecase.models.values():
        try:
            version = client.get_model_version_by_alias(config.registered_name, CHAMPION)
        except MlflowException:
            champions.append(ChampionSummary(config.registered_name, None, {}))
            continue
        metrics = client.get_run(version.run_id).data.metrics
        champions.append(ChampionSummary(config.registered_name, version.version,
                                         {name: value for name, value in sorted(metrics.items())
                                          if name.startswith("test_")}))
    return result, champions
