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
import re

import dagster as dg

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.resources.landing_zone import LandedFile, LandingZone
from mlops_platform.settings import SourceConfig, UseCaseConfig

MAX_DAYS_PER_TICK = 31
DAY_IN_NAME = re.compile(r"\d{4}-\d{2}-\d{2}")


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


def snapshot_day(files: list[LandedFile]) -> str | None:
    """The day of the newest snapshot file, from its name (``<source>_<day>...``)."""
    days = [found.group() for file in files if (found := DAY_IN_NAME.search(file.name))]
    return max(days) if days else None


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
        snapshots = latest_snapshots(landing, usecase) if snapshot else None
        if snapshots:
            yield dg.RunRequest(run_key=f"snapshot:{_signature(snapshots)}", job_name=snapshot.name,
                                tags={names.SNAPSHOT_DAY_TAG: snapshot_day(snapshots)})
        if daily is None:
            return
        materialized = context.instance.get_materialized_partitions(done_key) if done_key else set()
        pending = [(day, files) for day, files in landed_days(landing, usecase).items()
                   if day.isoformat() not in materialized]
        for day, files in pending[:MAX_DAYS_PER_TICK]:
            yield dg.RunRequest(run_key=f"{day}:{_signature(files)}", partition_key=day.isoformat(),
                                job_name=daily.name)

    return sensor

