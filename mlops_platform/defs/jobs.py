"""Jobs a person, schedule or sensor launches by name, made from the stage registry (``defs.stages``).

- ``<usecase>_daily``: every day-partitioned asset of the tables and scoring stages, one day (or a range) at a time:
  bronze -> silver -> gold -> feature tables -> the champion's predictions -> monitoring. Not Evidently's full
  drift page: it is on demand (``stages.placement(..., on_demand=True)``), materialized from the UI for the days a
  person picks.
- ``<usecase>_snapshot``: the unpartitioned ones, run when a new snapshot lands: reference tables of a daily use case
  (planes, airlines, ...), or the whole table-to-monitoring flow of a use case of snapshots.
- ``<usecase>_training``: training set -> models -> gate -> champion -> online store -> endpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.tables import daily_partitions
from mlops_platform.settings import UseCaseConfig

DAILY_ROLES = ("tables", "scoring")


def _keys(assets: Sequence[dg.AssetsDefinition], roles: Sequence[str], *, partitioned: bool | None = None
          ) -> list[dg.AssetKey]:
    keys = []
    for assets_def in assets:
        if partitioned is not None and (assets_def.partitions_def is not None) != partitioned:
            continue
        keys += [spec.key for spec in assets_def.specs if not stages.is_on_demand(spec)
                 and (stage := stages.stage_of(spec)) is not None and stage.job in roles]
    return keys


def usecase_jobs(usecase: UseCaseConfig, assets: Sequence[dg.AssetsDefinition]
                 ) -> dict[str, dg.UnresolvedAssetJobDefinition]:
    """The use case's jobs by name; a job with no assets (a use case without models has no training) is left out."""
    jobs = {}
    daily = _keys(assets, DAILY_ROLES, partitioned=True)
    if daily:
        # In-process: a day's steps are small, and a process per step (the multiprocess executor) would spend more
        # on spawning and importing than on the work.
        jobs[names.daily_job(usecase.name)] = dg.define_asset_job(
            names.daily_job(usecase.name), selection=dg.AssetSelection.assets(*daily),
            partitions_def=daily_partitions(usecase), executor_def=dg.in_process_executor,
            description=f"One day of the {usecase.name} use case, landing files to feature tables, scored and "
                        "monitored, guarded by checks. Scoring and monitoring skip themselves until a first "
                        "champion exists.")
    snapshot = _keys(assets, DAILY_ROLES, partitioned=False)
    if snapshot:
        jobs[names.snapshot_job(usecase.name)] = dg.define_asset_job(
            names.snapshot_job(usecase.name), selection=dg.AssetSelection.assets(*snapshot),
            executor_def=dg.in_process_executor,
            description=f"The {usecase.name} use case's snapshot tables (and, for a use case of snapshots, its "
                        "features, scoring and monitoring) from the newest landed snapshot.")
    training = _keys(assets, ("training",))
    if training:
        # In-process too: under the multiprocess executor each step started a process that imported the platform
        # again, and the two models trained side by side, four fits on two cores: a launched run took 2.1x the
        # in-process one from the same state, with the same decisions (benchmarks/results/RETRAINING.md, section 5).
        jobs[names.training_job(usecase.name)] = dg.define_asset_job(
            names.training_job(usecase.name), selection=dg.AssetSelection.assets(*training),
            executor_def=dg.in_process_executor,
            description=f"Rebuild the {usecase.name} training set, train and register every model, gate each "
                        "against its champion (beats_champion) and promote the ones that pass, then redeploy the "
                        "serving endpoints: staging, its smoke_test, production.")
    if freshness := freshness_keys(usecase):
        # On demand; the daemon runs the same checks hourly through their automation condition.
        jobs[f"{usecase.name}_freshness"] = dg.define_asset_job(
            f"{usecase.name}_freshness",
            selection=dg.AssetSelection.checks(*(dg.AssetCheckKey(key, "freshness") for key in freshness)),
            description=f"Evaluate the freshness checks of the {usecase.name} use case's daily tables now.")
    return jobs


def freshness_keys(usecase: UseCaseConfig) -> list[dg.AssetKey]:
    """The daily tables whose freshness is checked: silver of each daily source, and daily gold."""
    return ([stages.source_key(usecase, names.SILVER, name) for name in usecase.daily_sources]
            + [stages.table_key(usecase, names.GOLD, table) for table, spec in usecase.gold.items() if spec.is_daily])


def schedules(usecase: UseCaseConfig, jobs: dict[str, dg.UnresolvedAssetJobDefinition]
              ) -> list[dg.ScheduleDefinition]:
    """Wall-clock cadence for live data: yesterday's partition every morning, snapshots every Monday.

    Stopped by default: replayed history arrives through the landing sensor, not the calendar. Freshness needs no
    schedule: the daemon evaluates the tables' freshness policies and runs the freshness checks by automation.
    """
    stopped = dg.DefaultScheduleStatus.STOPPED
    built = []
    if daily := jobs.get(names.daily_job(usecase.name)):
        built.append(dg.build_schedule_from_partitioned_job(daily, hour_of_day=2, default_status=stopped))
    if snapshot := jobs.get(names.snapshot_job(usecase.name)):
        built.append(dg.ScheduleDefinition(name=f"{snapshot.name}_weekly", job=snapshot, cron_schedule="0 1 * * 1",
                                           default_status=stopped))
    return built
