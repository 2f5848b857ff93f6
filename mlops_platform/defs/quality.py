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
from mlops_platform.guard import Replacement, judge_replacement
from mlops_platform.resources.warehouse import DayRange, Warehouse
from mlops_platform.settings import ReplaceGuard, Rule, UseCaseConfig

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


def reconcile_result(asset: dg.AssetKey, expected: int, actual: int, explanation: str,
                     versions: dict[str, int | None] | None = None) -> dg.AssetCheckResult:
    """``versions``: the Delta version each side was counted in."""
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=ROWS_RECONCILE,
        passed=expected == actual,
        metadata={"expected_rows": expected, "actual_rows": actual, "difference": actual - expected,
                  "how": explanation, **({"versions": dg.MetadataValue.json(versions)} if versions else {})},
    )


def committed_rows(warehouse: Warehouse, table: names.TableName, days: DayRange | None, version: int | None = None,
                   columns: Sequence[str] | None = None) -> pa.Table:
    """The rows a table holds for ``days`` (all of it without), as of ``version`` or now; empty when it does not
    exist. Checks count what was committed, read back, never the frame that was handed to the writer."""
    if not warehouse.exists(*table):
        return pa.table({name: pa.array([], pa.null()) for name in columns or []})
    return warehouse.read(*table, days=days, version=version, columns=columns)


# Commit metadata stamping the writes of one batch (a run over some days) into several tables.
BATCH_STAMP = "mlops_batch"
DAYS_STAMP = "mlops_days"


def _last_batch(warehouse: Warehouse, table: names.TableName, days: str) -> str | None:
    for commit in warehouse.history(*table, limit=100):
        if commit.metadata.get(DAYS_STAMP) == days:
            return commit.metadata.get(BATCH_STAMP)
    return None


def interrupted_batch(warehouse: Warehouse, complete: names.TableName, first: names.TableName, days: str
                      ) -> str | None:
    """The batch that committed ``first`` for ``days`` but not ``complete`` (written after it), or None.

    A run that dies between its two commits leaves exactly this: the newest stamp for those days differs.
    """
    started, finished = _last_batch(warehouse, first, days), _last_batch(warehouse, complete, days)
    return started if started is not None and started != finished else None


def days_label(days: DayRange | None) -> str:
    """The days a write replaces, as people read them and as batch stamps record them."""
    if days is None:
        return "snapshot"
    return str(days.first) if days.first == days.last else f"{days.first}..{days.last}"


def guard_replacement(context: dg.AssetExecutionContext, limits: ReplaceGuard, warehouse: Warehouse,
                      table: names.TableName, days: DayRange | None, *, new_rows: int, quarantined: int = 0,
                      source_rows: int | None = None, count_column: str | None = None) -> Replacement:
    """Refuse (fail the run, before anything is written) to replace days holding rows with a much worse version.

    The run tag ``mlops/allow_shrink=true`` or the use case's ``replace_guard.allow_shrink`` accepts it: the
    replacement then proceeds with a warning naming the numbers.
    """
    column = count_column or (days.column if days else None)
    old_rows = committed_rows(warehouse, table, days, columns=[column] if column else None).num_rows
    verdict = judge_replacement(warehouse.full_name(*table), days_label(days), old_rows=old_rows, new_rows=new_rows,
                                limits=limits, quarantined=quarantined, source_rows=source_rows)
    if not verdict.refused:
        return verdict
    if limits.allow_shrink or context.run.tags.get(names.ALLOW_SHRINK_TAG, "").lower() == "true":
        context.log.warning(f"accepted by the operator ({names.ALLOW_SHRINK_TAG}): {'; '.join(verdict.problems)}")
        return verdict
    raise dg.Failure(description=verdict.message, metadata=verdict.metadata())


FRESHNESS = "freshness"
# Every hour, whether or not the table changed: a table that stopped changing is exactly what the check is for.
FRESHNESS_CRON = "0 * * * *"


def freshness_policy(usecase: UseCaseConfig) -> dg.FreshnessPolicy:
    """Dagster's own freshness for a daily table: stale once its last materialization is older than the use case's
    ``freshness_hours``. The daemon evaluates it (the freshness daemon is on by default); nothing to switch on."""
    # Dagster refuses windows under a minute; a shorter configured limit (tests use one) still holds for the checks.
    window = max(dt.timedelta(hours=usecase.freshness_hours), dt.timedelta(minutes=1))
    return dg.FreshnessPolicy.time_window(fail_window=window)


def freshness_sensor(usecase: UseCaseConfig, keys: Sequence[dg.AssetKey]) -> dg.AutomationConditionSensorDefinition:
    """Runs the freshness checks on their automation condition (hourly) under the daemon; ships RUNNING."""
    return dg.AutomationConditionSensorDefinition(
        f"{usecase.name}_freshness_automation",
        target=dg.AssetSelection.checks(*(dg.AssetCheckKey(key, FRESHNESS) for key in keys)),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Evaluates the freshness checks of the {usecase.name} use case's daily tables every hour.",
    )


def freshness_checks(usecase: UseCaseConfig, keys: Sequence[dg.AssetKey]) -> list[dg.AssetChecksDefinition]:
    """A table is fresh while its last Delta commit is younger than the use case's ``freshness_hours``.

    Wall-clock, on purpose: it answers "is the daily work still running?", whatever days the data holds. Run every
    hour by declarative automation (``freshness_sensor``), and with every daily run.
    """
    limit = dt.timedelta(hours=usecase.freshness_hours)

    def build(key: dg.AssetKey) -> dg.AssetChecksDefinition:
        @dg.asset_check(asset=key, name=FRESHNESS, description=f"last write less than {usecase.freshness_hours:g} "
                                                                "hours ago",
                        automation_condition=dg.AutomationCondition.cron_tick_passed(FRESHNESS_CRON))
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
