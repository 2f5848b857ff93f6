"""Data-aware triggers: a day is processed when its files have landed, not when a clock says so.

The sensor requests the daily job for each day whose daily sources have all landed and that gold has not yet
materialized, and the reference job when a newer snapshot lands. Run keys carry the files' modification times,
so a day is requested once per set of files: a failed day is retried when its files are landed again, not on
every tick.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import dagster as dg

from mlops_platform.landing import files_for_day, latest_snapshot, source_dir
from mlops_platform.resources.landing_zone import LandingZone
from mlops_platform.settings import UseCaseConfig

MAX_DAYS_PER_TICK = 31


def _signature(paths) -> str:
    text = "|".join(f"{path.name}:{path.stat().st_mtime_ns}" for path in sorted(paths))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def landed_days(landing: LandingZone, usecase: UseCaseConfig) -> dict[dt.date, list]:
    """Days for which every daily source has at least one file, with those files."""
    per_source = {}
    for name, spec in usecase.daily_sources.items():
        days = {}
        for path in source_dir(landing.path, usecase.name, name).glob(f"{name}_*"):
            try:
                day = dt.date.fromisoformat(path.stem.removeprefix(f"{name}_")[:10])
            except ValueError:
                continue
            days.setdefault(day, []).extend(files_for_day(landing.path, usecase.name, name, spec, day))
        per_source[name] = days
    complete = set.intersection(*(set(days) for days in per_source.values())) if per_source else set()
    return {day: [path for days in per_source.values() for path in days[day]] for day in sorted(complete)}


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
        snapshots = [latest_snapshot(landing.path, usecase.name, name, spec)
                     for name, spec in usecase.snapshot_sources.items()]
        if snapshots and all(snapshots):
            yield dg.RunRequest(run_key=f"reference:{_signature(snapshots)}", job_name=reference.name)
        materialized = context.instance.get_materialized_partitions(done_key) if done_key else set()
        pending = [(day, files) for day, files in landed_days(landing, usecase).items()
                   if day.isoformat() not in materialized]
        for day, files in pending[:MAX_DAYS_PER_TICK]:
            yield dg.RunRequest(run_key=f"{day}:{_signature(files)}", partition_key=day.isoformat(),
                                job_name=daily.name)

    return sensor

