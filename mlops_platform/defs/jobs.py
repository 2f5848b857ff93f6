"""Jobs a person, schedule or sensor launches by name.

The daily job holds only day-partitioned assets; reference snapshots (planes, airlines, ...) change rarely and
have their own job, so a day's run does not re-ingest them.
"""

from __future__ import annotations

import dagster as dg

from mlops_platform.defs.inference.assets import predictions_key
from mlops_platform.defs.monitoring.assets import monitoring_key
from mlops_platform.defs.tables import daily_partitions
from mlops_platform.settings import UseCaseConfig


def daily_job_name(usecase: UseCaseConfig) -> str:
    return f"{usecase.name}_daily"


def reference_job_name(usecase: UseCaseConfig) -> str:
    return f"{usecase.name}_reference"


def _table_keys(usecase: UseCaseConfig, *, daily: bool) -> list[dg.AssetKey]:
    sources = usecase.daily_sources if daily else usecase.snapshot_sources
    keys = [dg.AssetKey([layer, name]) for name in sources for layer in ("bronze", "silver")]
    keys += [dg.AssetKey(["silver", f"{name}_quarantine"]) for name in sources]
    if daily:
        keys += [dg.AssetKey(["gold", table]) for table in usecase.gold]
        if usecase.training_set:
            keys += [predictions_key(name) for name in usecase.models]
        if usecase.monitoring:
            keys.append(monitoring_key(usecase.monitoring.model))
    keys += [
        dg.AssetKey(["features", name])
        for name, spec in usecase.features.items()
        if (spec.kind == "rolling" or usecase.sources[spec.source].is_daily) == daily
    ]
    return keys


def daily_job(usecase: UseCaseConfig) -> dg.UnresolvedAssetJobDefinition:
    """A day's work: bronze -> silver -> gold -> feature tables -> the champion's predictions -> monitoring, with
    every check. Scoring and monitoring skip themselves until a first champion exists.

    In-process: a day's steps are small, and a process per step (the multiprocess executor) would spend more on
    spawning and importing than on the work.
    """
    return dg.define_asset_job(
        daily_job_name(usecase),
        selection=dg.AssetSelection.assets(*_table_keys(usecase, daily=True)),
        partitions_def=daily_partitions(usecase),
        executor_def=dg.in_process_executor,
        description=f"One day of the {usecase.name} use case, landing files to feature tables, scored and "
                    "monitored, guarded by checks.",
    )


def reference_job(usecase: UseCaseConfig) -> dg.UnresolvedAssetJobDefinition:
    """Reference snapshots (bronze, silver and their lookup feature tables) from the newest landed export."""
    return dg.define_asset_job(
        reference_job_name(usecase),
        selection=dg.AssetSelection.assets(*_table_keys(usecase, daily=False)),
        description=f"Refresh the {usecase.name} use case's reference tables from their newest snapshot.",
    )


def freshness_keys(usecase: UseCaseConfig) -> list[dg.AssetKey]:
    """The daily tables whose freshness is checked: silver of each daily source, and gold."""
    return [dg.AssetKey(["silver", name]) for name in usecase.daily_sources] + [
        dg.AssetKey(["gold", table]) for table in usecase.gold]


def schedules(usecase: UseCaseConfig, daily: dg.UnresolvedAssetJobDefinition,
              reference: dg.UnresolvedAssetJobDefinition) -> list[dg.ScheduleDefinition]:
    """Wall-clock cadence for live data: yesterday's partition every morning, reference tables every Monday, the
    freshness checks every hour.

    Stopped by default: replayed history arrives through the landing sensor, not the calendar.
    """
    freshness = dg.define_asset_job(
        f"{usecase.name}_freshness",
        selection=dg.AssetSelection.checks(*(dg.AssetCheckKey(key, "freshness") for key in freshness_keys(usecase))),
        description=f"Evaluate the freshness checks of the {usecase.name} use case's daily tables.",
    )
    return [
        dg.ScheduleDefinition(job=freshness, cron_schedule="0 * * * *", default_status=dg.DefaultScheduleStatus.STOPPED),
        dg.build_schedule_from_partitioned_job(daily, hour_of_day=2, default_status=dg.DefaultScheduleStatus.STOPPED),
        dg.ScheduleDefinition(name=f"{reference_job_name(usecase)}_weekly", job=reference, cron_schedule="0 1 * * 1",
                              default_status=dg.DefaultScheduleStatus.STOPPED),
    ]
