"""When drift means action: the debounce rule and the retraining guardrails, as pure functions of history.

Counted in data days (partitions), not wall-clock time, so a replay of a year behaves as that year would have.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from mlops_platform.settings import Debounce, MonitoringConfig, MonitoringWindow, RetrainingConfig

# The monitoring asset's check names; an alert raised by a failed check carries the check's name as its kind.
FEATURE_DRIFT = "feature_drift"
PREDICTION_DRIFT = "prediction_drift"
QUALITY_DROP = "quality_drop"
LOWER_IS_BETTER = frozenset({"root_mean_squared_error", "mean_absolute_error"})


def debounced(drifted_by_day: Mapping[dt.date, bool], latest: dt.date, rule: Debounce) -> bool:
    """Drift on the latest day and on at least ``rule.days`` of the last ``rule.of_last`` days.

    Days without a report count as not drifted: a gap in monitoring must not turn one noisy day into a retrain.
    """
    if not drifted_by_day.get(latest, False):
        return False
    window = [latest - dt.timedelta(days=offset) for offset in range(rule.of_last)]
    return sum(drifted_by_day.get(day, False) for day in window) >= rule.days


@dataclass(frozen=True)
class RetrainingDecision:
    retrain: bool
    reason: str


def retraining_decision(
    day: dt.date,
    *,
    last_retraining_day: dt.date | None,
    requested_on_day: int,
    runs_in_progress: Collection[str],
    rule: RetrainingConfig,
) -> RetrainingDecision:
    """Whether a failed drift or quality check on ``day`` may start a retraining now, and why (not)."""
    if runs_in_progress:
        return RetrainingDecision(False, f"a retraining is already running ({', '.join(sorted(runs_in_progress))})")
    if requested_on_day >= rule.max_per_day:
        return RetrainingDecision(False, f"{requested_on_day} retraining(s) already requested for {day} "
                                         f"(max_per_day {rule.max_per_day})")
    if last_retraining_day is not None and (day - last_retraining_day).days < rule.cooldown_days:
        return RetrainingDecision(False, f"in cooldown: last retraining for {last_retraining_day}, "
                                         f"{rule.cooldown_days} days must pass")
    return RetrainingDecision(True, "drift confirmed and guardrails clear")


def window_reach(window: MonitoringWindow) -> int:
    """How many days, the day itself included, a day's window can reach back: ``window.days`` when it asks for no
    minimum of rows, else up to ``window.max_days`` (the rows per day decide). Monitoring reads this many days of
    predictions: reading ``max_days`` for a one-day window grew each daily run until 90 days were scored."""
    return window.max_days if window.min_rows else window.days


def window_start(rows_per_day: Mapping[dt.date, int], day: dt.date, window: MonitoringWindow) -> dt.date:
    """The first day of ``day``'s monitoring window: at least ``window.days`` days ending at ``day``, extended back
    until they hold ``window.min_rows`` rows, but never beyond ``window.max_days`` days."""
    first = day - dt.timedelta(days=window.days - 1)
    earliest = day - dt.timedelta(days=window.max_days - 1)
    held = sum(rows_per_day.get(day - dt.timedelta(days=back), 0) for back in range(window.days))
    while held < window.min_rows and first > earliest:
        first -= dt.timedelta(days=1)
        held += rows_per_day.get(first, 0)
    return first


def quality_dropped_below(value: float | None, champion: float | None, spec: MonitoringConfig) -> bool:
    """Whether a day's quality is worse than the champion's test score by more than ``max_quality_drop``."""
    if value is None or champion is None or math.isnan(value) or math.isnan(champion):
        return False
    if spec.quality_metric in LOWER_IS_BETTER:
        return value > champion + spec.max_quality_drop
    return value < champion - spec.max_quality_drop
