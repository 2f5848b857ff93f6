"""The landing zone: where a use case's daily exports arrive, one file per source per day.

``land_day`` replays a day of a use case's source data the way a real export would arrive (CSV or JSON lines, the
data's own warts kept). Bronze reads what is here and never changes it: the raw files stay as they came.

This module owns the naming convention, which bronze and the landing sensor import:
``<landing>/<usecase>/<source>/<source>_<YYYY-MM-DD>[_part<N>].<csv|jsonl>``. A day may arrive in several parts.
Anything else in a source's folder (``flights_2013-01-05_old.csv``, ``flights-2013-01-05.csv``) is reported and
never read; names starting with a dot are files still being written. Reference (snapshot) sources land a full
export each day; bronze takes the newest day's export.

When files of a day carry the same rows, the one that landed last wins: files are ordered by when they landed
(their modification time, which ``_write_atomically`` sets when the file appears), then by part number, never by
how their names sort.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mlops_platform.settings import SourceConfig, UseCaseConfig, usecase_function

_POLARS_TYPES = {"int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean, "string": pl.String}
NAMING_CONVENTION = "<source>_<YYYY-MM-DD>[_part<N>].<csv|jsonl>"
_EXPORT_NAME = r"(?P<day>[0-9]{4}-[0-9]{2}-[0-9]{2})(?:_part(?P<part>[1-9][0-9]*))?"


@dataclass(frozen=True)
class Export:
    """A landed file that follows the naming convention, with its day, part and landing stamp."""

    name: str
    day: dt.date
    part: int
    modified: int  # when it landed: ns on a local folder, ms on a volume; only compared within one listing


def export_name(source: str, spec: SourceConfig, day: dt.date, part: int = 1) -> str:
    suffix = "" if part == 1 else f"_part{part}"
    return f"{source}_{day.isoformat()}{suffix}.{spec.format}"


def parse_export_name(name: str, source: str, spec: SourceConfig) -> tuple[dt.date, int] | None:
    """The day and part a file name declares, or None when it does not follow the convention."""
    match = re.fullmatch(rf"{re.escape(source)}_{_EXPORT_NAME}\.{re.escape(spec.format)}", name)
    if match is None:
        return None
    try:
        day = dt.date.fromisoformat(match["day"])
    except ValueError:
        return None
    return day, int(match["part"] or 1)


def is_in_flight(name: str) -> bool:
    """A file still being written (``_write_atomically``'s partial file, an uploader's temporary name)."""
    return name.startswith(".")


def sort_exports(listing: Iterable[tuple[str, int]], source: str, spec: SourceConfig
                 ) -> tuple[list[Export], list[str]]:
    """Split (name, modification stamp) pairs into exports in landing order and names that break the convention."""
    exports, strays = [], []
    for name, modified in listing:
        if is_in_flight(name):
            continue
        parsed = parse_export_name(name, source, spec)
        if parsed is None:
            strays.append(name)
        else:
            exports.append(Export(name, parsed[0], parsed[1], modified))
    return sorted(exports, key=lambda export: (export.modified, export.part)), sorted(strays)


def newest_snapshot(exports: Iterable[Export]) -> Export | None:
    """The export of the latest day; of several exports of that day, the one that landed last."""
    return max(exports, key=lambda export: (export.day, export.modified, export.part), default=None)


def source_dir(landing_dir: Path, usecase: str, source: str) -> Path:
    return landing_dir / usecase / source


def landing_file(landing_dir: Path, usecase: str, source: str, spec: SourceConfig, day: dt.date) -> Path:
    return source_dir(landing_dir, usecase, source) / export_name(source, spec, day)


def _listing(landing_dir: Path, usecase: str, source: str, spec: SourceConfig, prefix: str = ""
             ) -> tuple[list[Export], list[str]]:
    """The folder's exports and strays among the names starting with ``prefix`` (only those are stat'ed)."""
    folder = source_dir(landing_dir, usecase, source)
    names = [entry.name for entry in os.scandir(folder) if entry.name.startswith(prefix)] if folder.is_dir() else []
    files = [folder / name for name in names if (folder / name).is_file()]
    return sort_exports(((path.name, path.stat().st_mtime_ns) for path in files), source, spec)


def files_for_day(landing_dir: Path, usecase: str, source: str, spec: SourceConfig, day: dt.date) -> list[Path]:
    """Every export landed for ``day`` (all its parts), in landing order."""
    folder = source_dir(landing_dir, usecase, source)
    exports = _listing(landing_dir, usecase, source, spec, prefix=f"{source}_{day.isoformat()}")[0]
    return [folder / export.name for export in exports]


def latest_snapshot(landing_dir: Path, usecase: str, source: str, spec: SourceConfig) -> Path | None:
    newest = newest_snapshot(_listing(landing_dir, usecase, source, spec)[0])
    return source_dir(landing_dir, usecase, source) / newest.name if newest else None


def unread_files(landing_dir: Path, usecase: str, source: str, spec: SourceConfig,
                 days: Iterable[dt.date] | None = None) -> list[Path]:
    """Files in the source's folder that break the naming convention, so bronze does not read them.

    With ``days``, only those whose name mentions one of them (``flights_2013-01-05_old.csv`` for 2013-01-05):
    the files a person may believe were read for those days.
    """
    strays = _listing(landing_dir, usecase, source, spec)[1]
    if days is not None:
        stamps = [day.isoformat() for day in days]
        strays = [name for name in strays if any(stamp in name for stamp in stamps)]
    return [source_dir(landing_dir, usecase, source) / name for name in strays]


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
