"""Data-aware triggers: a day is processed when its files have landed, not when a clock says so.

The sensor requests the daily job for each day whose daily sources have all landed and that gold has not yet
materialized, and the reference job when a newer snapshot lands. Run keys carry the files' modification times,
so a day is requested once per set of files: a failed day is retried when its files are landed again, not on
every tick. The files are those the landing zone lists (``LandingZone.files``): a folder here, a volume through the
Files API when the orchestrator runs outside a Databricks environment's workspace. Files whose names break the
landing convention (``mlops_platform.landing``) never make a day landed; each tick logs them.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import dagster as dg

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.landing import NAMING_CONVENTION, Export, newest_snapshot, sort_exports
from mlops_platform.resources.landing_zone import LandedFile, LandingZone
from mlops_platform.settings import UseCaseConfig

MAX_DAYS_PER_TICK = 31


def _signature(files: list[LandedFile]) -> str:
    text = "|".join(f"{file.name}:{file.modified}" for file in sorted(files, key=lambda file: file.name))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


Listing = dict[str, tuple[list[Export], list[str]]]


def list_landing(landing: LandingZone, usecase: UseCaseConfig) -> Listing:
    """Per source, its exports in landing order and the names that break the convention (never read); each
    source's folder is listed once."""
    return {name: sort_exports(((file.name, file.modified) for file in landing.files(usecase.name, name)), name, spec)
            for name, spec in usecase.sources.items()}


def landed_days(listing: Listing, usecase: UseCaseConfig) -> dict[dt.date, list[LandedFile]]:
    """Days for which every daily source has at least one export, with those exports."""
    per_source = {}
    for name in usecase.daily_sources:
        days: dict[dt.date, list[LandedFile]] = {}
        for export in listing[name][0]:
            days.setdefault(export.day, []).append(LandedFile(export.name, export.modified))
        per_source[name] = days
    complete = set.intersection(*(set(days) for days in per_source.values())) if per_source else set()
    return {day: [file for days in per_source.values() for file in days[day]] for day in sorted(complete)}


def latest_snapshots(listing: Listing, usecase: UseCaseConfig) -> list[Export] | None:
    """The newest export of every snapshot source, or None while one of them has none."""
    latest = [newest_snapshot(listing[name][0]) for name in usecase.snapshot_sources]
    if not latest or None in latest:
        return None
    return latest


def landing_sensor(usecase: UseCaseConfig, jobs: dict[str, dg.UnresolvedAssetJobDefinition]
                   ) -> dg.SensorDefinition:
    daily = jobs.get(names.daily_job(usecase.name))
    snapshot = jobs.get(names.snapshot_job(usecase.name))
    # A day is done once the last daily table of the use case holds it.
    done_key = next((stages.table_key(usecase, names.GOLD, table) for table, spec in reversed(usecase.gold.items())
                     if spec.is_daily), None)
    runs = " and ".join([*([f"{daily.name} for each newly landed day"] if daily else []),
                         *([f"{snapshot.name} when a new snapshot lands"] if snapshot else [])])

    @dg.sensor(
        name=names.landing_sensor(usecase.name),
        jobs=[job for job in (daily, snapshot) if job is not None],
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Runs {runs} ({usecase.name}).",
    )
    def sensor(context: dg.SensorEvaluationContext, landing: LandingZone):
        listing = list_landing(landing, usecase)
        for name, (_, strays) in listing.items():
            if strays:
                context.log.warning(f"{name}: {strays} not read: the names do not follow {NAMING_CONVENTION}")
        snapshots = latest_snapshots(listing, usecase) if snapshot else None
        if snapshots:
            files = [LandedFile(export.name, export.modified) for export in snapshots]
            # The run monitors (a use case of snapshots) under the day of the newest snapshot.
            newest = max(export.day for export in snapshots)
            yield dg.RunRequest(run_key=f"snapshot:{_signature(files)}", job_name=snapshot.name,
                                tags={names.SNAPSHOT_DAY_TAG: newest.isoformat()})
        if daily is None:
            return
        materialized = context.instance.get_materialized_partitions(done_key) if done_key else set()
        pending = [(day, files) for day, files in landed_days(listing, usecase).items()
                   if day.isoformat() not in materialized]
        for day, files in pending[:MAX_DAYS_PER_TICK]:
            yield dg.RunRequest(run_key=f"{day}:{_signature(files)}", partition_key=day.isoformat(),
                                job_name=daily.name)

    return sensor

