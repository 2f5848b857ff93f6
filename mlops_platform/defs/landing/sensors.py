"""Data-aware triggers: a day is processed when its files have landed, not when a clock says so.

The sensor requests the daily job for each day whose daily sources have all landed and that gold has not yet
materialized, and the reference job when a newer snapshot lands. Run keys carry the files' modification times,
so a day is requested once per set of files: a failed day is retried when its files are landed again, not on
every tick. The files are those the landing zone lists (``LandingZone.files``): a folder here, a volume through the
Files API when the orchestrator runs outside a Databricks environment's workspace.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import dagster as dg

from mlops_platform.resources.landing_zone import LandedFile, LandingZone
from mlops_platform.settings import SourceConfig, UseCaseConfig

MAX_DAYS_PER_TICK = 31


def _signature(files: list[LandedFile]) -> str:
    text = "|".join(f"{file.name}:{file.modified}" for file in sorted(files, key=lambda file: file.name))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _exports(landing: LandingZone, usecase: UseCaseConfig, name: str, spec: SourceConfig) -> list[LandedFile]:
    """The source's export files (``<source>_<day>*.<ext>``), by name, so by day."""
    return [file for file in landing.files(usecase.name, name)
            if file.name.startswith(f"{name}_") and file.name.endswith(f".{spec.format}")]


def landed_days(landing: LandingZone, usecase: UseCaseConfig) -> dict[dt.date, list[LandedFile]]:
    """Days for which every daily source has at least one file, with those files."""
    per_source = {}
    for name, spec in usecase.daily_sources.items():
        days: dict[dt.date, list[LandedFile]] = {}
        for file in _exports(landing, usecase, name, spec):
            try:
                day = dt.date.fromisoformat(file.name.removeprefix(f"{name}_")[:10])
            except ValueError:
                continue
            days.setdefault(day, []).append(file)
        per_source[name] = days
    complete = set.intersection(*(set(days) for days in per_source.values())) if per_source else set()
    return {day: [file for days in per_source.values() for file in days[day]] for day in sorted(complete)}


def latest_snapshots(landing: LandingZone, usecase: UseCaseConfig) -> list[LandedFile] | None:
    """The newest file of every snapshot source, or None while one of them has none."""
    latest = [_exports(landing, usecase, name, spec)[-1:] for name, spec in usecase.snapshot_sources.items()]
    return [files[0] for files in latest] if latest and all(latest) else None


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
        snapshots = latest_snapshots(landing, usecase)
        if snapshots:
            yield dg.RunRequest(run_key=f"reference:{_signature(snapshots)}", job_name=reference.name)
        materialized = context.instance.get_materialized_partitions(done_key) if done_key else set()
        pending = [(day, files) for day, files in landed_days(landing, usecase).items()
                   if day.isoformat() not in materialized]
        for day, files in pending[:MAX_DAYS_PER_TICK]:
            yield dg.RunRequest(run_key=f"{day}:{_signature(files)}", partition_key=day.isoformat(),
                                job_name=daily.name)

    return sensor

