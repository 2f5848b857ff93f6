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


def latest_snapshots(listing: Listing, usecase: UseCaseConfig) -> list[LandedFile] | None:
    """The newest export of every snapshot source, or None while one of them has none."""
    latest = [newest_snapshot(listing[name][0]) for name in usecase.snapshot_sources]
    if not latest or None in latest:
        return None
    return [LandedFile(export.name, export.modified) for export in latest]


def landing_sensor(usecase: UseCaseConfig, daily: dg.UnresolvedAssetJobDefinition,
                   reference: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    done_key = dg.AssetKey(["gold", next(iter(usecase.gold))]) if usecase.gold else None

    @dg.sensor(
        name=f"{usecase.name}_landing_sensor",
        jobs=[daily, reference],
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Runs {daily.name} for each newly landed day of {usecase.name} and {reference.name} when a "
                    "new reference snapshot lands.",
    )
    def sensor(context: dg.SensorEvaluationContext, landing: LandingZone):
        listing = list_landing(landing, usecase)
        for name, (_, strays) in listing.items():
            if strays:
                context.log.warning(f"{name}: {strays} not read: the names do not follow {NAMING_CONVENTION}")
        snapshots = latest_snapshots(listing, usecase)
        if snapshots:
            yield dg.RunRequest(run_key=f"reference:{_signature(snapshots)}", job_name=reference.name)
        materialized = context.instance.get_materialized_partitions(done_key) if done_key else set()
        pending = [(day, files) for day, files in landed_days(listing, usecase).items()
                   if day.isoformat() not in materialized]
        for day, files in pending[:MAX_DAYS_PER_TICK]:
            yield dg.RunRequest(run_key=f"{day}:{_signature(files)}", partition_key=day.isoformat(),
                                job_name=daily.name)

    return sensor

