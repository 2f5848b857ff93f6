"""When drift leads to retraining: the debounce rule, the guardrails, and the sensor on a real instance."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from unittest.mock import patch

import dagster as dg
import pytest

from mlops_platform.defs.monitoring import sensors
from mlops_platform.defs.monitoring.sensors import TRIGGER_TAG
from mlops_platform.defs.stages import monitoring_key
from mlops_platform.monitoring.decisions import (
    FEATURE_DRIFT,
    QUALITY_DROP,
    debounced,
    quality_dropped_below,
    retraining_decision,
)
from mlops_platform.settings import Debounce, RetrainingConfig

DAY = dt.date(2013, 3, 10)
RULE = Debounce(days=2, of_last=3)


def days_back(*offsets: int) -> dict[dt.date, bool]:
    return {DAY - dt.timedelta(days=offset): True for offset in offsets}


def test_one_noisy_day_does_not_count_as_drift():
    assert not debounced(days_back(0), DAY, RULE)


def test_drift_on_enough_recent_days_including_the_latest_counts():
    assert debounced(days_back(0, 2), DAY, RULE)
    assert debounced(days_back(0, 1), DAY, RULE)


def test_drift_that_stopped_on_the_latest_day_or_lies_outside_the_window_does_not_count():
    assert not debounced(days_back(1, 2), DAY, RULE)
    assert not debounced(days_back(0, 3), DAY, RULE)


def test_guardrails_cooldown_daily_maximum_and_one_run_at_a_time():
    rule = RetrainingConfig(cooldown_days=7, max_per_day=1)
    clear = {"last_retraining_day": DAY - dt.timedelta(days=7), "requested_on_day": 0, "runs_in_progress": [],
             "rule": rule}

    assert retraining_decision(DAY, **clear).retrain
    assert not retraining_decision(DAY, **{**clear, "last_retraining_day": DAY - dt.timedelta(days=6)}).retrain
    assert not retraining_decision(DAY, **{**clear, "requested_on_day": 1}).retrain
    busy = retraining_decision(DAY, **{**clear, "runs_in_progress": ["abc"]})
    assert not busy.retrain and "already running" in busy.reason


def report(instance: dg.DagsterInstance, check: str, passed: bool, day: dt.date) -> None:
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=monitoring_key("flights", "delay"), check_name=check, passed=passed,
        metadata={"day": day.isoformat()},
    ))


@pytest.fixture(params=["in-memory", "sqlite"])
def instance(request, tmp_path: Path):
    """Both storages the sensor meets: the in-memory one and the SQLite instance of `make run` and the daemon, whose
    event log is sharded per run (a cross-run event query with a cursor fails there)."""
    if request.param == "in-memory":
        yield dg.DagsterInstance.ephemeral()
        return
    with dg.DagsterInstance.local_temp(str(tmp_path)) as sqlite:
        yield sqlite


def evaluate(definitions, instance, cursor):
    sensor = definitions.resolve_sensor_def("flights_retraining_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    requests = list(sensor(context))
    return requests, context.cursor


def test_the_sensor_requests_retraining_once_per_failed_evaluation_within_guardrails(definitions, flights, instance):
    report(instance, FEATURE_DRIFT, passed=True, day=DAY)
    requests, cursor = evaluate(definitions, instance, None)
    assert requests == []

    report(instance, FEATURE_DRIFT, passed=False, day=DAY)
    requests, cursor = evaluate(definitions, instance, cursor)
    assert len(requests) == 1
    first_run_key = requests[0].run_key
    assert requests[0].tags[TRIGGER_TAG].endswith(f":{FEATURE_DRIFT}")
    assert requests[0].tags["mlops/trigger_day"] == DAY.isoformat()

    # The same evaluation seen again requests nothing; a new failure inside the cooldown neither.
    assert evaluate(definitions, instance, cursor)[0] == []
    assert flights.monitoring.retraining.cooldown_days > 3
    report(instance, QUALITY_DROP, passed=False, day=DAY + dt.timedelta(days=3))
    requests, cursor = evaluate(definitions, instance, cursor)
    assert requests == []

    # After the cooldown a new failure retrains again, with a run key of its own.
    after_cooldown = DAY + dt.timedelta(days=flights.monitoring.retraining.cooldown_days + 1)
    report(instance, FEATURE_DRIFT, passed=False, day=after_cooldown)
    later, _ = evaluate(definitions, instance, cursor)
    assert len(later) == 1
    assert later[0].run_key != first_run_key
    assert later[0].tags["mlops/trigger_day"] == after_cooldown.isoformat()


def test_quality_drops_by_the_metric_direction_and_beyond_the_tolerance(flights):
    spec = flights.monitoring.model_copy(update={"max_quality_drop": 0.05})
    lower_is_better = spec.model_copy(update={"quality_metric": "root_mean_squared_error"})

    assert quality_dropped_below(0.59, 0.65, spec)
    assert not quality_dropped_below(0.61, 0.65, spec)
    assert not quality_dropped_below(None, 0.65, spec) and not quality_dropped_below(float("nan"), 0.65, spec)
    assert quality_dropped_below(40.1, 40.0 - 0.06, lower_is_better)
    assert not quality_dropped_below(30.0, 40.0, lower_is_better)


def test_the_sensor_reads_every_evaluation_since_its_cursor_not_only_the_latest_fifty(definitions, flights,
                                                                                      instance):
    """A failure followed by many passes between two ticks still retrains: nothing hides beyond a page."""
    requests, cursor = evaluate(definitions, instance, None)
    report(instance, FEATURE_DRIFT, passed=False, day=DAY)
    for offset in range(1, 121):
        report(instance, FEATURE_DRIFT, passed=True, day=DAY + dt.timedelta(days=offset))
    with patch.object(sensors, "PAGE_SIZE", 7):
        requests, cursor = evaluate(definitions, instance, cursor)
    assert [request.tags["mlops/trigger_day"] for request in requests] == [DAY.isoformat()]
    assert evaluate(definitions, instance, cursor)[0] == []


def test_the_sensor_uses_public_dagster_apis_only():
    assert "dagster._core" not in Path(sensors.__file__).read_text()
