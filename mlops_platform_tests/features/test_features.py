"""Feature tables and the training set over real days: values, point-in-time correctness, upserts, rebuilds."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mlops_platform.features import build_scoring_rows, build_training_set, lookup_bounds, row_keys
from mlops_platform.landing import day_range, land_days, landing_file
from mlops_platform.resources import build_resources
from mlops_platform.resources.engine import PolarsEngine
from mlops_platform.storage.tables import DayRange
from mlops_platform.transforms.features import with_features
from mlops_platform_tests.conftest import FIRST_DAY, QUIET, flights_key, flights_table, run_reference

DAYS = day_range(FIRST_DAY, 10)
CUTOFF = DAYS[5]


def run_range(definitions, first: dt.date, last: dt.date, instance=None) -> dg.ExecuteInProcessResult:
    return definitions.resolve_job_def("flights_daily").execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(), run_config=QUIET,
        tags={"dagster/asset_partition_range_start": first.isoformat(),
              "dagster/asset_partition_range_end": last.isoformat()},
    )


@pytest.fixture
def ten_days(settings, flights, definitions):
    land_days(flights, settings.landing_dir, DAYS)
    assert run_reference(definitions).success
    assert run_range(definitions, DAYS[0], DAYS[-1]).success
    return build_resources(settings)["warehouse"]


def features(warehouse, table: str) -> pl.DataFrame:
    return pl.from_arrow(warehouse.read(*flights_table("features", table)))


def test_changing_later_days_never_changes_an_earlier_flights_features(settings, flights, definitions, ten_days):
    """The leakage test: delays of the cutoff day and later are rewritten; features up to the cutoff must not move."""
    tables = ("carrier_delays", "route_delays")
    before = {table: features(ten_days, table) for table in tables}
    for day in DAYS[DAYS.index(CUTOFF):]:
        path = landing_file(settings.landing_dir, "flights", "flights", flights.sources["flights"], day)
        changed = pl.read_csv(path, infer_schema=False).with_columns(
            (pl.col("dep_delay").cast(pl.Float64) + 300).cast(pl.String),
            (pl.col("arr_delay").cast(pl.Float64) + 300).cast(pl.String),
        )
        changed.write_csv(path)

    assert run_range(definitions, CUTOFF, DAYS[-1]).success

    for table in tables:
        after = features(ten_days, table)
        keys = [k for k in flights.features[table].keys]
        up_to_cutoff = pl.col("feature_date") <= CUTOFF
        assert after.filter(up_to_cutoff).sort(keys).equals(before[table].filter(up_to_cutoff).sort(keys)), table
        # The same comparison on the next day must see the change, or this test could not fail.
        next_day = pl.col("feature_date") == CUTOFF + dt.timedelta(days=1)
        assert not after.filter(next_day).sort(keys).equals(before[table].filter(next_day).sort(keys)), table


def test_rerunning_a_day_upserts_feature_rows_instead_of_adding_them(definitions, ten_days):
    rows = ten_days.row_count(*flights_table("features", "carrier_delays"))
    version = ten_days.version(*flights_table("features", "carrier_delays"))

    assert run_range(definitions, DAYS[3], DAYS[4]).success

    assert ten_days.row_count(*flights_table("features", "carrier_delays")) == rows
    assert ten_days.version(*flights_table("features", "carrier_delays")) == version + 1


def test_a_training_set_rebuilds_exactly_from_its_recorded_versions(settings, flights, definitions, ten_days):
    original = build_training_set(flights, PolarsEngine(), ten_days)
    later = day_range(DAYS[-1] + dt.timedelta(days=1), 2)
    land_days(flights, settings.landing_dir, later)
    assert run_range(definitions, later[0], later[-1]).success

    current = build_training_set(flights, PolarsEngine(), ten_days)
    rebuilt = build_training_set(flights, PolarsEngine(), ten_days, original.input_versions)

    assert current.rows.num_rows > original.rows.num_rows
    assert rebuilt.rows.equals(original.rows)
    assert rebuilt.split == original.split


def test_training_set_splits_by_date_and_carries_features_and_labels(flights, definitions, ten_days):
    split = flights.training_set.split.model_copy(update={"validation_days": 2, "test_days": 2})
    short_splits = flights.training_set.model_copy(update={"split": split})
    build = build_training_set(flights.model_copy(update={"training_set": short_splits}), PolarsEngine(), ten_days)
    frame = pl.from_arrow(build.rows)

    last_train = frame.filter(pl.col("split") == "train")["flight_date"].max()
    first_validation = frame.filter(pl.col("split") == "validation")["flight_date"].min()
    first_test = frame.filter(pl.col("split") == "test")["flight_date"].min()
    assert last_train < first_validation == DAYS[-4] < first_test == DAYS[-2]
    assert build.split == {"by": "time", "validation_from": DAYS[-4].isoformat(), "test_from": DAYS[-2].isoformat()}
    assert {"carrier_dep_delay_mean_7d", "temp", "plane_seats", "is_delayed", "arr_delay"} <= set(frame.columns)
    # A flight's weather is the origin's observation at its scheduled hour.
    assert frame["temp"].null_count() < frame.height * 0.05


def test_scoring_a_day_reads_only_its_days_of_the_feature_tables_and_joins_the_same_rows(
        settings, flights, definitions, ten_days):
    """Feature tables gain a file per day; scoring a day must read the files of its own days, not the history.
    With every other file of the dated feature tables gone from disk, the day still scores to exactly the rows
    a join on the whole tables gives, and the whole-table join fails (so this test can tell them apart)."""
    later = day_range(DAYS[-1] + dt.timedelta(days=1), 2)
    land_days(flights, settings.landing_dir, later)
    for day in later:
        assert run_range(definitions, day, day).success
    runner, day = PolarsEngine(), DayRange("flight_date", later[-1], later[-1])
    keys = row_keys(flights)

    def whole_table_join():
        rows = runner.read(ten_days, *flights_table("gold", "flights"), day)
        tables = {lookup.table: runner.read(ten_days, *flights_table("features", lookup.table))
                  for lookup in flights.training_set.lookups}
        return runner.to_arrow(with_features(rows, tables, flights, keys).sort(*keys))

    expected = whole_table_join()
    bounds = lookup_bounds(flights, runner, runner.read(ten_days, *flights_table("gold", "flights"), day))
    assert set(bounds) == {"carrier_delays", "route_delays", "origin_weather"}  # plane_attributes: a snapshot
    for table, filters in bounds.items():
        kept = set(ten_days.tables.file_uris(*flights_table("features", table), filters))
        for path in set(ten_days.tables.file_uris(*flights_table("features", table))) - kept:
            Path(path).unlink()

    assert build_scoring_rows(flights, runner, ten_days, day).equals(expected)
    assert expected.num_rows > 0
    with pytest.raises(OSError):
        whole_table_join()


def test_feature_tables_describe_their_columns_in_the_ui(definitions):
    node = definitions.resolve_asset_graph().get(flights_key("features", "carrier_delays"))
    described = {c.name: c.description for c in node.metadata["dagster/column_schema"].columns}
    assert described["carrier_rows_7d"].startswith("Number of the carrier's flights")
    assert node.metadata["primary_keys"] == ["carrier", "feature_date"]


def test_the_feature_registry_lists_tables_keys_freshness_and_models(settings, ten_days):
    output = subprocess.run(
        [sys.executable, "-m", "mlops_platform.cli", "features", "--json"],
        capture_output=True, text=True, check=True, env={**os.environ, "MLOPS_DATA_DIR": str(settings.data_dir)},
    ).stdout
    registry = {entry["table"]: entry for entry in json.loads(output)}

    carrier = registry["local.flights_features.carrier_delays"]
    assert carrier["keys"] == ["carrier", "feature_date"]
    assert carrier["rows"] == ten_days.row_count(*flights_table("features", "carrier_delays")) > 0
    assert carrier["last_updated"] is not None
    assert carrier["used_by_models"] == ["flights_arrival_delay", "flights_delay"]
    assert registry["local.flights_features.plane_attributes"]["keys"] == ["tailnum"]
