"""Bronze -> silver, engine-agnostic: type raw strings, apply the quality rules, split off quarantine, deduplicate.

Pure narwhals over lazy frames, no Dagster: the same functions run on Polars and on PySpark.

Every bronze row ends in exactly one place: silver, quarantine (tagged with the first rule it broke), or the
duplicates removed in favour of a later copy of the same natural key. The duplicates are what bronze holds beyond
silver and quarantine, which the reconciliation check proves.

A row bronze could not parse (``PARSE_RULE`` set) is quarantined under that rule before any other check. A value is
valid for its type only if it converts: a day that exists, a time of day below 24:00, an integer within 64 bits, a
finite float. Copies of a natural key that disagree on a value are conflicts: the copy that landed last wins
(``PRECEDENCE``) and the others are reported beside silver, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import narwhals as nw
import pyarrow as pa

from mlops_platform.settings import ColumnType, Rule, SourceConfig

if TYPE_CHECKING:
    from mlops_platform.transforms.engine import Engine

LANDING_DATE = "_landing_date"
SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"      # the record's number in its file, from 1 (the header is not a record)
SOURCE_LINE = "_source_line"    # the line of the file the record starts on, from 1 (the header is line 1)
LANDED_AT = "_landed_at"        # when the record's file landed (its modification time)
INGESTED_AT = "_ingested_at"
BATCH_ID = "_batch_id"
LINEAGE_COLUMNS = (SOURCE_FILE, SOURCE_ROW, SOURCE_LINE, LANDED_AT, INGESTED_AT, BATCH_ID)
# Set by bronze on a record it could not split into the declared fields (whose columns it leaves null): the text as
# landed, the rule it is quarantined under, and why.
RAW_LINE = "_raw_line"
PARSE_RULE = "_parse_rule"
PARSE_ERROR = "_parse_error"
KEPT = "_kept"                  # in conflicts: whether silver kept this copy of the key
_COPIES = "_copies"
RULE_COLUMN = "_rule"
RULE_DETAIL_COLUMN = "_rule_detail"
FAILED_CHECK = "_failed_check"
# Parsed without the trailing "Z" (the pattern checks it): narwhals would hand Spark a zone-offset letter for it.
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S"



def _at_most(bound: str) -> str:
    """A regex for strings of ``len(bound)`` digits whose value is at most ``bound``."""
    branches = [
        f"{bound[:i]}[0-{int(digit) - 1}]" + (f"[0-9]{{{len(bound) - i - 1}}}" if i < len(bound) - 1 else "")
        for i, digit in enumerate(bound) if digit != "0"
    ]
    return "|".join([*branches, bound])


_INT64_MAX = str(2**63 - 1)
_INT64_MIN_MAGNITUDE = str(2**63)
_SHORT_INT = "[0-9]{1,18}"  # below 10^18: always within 64 bits
_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"  # 0001-9999, the range Spark's dates take
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)" \
             "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"

# A raw value must match its type's pattern before it is cast: the cast itself is strict on Polars and, with ANSI
# mode, on Spark, so a pattern admits only values that convert, and gives both engines the same verdict on the same
# string. Floats are the exception: one too large for 64 bits matches and converts to infinity, which
# ``tag_rows`` refuses after the cast.
TYPE_PATTERNS: dict[ColumnType, str] = {
    # \A and \z, not ^ and $: Java's $ also matches before a trailing newline, Rust's does not.
    "int": rf"\A(?:\+?0*(?:{_SHORT_INT}|{_at_most(_INT64_MAX)})|-0*(?:{_SHORT_INT}|{_at_most(_INT64_MIN_MAGNITUDE)}))\z",
    "float": r"\A[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\z",
    "bool": r"\A(true|false|True|False)\z",
    "date": rf"\A{_DATE}\z",
    "datetime": rf"\A{_DATE}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z\z",
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


def _row_checks(source: SourceConfig) -> list[Check]:
    """Checks on the raw record: bronze parsed it, then each value is valid for its type.

    The first one's name never shows: a row that fails it is quarantined under the rule bronze named
    (``PARSE_RULE``), with bronze's explanation.
    """
    parsed = Check("parse", "bronze could not split the record into the declared fields",
                   ~nw.col(PARSE_RULE).is_null())
    # Over the parse verdicts ``tag_rows`` keeps in temporary columns, so each pattern runs once per value.
    return [parsed, *(
        Check(f"type_{column}", f"{column} must be a valid {kind}", ~nw.col(_parse_flag(column)))
        for column, kind in source.columns.items()
    )]


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
    return [*_row_checks(source), *_typed_checks(source)]


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
    row_checks, typed_checks = _row_checks(source), _typed_checks(source)
    typed = bronze.with_columns(
        *(_parseable(column, kind).alias(flags[column]) for column, kind in source.columns.items())
    ).with_columns(
        nw.when(nw.col(flags[column]) & ~nw.col(column).is_null())
        .then(_typed(nw.col(column), kind))
        .alias(f"_typed_{column}")
        for column, kind in source.columns.items()
    )
    floats = [column for column, kind in source.columns.items() if kind == "float"]
    if floats:
        # A float too large for 64 bits matches the pattern and converts to infinity.
        typed = typed.with_columns(
            (nw.col(flags[column]) & (nw.col(f"_typed_{column}").is_null() | nw.col(f"_typed_{column}").is_finite()))
            .alias(flags[column])
            for column in floats
        )
    typed = typed.with_columns(_first_failure(row_checks).alias("_type_failure")).drop(*flags.values())
    typed = typed.rename({column: f"_raw_{column}" for column in source.columns}).rename(
        {f"_typed_{column}": column for column in source.columns}
    )
    return typed.with_columns(
        nw.coalesce(nw.col("_type_failure"), _first_failure(typed_checks, offset=len(row_checks)))
        .alias(FAILED_CHECK)
    ).drop("_type_failure")


@dataclass(frozen=True)
class ConformedSource:
    silver: nw.LazyFrame
    quarantine: nw.LazyFrame
    conflicts: nw.LazyFrame
    # Every row that passed all checks, before deduplication: what reconciliation counts duplicates from.
    clean: nw.LazyFrame


def _added_day_column(source: SourceConfig) -> str | None:
    """The silver day column when it is not a declared column (assembled from parts or another column's date)."""
    partition = source.partition
    return partition.column if partition and partition.column not in source.columns else None


def silver_columns(source: SourceConfig) -> list[str]:
    added = _added_day_column(source)
    return [*([added] if added else []), *source.columns, *LINEAGE_COLUMNS]


def conform(tagged: nw.LazyFrame, source: SourceConfig) -> ConformedSource:
    """Split rows tagged by ``tag_rows`` into deduplicated silver rows, quarantined rows (raw values kept) and the
    clean rows whose key has copies with other values.

    All results are read from ``tagged``; ``conformed_tables`` computes it once for them.
    """
    failed = nw.col(FAILED_CHECK)
    clean = tagged.filter(failed.is_null())
    if added := _added_day_column(source):
        # The row belongs to its file's day (a check made sure), so the landing day is the row's day.
        clean = clean.with_columns(nw.col(LANDING_DATE).alias(added))
    clean = clean.select(silver_columns(source))
    counted = clean.with_columns(nw.len().over(*source.keys).alias(_COPIES))
    # Most keys have one copy: only the others pay for the precedence windows and the conflict search.
    copies = counted.filter(nw.col(_COPIES) > 1).drop(_COPIES)
    silver = nw.concat([counted.filter(nw.col(_COPIES) == 1).drop(_COPIES), deduplicate(copies, source.keys)])
    checks = _checks(source)
    quarantine = tagged.filter(~failed.is_null()).select(
        *([LANDING_DATE] if source.partition else []),
        *(nw.col(f"_raw_{column}").alias(column) for column in source.columns),
        *LINEAGE_COLUMNS,
        nw.coalesce(nw.col(PARSE_RULE), _by_position(failed, [check.name for check in checks])).alias(RULE_COLUMN),
        nw.coalesce(nw.col(PARSE_ERROR), _by_position(failed, [check.detail for check in checks]))
        .alias(RULE_DETAIL_COLUMN),
        RAW_LINE,
    )
    return ConformedSource(silver=silver, quarantine=quarantine, conflicts=conflicts(copies, source), clean=clean)


@dataclass(frozen=True)
class ConformedTables:
    """Silver rows, quarantined rows, and the clean rows of keys whose copies disagree (see ``conflicts``)."""

    silver: pa.Table
    quarantine: pa.Table
    conflicts: pa.Table
    # Counted on the clean rows themselves, not derived from silver: rows that passed every check, and how many
    # distinct natural keys they hold (clean_rows - clean_keys copies are superseded duplicates).
    clean_rows: int
    clean_keys: int


def conformed_tables(engine: Engine, bronze: nw.LazyFrame, source: SourceConfig) -> ConformedTables:
    """Silver, quarantine and conflicting rows of ``bronze`` as Arrow tables, with the rows tagged once for all."""
    with engine.reused(tag_rows(bronze, source)) as tagged:
        conformed = conform(tagged, source)
        clean_rows = engine.to_arrow(conformed.clean.select(nw.len())).column(0)[0].as_py()
        clean_keys = engine.to_arrow(conformed.clean.select(*source.keys).unique().select(nw.len())
                                     ).column(0)[0].as_py()
        return ConformedTables(engine.to_arrow(conformed.silver), engine.to_arrow(conformed.quarantine),
                               engine.to_arrow(conformed.conflicts), clean_rows, clean_keys)


# Which copy of a natural key silver keeps: the latest ingested, then the one whose file landed last. The file name
# only breaks a tie between files stamped with the same landing time, then the last row of the file wins.
PRECEDENCE = (INGESTED_AT, LANDED_AT, SOURCE_FILE, SOURCE_ROW)


def deduplicate(frame: nw.LazyFrame, keys: Sequence[str]) -> nw.LazyFrame:
    """Keep one row per natural key, the last by ``PRECEDENCE``."""
    for order in PRECEDENCE:
        frame = frame.filter(nw.col(order) == nw.col(order).max().over(*keys))
    return frame


def conflicts(copies: nw.LazyFrame, source: SourceConfig) -> nw.LazyFrame:
    """Of the clean rows whose key has several copies, those of keys whose copies differ in some value, ``KEPT``
    marking the one silver keeps.

    Exact copies are not conflicts. Sorted by key, then by ``PRECEDENCE``, so each key's copies read in order.
    """
    keys = list(source.keys)
    values = [column for column in source.columns if column not in keys]
    disagreeing = (copies.select(*keys, *values).unique().group_by(*keys).agg(nw.len().alias("_versions"))
                   .filter(nw.col("_versions") > 1).select(*keys))
    conflicting = copies.join(disagreeing, on=keys, how="inner")
    identity = [*keys, SOURCE_FILE, SOURCE_ROW]
    kept = deduplicate(conflicting, keys).select(*identity).with_columns(nw.lit(True).alias(KEPT))
    return (
        conflicting.join(kept, on=identity, how="left")
        .with_columns(nw.col(KEPT).fill_null(False))
        .sort(*keys, *PRECEDENCE)
    )
