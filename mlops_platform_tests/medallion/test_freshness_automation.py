"""Freshness where users look: evaluated by the daemon through Dagster's own machinery, with nothing to switch on.

The daily tables carry a ``FreshnessPolicy`` (the freshness daemon is on by default in the shipped instance
profiles), and the Delta-commit freshness checks run by declarative automation every hour from a sensor that ships
RUNNING, so no stopped schedule stands between them and the daemon.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import yaml

from mlops_platform.defs.quality import FRESHNESS, freshness_checks
from mlops_platform.settings import PROJECT_ROOT
from mlops_platform_tests.conftest import flights_key

DAILY_TABLES = [flights_key("silver", "flights"), flights_key("silver", "weather"), flights_key("gold", "flights")]
PROFILES = [PROJECT_ROOT / "dagster.yaml", PROJECT_ROOT / "config" / "dagster" / "postgres.yaml"]


def test_daily_tables_carry_the_use_cases_freshness_policy_and_snapshots_none(definitions, flights):
    graph = definitions.resolve_asset_graph()
    for key in DAILY_TABLES:
        policy = graph.get(key).freshness_policy
        assert policy is not None and policy.fail_window.to_timedelta() == dt.timedelta(hours=flights.freshness_hours)
    assert graph.get(flights_key("silver", "planes")).freshness_policy is None


def test_the_freshness_checks_run_hourly_under_the_daemon_from_a_sensor_that_ships_running(definitions):
    sensor = definitions.resolve_sensor_def("flights_freshness_automation")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert not [schedule.name for schedule in definitions.schedules or [] if "freshness" in schedule.name]

    instance = dg.DagsterInstance.ephemeral()
    start = dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC)
    first = dg.evaluate_automation_conditions(defs=definitions, instance=instance, evaluation_time=start)
    assert first.total_requested == 0
    later = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=first.cursor,
                                              evaluation_time=start + dt.timedelta(hours=1))
    requested = {result.key for result in later.results if result.true_subset.size}
    flights_checks = {key for key in requested if key.asset_key.path[0] == "flights"}
    assert flights_checks == {dg.AssetCheckKey(key, FRESHNESS) for key in DAILY_TABLES}
    assert all(isinstance(key, dg.AssetCheckKey) and key.name == FRESHNESS for key in requested)


def test_the_checks_automation_condition_is_an_hourly_cron_tick(flights):
    (check,) = freshness_checks(flights, [DAILY_TABLES[0]])
    spec = next(iter(check.check_specs))
    assert spec.automation_condition is not None
    assert "0 * * * *" in str(spec.automation_condition)


def test_the_shipped_instance_profiles_mark_dead_runs_failed_and_keep_the_freshness_daemon_on():
    for profile in PROFILES:
        config = yaml.safe_load(profile.read_text())
        assert config["run_monitoring"]["enabled"] is True, profile
        assert config.get("freshness", {}).get("enabled", True) is True, profile
