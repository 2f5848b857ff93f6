"""The landing zone: where a use case's daily exports arrive, one file per source per day.

``land_day`` replays a day of a use case's source data the way a real export would arrive (CSV or JSON lines, the
data's own warts kept). Bronze reads what is here and never changes it: the raw files stay as they came.

Layout: ``<landing>/<usecase>/<source>/<source>_<YYYY-MM-DD>.<csv|jsonl>``. Reference (snapshot) sources land a
full export each day; bronze takes the newest.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import polars as pl

from mlops_platform.settings import SourceConfig, UseCaseConfig, usecase_function

_POLARS_TYPES = {"int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean, "string": pl.String}


def source_dir(landing_dir: Path, usecase: str, source: str) -> Path:
    return landing_dir / usecase / source


def landing_file(landing_dir: Path, usecase: str, source: str, spec: SourceConfig, day: dt.date) -> Path:
    return source_dir(landing_dir, usecase, source) / f"{source}_{day.isoformat()}.{spec.format}"


def files_for_day(landing_dir: Path, usecase: str, source: str, spec: SourceConfig, day: dt.date) -> list[Path]:
    """Every file landed for ``day`` (a day may arrive in several parts: ``<source>_<day>*.<ext>``)."""
    pattern = f"{source}_{day.isoformat()}*.{spec.format}"
    return sorted(source_dir(landing_dir, usecase, source).glob(pattern))


def latest_snapshot(landing_dir: Path, usecase: str, source: str, spec: SourceConfig) -> Path | None:
    files = sorted(source_dir(landing_dir, usecase, source).glob(f"{source}_*.{spec.format}"))
    return files[-1] if files else None


def load_source_data(usecase: UseCaseConfig) -> dict[str, pl.DataFrame]:
    """The full source data of a use case, from its module's ``source_data()`` (what a replay lands from)."""
    return usecase_function(usecase, "source_data", "module")()


def _export_frame(frame: pl.DataFrame, spec: SourceConfig) -> pl.DataFrame:
    # Whole numbers that pandas kept as floats (because of gaps) are exported as integers, as a real export would.
    casts = [
        pl.col(column).cast(_POLARS_TYPES[kind])
        for column, kind in spec.columns.items()
        if kind in _POLARS_TYPES and column in frame.columns
    ]
    return frame.with_columns(casts)


def _write_atomically(frame: pl.DataFrame, path: Path, file_format: str) -> None:
    # Bronze may be reading the folder while a file lands: it must never see half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if file_format == "csv":
        frame.write_csv(partial)
    else:
        frame.write_ndjson(partial)
    os.replace(partial, path)


def land_day(
    usecase: UseCaseConfig, landing_dir: Path, day: dt.date, data: Mapping[str, pl.DataFrame]
) -> list[Path]:
    """Write ``day``'s file for every daily source and that day's snapshot of every reference source."""
    written = []
    for name, spec in usecase.sources.items():
        frame = data[name]
        if spec.partition is not None:
            frame = frame.filter(rows_of_day(spec, day))
        path = landing_file(landing_dir, usecase.name, name, spec, day)
        _write_atomically(_export_frame(frame, spec), path, spec.format)
        written.append(path)
    return written


def rows_of_day(spec: SourceConfig, day: dt.date) -> pl.Expr:
    """Which rows of a daily source's data belong to ``day`` (what a day's export holds)."""
    assert spec.partition is not None
    if spec.partition.from_parts:
        year, month, day_part = spec.partition.from_parts
        return (pl.col(year) == day.year) & (pl.col(month) == day.month) & (pl.col(day_part) == day.day)
    return pl.col(spec.partition.day_column).dt.date() == day


def land_days(usecase: UseCaseConfig, landing_dir: Path, days: Iterable[dt.date]) -> list[Path]:
    data = load_source_data(usecase)
    return [path for day in days for path in land_day(usecase, landing_dir, day, data)]


def day_range(first: dt.date, count: int) -> list[dt.date]:
    return [first + dt.timedelta(days=offset) for offset in range(count)]
