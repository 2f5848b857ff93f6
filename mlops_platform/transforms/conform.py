"""Bronze -> silver, engine-agnostic: type raw strings, apply the quality rules, split off quarantine, deduplicate.

Pure narwhals over lazy frames, no Dagster: the same functions run on Polars and on PySpark.

Every bronze row ends in exactly one place: silver, quarantine (tagged with the first rule it broke), or the
duplicates removed in favour of a later copy of the same natural key. The duplicates are what bronze holds beyond
silver and quarantine, which the reconciliation check proves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import narwhals as nw
import pyarrow as pa

from mlops_platform.settings import ColumnType, Rule, SourceConfig

if TYPE_CHECKING:
    from mlops_platform.resources.engine import Engine

LANDING_DATE = "_landing_date"
LINEAGE_COLUMNS = ("_source_file", "_source_row", "_ingested_at", "_batch_id")
RULE_COLUMN = "_rule"
RULE_DETAIL_COLUMN = "_rule_detail"
FAILED_CHECK = "_failed_check"
# Parsed without the trailing "Z" (the pattern checks it): narwhals would hand Spark a zone-offset letter for it.
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S"

# A raw value must match its type's pattern before it is cast: the cast itself is strict on Polars and, with ANSI
# mode, on Spark, and a pattern gives both engines the same verdict on the same string.
TYPE_PATTERNS: dict[ColumnType, str] = {
    # \A and \z, not ^ and $: Java's $ also matches before a trailing newline, Rust's does not.
    "int": r"\A[+-]?[0-9]+\z",
    "float": r"\A[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\z",
    "bool": r"\A(true|false|True|False)\z",
    "date": r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\z",
    "datetime": r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\z",
}


def _typed(raw: nw.Expr, kind: ColumnType) -> nw.Expr:
    if kind == "string":
        return raw
    if kind == "int":
        return raw.cast(nw.Int64)
    if kind == "float":
        return raw.cast(nw.Float64)
    if kind == "bool":
        return raw.str.to_lowercase() == nw.lit("true")
    if kind == "date":
        return raw.str.to_date(format="%Y-%m-%d")
    return raw.str.slice(0, 19).str.to_datetime(format=DATETIME_FORMAT)


def _parseable(column: str, kind: ColumnType) -> nw.Expr:
    raw = nw.col(column)
    if kind == "string":
        # Any string is a valid string; a pattern would cost a regex match per value on Spark.
        return nw.lit(True)
    return raw.is_null() | raw.str.contains(TYPE_PATTERNS[kind])


def rule_violation(rule: Rule) -> nw.Expr:
    """True where a row breaks ``rule``. Expressions over typed columns."""
    value = nw.col(rule.column)
    if rule.kind == "not_null":
        return value.is_null()
    if rule.kind == "accepted_values":
        return ~value.is_null() & ~value.is_in(rule.values or [])
    too_low = value < rule.min if rule.min is not None else nw.lit(False)
    too_high = value > rule.max if rule.max is not None else nw.lit(False)
    return ~value.is_null() & (too_low | too_high)


def rule_description(rule: Rule) -> str:
    if rule.kind == "not_null":
        return f"{rule.column} must not be null"
    if rule.kind == "accepted_values":
        return f"{rule.column} must be one of {rule.values}"
    return f"{rule.column} must be within [{rule.min}, {rule.max}]"


@dataclass(frozen=True)
class Check:
    """One row-level test: the rule name reported in quarantine, a human description, the failing condition."""

    name: str
    detail: str
    fails: nw.Expr


def _parse_flag(column: str) -> str:
    return f"_parses_{column}"


def _type_checks(source: SourceConfig) -> list[Check]:
    # Over the parse verdicts ``tag_rows`` keeps in temporary columns, so each pattern runs once per value.
    return [
        Check(f"type_{column}", f"{column} must be a valid {kind}", ~nw.col(_parse_flag(column)))
        for column, kind in source.columns.items()
    ]


def _typed_checks(source: SourceConfig) -> list[Check]:
    checks = []
    if source.partition is not None:
        year, month, day = _day_parts(source)
        landing = nw.col(LANDING_DATE)
        outside = (
            year.is_null() | month.is_null() | day.is_null()
            | (year != landing.dt.year()) | (month != landing.dt.month()) | (day != landing.dt.day())
        )
        checks.append(Check("belongs_to_landing_day", "the row's date must be the day of the file it came in",
                            outside))
    explicit = {rule.column for rule in source.rules if rule.kind == "not_null"}
    checks += [
        Check(f"key_{key}_present", f"key column {key} must not be null", nw.col(key).is_null())
        for key in source.keys
        if key in source.columns and key not in explicit
    ]
    checks += [Check(rule.name, rule_description(rule), rule_violation(rule)) for rule in source.rules]
    return checks


def _day_parts(source: SourceConfig) -> tuple[nw.Expr, nw.Expr, nw.Expr]:
    """Year, month and day of a row's own day: its parts columns, or those of its date or datetime column."""
    partition = source.partition
    assert partition is not None
    if partition.from_parts:
        year, month, day = (nw.col(part) for part in partition.from_parts)
        return year, month, day
    value = nw.col(partition.day_column)
    return value.dt.year(), value.dt.month(), value.dt.day()


