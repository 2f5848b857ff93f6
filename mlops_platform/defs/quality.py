"""Asset-check results computed on the table an asset just wrote: counts plus a small sample of failing rows.

Checks run inside the asset (``check_specs`` + ``MaterializeResult.check_results``) because the data is already in
memory there. ERROR checks are declared blocking, so a failure stops downstream assets in the same run and in
automated runs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import dagster as dg
import polars as pl
import pyarrow as pa

from mlops_platform import names
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.settings import Rule, UseCaseConfig

SAMPLE_ROWS = 5

KEYS_UNIQUE = "keys_unique"
ROWS_RECONCILE = "rows_reconcile"
QUARANTINE_SHARE = "quarantine_share"
HAS_ROWS = "has_rows"
KEYS_CONSISTENT = "keys_consistent"


def check_spec(name: str, asset: dg.AssetKey, description: str, severity: str = "ERROR") -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=severity == "ERROR")


def rule_check_spec(rule: Rule, asset: dg.AssetKey) -> dg.AssetCheckSpec:
    allowance = f" (passes with up to {rule.max_failing_share:.1%} of rows failing)" if rule.max_failing_share else ""
    return check_spec(rule.name, asset, f"{rule.kind} on {rule.column}{allowance}", rule.severity)


def sample_rows(frame: pl.DataFrame, columns: Sequence[str] | None = None) -> dg.MetadataValue:
    rows = frame.select(columns) if columns else frame
    # Through polars' JSON writer so dates and timestamps arrive as ISO strings.
    return dg.MetadataValue.json(json.loads(rows.head(SAMPLE_ROWS).write_json()) if rows.height else [])


def _failing(frame: pl.DataFrame, rule: Rule) -> pl.DataFrame:
    value = pl.col(rule.column)
    if rule.kind == "not_null":
        return frame.filter(value.is_null())
    if rule.kind == "accepted_values":
        return frame.filter(value.is_not_null() & ~value.is_in(rule.values or []))
    low = value < rule.min if rule.min is not None else pl.lit(False)
    high = value > rule.max if rule.max is not None else pl.lit(False)
    return frame.filter(value.is_not_null() & (low | high))


def rule_result(rule: Rule, asset: dg.AssetKey, table: pa.Table, keys: Sequence[str]) -> dg.AssetCheckResult:
    frame = pl.from_arrow(table)
    failing = _failing(frame, rule)
    share = failing.height / frame.height if frame.height else 0.0
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=rule.name,
        passed=share <= rule.max_failing_share,
        severity=dg.AssetCheckSeverity(rule.severity),
        metadata={
            "failing_rows": failing.height,
            "failing_share": share,
            "allowed_share": rule.max_failing_share,
            "failing_sample": sample_rows(failing, [*keys, rule.column]),
        },
    )


def unique_keys_result(asset: dg.AssetKey, table: pa.Table, keys: Sequence[str]) -> dg.AssetCheckResult:
    counts = pl.from_arrow(table).group_by(keys).len()
    duplicated = counts.filter(pl.col("len") > 1)
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=KEYS_UNIQUE,
        passed=duplicated.height == 0,
        metadata={"duplicated_keys": duplicated.height, "keys": ", ".join(keys),
                  "duplicated_sample": sample_rows(duplicated)},
    )


def consistent_keys_result(asset: dg.AssetKey, conflicts: pa.Table, keys: Sequence[str], severity: str
                           ) -> dg.AssetCheckResult:
    """Copies of a key that disagree on a value, with a sample of them (which copy silver kept, where each came
    from)."""
    frame = pl.from_arrow(conflicts)
    conflicting_keys = frame.select(keys).unique().height if frame.height else 0
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=KEYS_CONSISTENT,
        passed=conflicting_keys == 0,
        severity=dg.AssetCheckSeverity(severity),
        metadata={"conflicting_keys": conflicting_keys, "conflicting_rows": frame.height, "keys": ", ".join(keys),
                  "conflicting_sample": sample_rows(frame)},
    )


def reconcile_result(asset: dg.AssetKey, expected: int, actual: int, explanation: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=ROWS_RECONCILE,
        passed=expected == actual,
        metadata={"expected_rows": expected, "actual_rows": actual, "difference": actual - expected,
                  "how": explanation},
    )


FRESHNESS = "freshness"


def freshness_checks(usecase: UseCaseConfig, keys: Sequence[dg.AssetKey]) -> list[dg.AssetChecksDefinition]:
    """A table is fresh while its last Delta commit is younger than the use case's ``freshness_hours``.

    Wall-clock, on purpose: it answers "is the daily work still running?", whatever days the data holds.
    """
    limit = dt.timedelta(hours=usecase.freshness_hours)

    def build(key: dg.AssetKey) -> dg.AssetChecksDefinition:
        @dg.asset_check(asset=key, name=FRESHNESS, description=f"last write less than {usecase.freshness_hours:g} "
                                                                "hours ago")
        def freshness(warehouse: Warehouse) -> dg.AssetCheckResult:
            # A table asset's key path is (use case, layer, table), exactly its table's name parts.
            commit = warehouse.last_commit(*names.table(*key.path))
            if commit is None:
                return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                           metadata={"reason": "the table does not exist yet"})
            committed = commit.at
            age = dt.datetime.now(dt.UTC) - committed
            return dg.AssetCheckResult(
                passed=age <= limit, severity=dg.AssetCheckSeverity.WARN,
                metadata={"last_commit": committed.isoformat(timespec="seconds"),
                          "age_hours": round(age.total_seconds() / 3600, 2), "limit_hours": usecase.freshness_hours},
            )

        return freshness

    return [build(key) for key in keys]
