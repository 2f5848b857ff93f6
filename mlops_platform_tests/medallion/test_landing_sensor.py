"""The landing sensor: a landed day is requested once per set of files, and never after gold has it."""

from __future__ import annotations

import os

import dagster as dg

from mlops_platform.landing import landing_file
from mlops_platform_tests.conftest import LANDED_DAYS, run_day


def evaluate(definitions, instance) -> list[dg.RunRequest]:
    sensor = definitions.resolve_sensor_def("flights_landing_sensor")
    context = dg.build_sensor_context(instance=instance, resources={"landing": definitions.resources["landing"]})
    return list(sensor(context))


def test_each_landed_day_is_requested_and_the_snapshots_once(landed_settings, definitions):
    requests = evaluate(definitions, dg.DagsterInstance.ephemeral())

    daily = [r for r in requests if r.job_name == "flights_daily"]
    assert [r.partition_key for r in daily] == [day.isoformat() for day in LANDED_DAYS]
    assert [r.job_name for r in requests if r.partition_key is None] == ["flights_reference"]


def test_a_day_gold_already_has_is_not_requested_again(landed_settings, definitions):
    instance = dg.DagsterInstance.ephemeral()
    assert run_day(definitions, LANDED_DAYS[0], instance).success

    daily = [r.partition_key for r in evaluate(definitions, instance) if r.job_name == "flights_daily"]

    assert daily == [day.isoformat() for day in LANDED_DAYS[1:]]


def test_run_keys_are_stable_until_a_day_is_landed_again(landed_settings, definitions, flights):
    instance = dg.DagsterInstance.ephemeral()
    first = {r.partition_key: r.run_key for r in evaluate(definitions, instance)}
    assert {r.partition_key: r.run_key for r in evaluate(definitions, instance)} == first

    path = landing_file(landed_settings.landing_dir, "flights", "weather", flights.sources["weather"], LANDED_DAYS[1])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    again = {r.partition_key: r.run_key for r in evaluate(definitions, instance)}

    changed = {key for key in first if first[key] != again[key]}
    assert changed == {LANDED_DAYS[1].isoformat()}