def _first_failure(checks: Sequence[Check], offset: int = 0) -> nw.Expr:
    """The position (``offset`` + index) of the first check a row fails, null if it passes them all."""
    if not checks:
        return nw.lit(None, dtype=nw.Int64())
    return nw.coalesce(*(nw.when(check.fails).then(nw.lit(offset + i, dtype=nw.Int64()))
                         for i, check in enumerate(checks)))


def _by_position(position: nw.Expr, values: Sequence[str]) -> nw.Expr:
    if not values:
        return nw.lit(None, dtype=nw.String())
    return nw.coalesce(*(nw.when(position == nw.lit(i, dtype=nw.Int64())).then(nw.lit(value))
                         for i, value in enumerate(values)))


def _checks(source: SourceConfig) -> list[Check]:
    """Every row-level check of ``source``, in the order that decides which one a row is quarantined for."""
    return [*_type_checks(source), *_typed_checks(source)]


def tag_rows(bronze: nw.LazyFrame, source: SourceConfig) -> nw.LazyFrame:
    """Bronze rows with typed values (``column``), raw strings (``_raw_column``) and the first check each fails.

    Type failures are judged on the raw strings, the configured rules on the typed values; a row whose value does
    not parse is reported for that, not for a rule its nulled value might then trip.

    Each condition is written once: parse verdicts are kept in temporary columns, and a row carries only the
    position of its first failing check (``FAILED_CHECK``, null when it passes them all). ``conform`` looks the
    rule's name and description up from that position for quarantined rows only: Spark's optimizer inlines the
    position into every branch of the lookup, which, done on every row, multiplied the cost of the checks by their
    number.
    """
    flags = {column: _parse_flag(column) for column in source.columns}
    type_checks, typed_checks = _type_checks(source), _typed_checks(source)
    typed = bronze.with_columns(
        *(_parseable(column, kind).alias(flags[column]) for column, kind in source.columns.items())
    ).with_columns(
        _first_failure(type_checks).alias("_type_failure"),
        *(
            nw.when(nw.col(flags[column]) & ~nw.col(column).is_null())
            .then(_typed(nw.col(column), kind))
            .alias(f"_typed_{column}")
            for column, kind in source.columns.items()
        ),
    ).drop(*flags.values())
    typed = typed.rename({column: f"_raw_{column}" for column in source.columns}).rename(
        {f"_typed_{column}": column for column in source.columns}
    )
    return typed.with_columns(
        nw.coalesce(nw.col("_type_failure"), _first_failure(typed_checks, offset=len(type_checks)))
        .alias(FAILED_CHECK)
    ).drop("_type_failure")


@dataclass(frozen=True)
class ConformedSource:
    silver: nw.LazyFrame
    quarantine: nw.LazyFrame


def _added_day_column(source: SourceConfig) -> str | None:
    """The silver day column when it is not a declared column (assembled from parts or another column's date)."""
    partition = source.partition
    return partition.column if partition and partition.column not in source.columns else None


def silver_columns(source: SourceConfig) -> list[str]:
    added = _added_day_column(source)
    return [*([added] if added else []), *source.columns, *LINEAGE_COLUMNS]


def conform(tagged: nw.LazyFrame, source: SourceConfig) -> ConformedSource:
    """Split rows tagged by ``tag_rows`` into deduplicated silver rows and quarantined rows (raw values kept).

    Both results are read from ``tagged``; ``conformed_tables`` computes it once for the two.
    """
    failed = nw.col(FAILED_CHECK)
    clean = tagged.filter(failed.is_null())
    if added := _added_day_column(source):
        # The row belongs to its file's day (a check made sure), so the landing day is the row's day.
        clean = clean.with_columns(nw.col(LANDING_DATE).alias(added))
    silver = deduplicate(clean.select(silver_columns(source)), source.keys)
    checks = _checks(source)
    quarantine = tagged.filter(~failed.is_null()).select(
        *([LANDING_DATE] if source.partition else []),
        *(nw.col(f"_raw_{column}").alias(column) for column in source.columns),
        *LINEAGE_COLUMNS,
        _by_position(failed, [check.name for check in checks]).alias(RULE_COLUMN),
        _by_position(failed, [check.detail for check in checks]).alias(RULE_DETAIL_COLUMN),
    )
    return ConformedSource(silver=silver, quarantine=quarantine)


def conformed_tables(engine: Engine, bronze: nw.LazyFrame, source: SourceConfig) -> tuple[pa.Table, pa.Table]:
    """Silver and quarantine rows of ``bronze`` as Arrow tables, with the rows tagged once for both."""
    with engine.reused(tag_rows(bronze, source)) as tagged:
        conformed = conform(tagged, source)
        return engine.to_arrow(conformed.silver), engine.to_arrow(conformed.quarantine)


def deduplicate(frame: nw.LazyFrame, keys: Sequence[str]) -> nw.LazyFrame:
    """Keep one row per natural key: the latest ingested, then the latest file, then the last row in it."""
    for order in ("_ingested_at", "_source_file", "_source_row"):
        frame = frame.filter(nw.col(order) == nw.col(order).max().over(*keys))
    return frame
