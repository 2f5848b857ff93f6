"""Landing files -> bronze records: every parseable row kept as raw strings, with where and when it came from.

Bronze never judges values (silver does); it refuses only what it cannot read, and says which file and why:
a malformed file, or one missing a declared column. Columns the configuration does not know are left out of bronze
and reported, unless the source allows schema evolution. The landing file itself is never modified.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from mlops_platform.settings import SourceConfig
from mlops_platform.transforms.conform import LANDING_DATE


class LandingFileError(ValueError):
    """A landing file bronze cannot ingest; the message names the file and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class BronzeBatch:
    """The rows read from a set of landing files, plus what a person should know about those files."""

    table: pa.Table
    files: list[str] = field(default_factory=list)
    empty_files: list[str] = field(default_factory=list)
    unexpected_columns: dict[str, list[str]] = field(default_factory=dict)


def _read_raw(path: Path, spec: SourceConfig) -> pl.DataFrame:
    if path.stat().st_size == 0:
        return pl.DataFrame()
    try:
        if spec.format == "csv":
            return pl.read_csv(path, infer_schema=False)
        header = pl.read_ndjson(path, n_rows=1)
        return pl.read_ndjson(path, schema={name: pl.String for name in header.columns})
    except pl.exceptions.PolarsError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise LandingFileError(path, f"cannot be parsed as {spec.format}: {first_line}") from exc


def read_landing_file(
    path: Path, spec: SourceConfig, *, landing_date: dt.date | None, batch_id: str, ingested_at: dt.datetime
) -> tuple[pl.DataFrame, list[str]]:
    """One file as bronze rows (all declared columns as strings, plus lineage) and its unexpected columns."""
    raw = _read_raw(path, spec)
    if raw.width == 0:
        raw = pl.DataFrame(schema={name: pl.String for name in spec.columns})
    missing = [name for name in spec.columns if name not in raw.columns]
    if missing:
        raise LandingFileError(path, f"missing declared columns {missing} (found {raw.columns})")
    unexpected = [name for name in raw.columns if name not in spec.columns]
    kept = [*spec.columns, *unexpected] if spec.allow_schema_evolution else list(spec.columns)
    lineage = [
        pl.lit(str(path)).alias("_source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_source_row"),
        pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias("_ingested_at"),
        pl.lit(batch_id).alias("_batch_id"),
    ]
    if landing_date is not None:
        lineage.insert(0, pl.lit(landing_date).alias(LANDING_DATE))
    rows = raw.select(*(pl.col(name).cast(pl.String) for name in kept), *lineage)
    return rows, unexpected


def read_bronze_batch(
    paths: Sequence[tuple[Path, dt.date | None]], spec: SourceConfig, *, batch_id: str, ingested_at: dt.datetime
) -> BronzeBatch:
    """Read landing files (each with its landing day, or None for snapshots) into one bronze batch."""
    frames, batch = [], BronzeBatch(table=pa.table({}))
    for path, landing_date in paths:
        rows, unexpected = read_landing_file(
            path, spec, landing_date=landing_date, batch_id=batch_id, ingested_at=ingested_at
        )
        batch.files.append(str(path))
        if rows.height == 0:
            batch.empty_files.append(str(path))
        if unexpected:
            batch.unexpected_columns[str(path)] = unexpected
        frames.append(rows)
    batch.table = pl.concat(frames, how="diagonal").to_arrow() if frames else pa.table({})
    return batch
