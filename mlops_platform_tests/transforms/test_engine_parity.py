"""The embedded engine (Polars) and Spark turn the same bronze rows into the same silver, quarantine and gold tables.

Input: three real days of the flights use case, landed and read by bronze as the assets do, plus bad rows injected
into the landing files so every quarantine branch (rows bronze could not parse, values that match no type, values
out of 64 bits or the calendar, every rule kind), the deduplication and the conflicts run. Both engines start from the same Arrow
tables; their outputs must have identical (canonical) schemas and equal rows, because the warehouse takes tables
from either engine interchangeably.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mlops_platform.ingest import (
    CSV_QUOTING,
    ENCODING,
    FIELD_COUNT,
    JSON_LINE,
    UNTERMINATED,
    read_bronze_batch,
)
from mlops_platform.landing import files_for_day, landing_file, latest_snapshot
from mlops_platform.resources.engine import (
    Engine,
    PolarsEngine,
    SparkEngine,
    canonical_arrow,
    canonical_schema,
)
from mlops_platform.resources.spark import LOCAL_SPARK_CONFIG
from mlops_platform.resources.warehouse import DayRange, DeltaWarehouse
from mlops_platform.settings import UseCaseConfig, load_settings
from mlops_platform.storage.spark import arrow_to_spark_via_pandas
from mlops_platform.transforms.conform import LANDING_DATE, RULE_COLUMN, conformed_tables
from mlops_platform.usecases.flights import build_gold_flights
from mlops_platform_tests.conftest import LANDED_DAYS

# One worker runs every Spark test (remote/test_remote_spark.py too), so one JVM starts.
pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark"), pytest.mark.timeout(900)]

if shutil.which("java") is None:
    pytest.skip("Java 17 is needed for the Spark parity test (no `java` on PATH)", allow_module_level=True)

SOURCES = ("flights", "weather", "planes", "airlines")
BAD_DAY = LANDED_DAYS[1]
INGESTED_AT = dt.datetime(2013, 1, 4, 6, 0, tzinfo=dt.UTC)
# Rules the injected rows must trip, by source: every quarantine branch (type, landing day, key, each rule kind).
INJECTED_RULES = {
    "flights": {"type_dep_delay": 2, "dep_delay_plausible": 1, "carrier_present": 1, "key_origin_present": 1,
                "belongs_to_landing_day": 1, "origin_is_nyc": 1, "type_flight": 2, "type_time_hour": 2,
                FIELD_COUNT: 1, CSV_QUOTING: 1, ENCODING: 1, UNTERMINATED: 1},
    "weather": {"wind_speed_plausible": 1, "type_humid": 1, "time_present": 1, JSON_LINE: 2},
    "planes": {"seats_positive": 1, "tailnum_present": 1},
}
I64_MAX = 2**63 - 1
FLOAT_TOLERANCE = 1e-12


# --- input -----------------------------------------------------------------------------------------------------------

def _append_csv(path: Path, rows: list[dict[str, str | None]]) -> None:
    with path.open(newline="") as handle:
        header = next(csv.reader(handle))
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerows([["" if row[name] is None else row[name] for name in header] for row in rows])


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _inject_bad_rows(usecase: UseCaseConfig, landing_dir: Path) -> None:
    """Append rows to the landed files that break each kind of rule, plus duplicates bronze must keep."""
    sources = usecase.sources
    flights_file = landing_file(landing_dir, usecase.name, "flights", sources["flights"], BAD_DAY)
    real = _csv_rows(flights_file)
    good, other = real[0], real[1]
    _append_csv(flights_file, [
        {**good, "flight": "9001", "dep_delay": "abc"},         # not a number
        {**good, "flight": "9002", "dep_delay": "5000"},        # out of range
        {**good, "flight": "9003", "carrier": None},            # a null key with its own not_null rule
        {**good, "flight": "9004", "origin": None},             # a null key without one
        {**good, "flight": "9005", "day": str(BAD_DAY.day + 3)},  # another day's row in this day's file
        {**good, "flight": "9006", "origin": "BOS"},            # not an accepted value
        other,                                                   # an exact duplicate: the later copy wins
        {**good, "flight": str(I64_MAX)},                        # the largest 64-bit integer: valid
        {**good, "flight": str(I64_MAX + 1)},                    # one more: no 64-bit integer
        {**good, "flight": "-" + str(I64_MAX + 2)},
        {**good, "flight": "+9007", "dep_delay": "1e999"},      # a float beyond 64 bits
        {**good, "flight": "9008", "time_hour": "2013-01-02T25:00:00Z"},
        {**good, "flight": "9009", "time_hour": "2013-02-30T05:00:00Z"},
    ])
    with flights_file.open("ab") as handle:
        handle.write(b"UA,9010,too,few\n")                                         # a wrong field count
        handle.write(",".join([*list(good.values())[:-1], '"x"y']).encode() + b"\n")  # a broken quote
        handle.write(",".join(good.values()).replace(good["dest"], "M\xfcnchen").encode("latin-1") + b"\n")
        handle.write(",".join(good.values())[:30].encode())                       # cut short, no line break
    # A second part of the same day, landed later, re-sends a flight with a new delay: it wins, and is a conflict.
    second_part = flights_file.with_name(f"flights_{BAD_DAY.isoformat()}_part2.csv")
    second_part.write_text(flights_file.read_text(errors="replace").splitlines()[0] + "\n")
    _append_csv(second_part, [{**good, "dep_delay": "42.5"}])
    later = flights_file.stat().st_mtime_ns + 1_000_000_000
    os.utime(second_part, ns=(later, later))

    weather_file = landing_file(landing_dir, usecase.name, "weather", sources["weather"], BAD_DAY)
    reading = json.loads(weather_file.read_text().splitlines()[0])
    bad_readings = [
        {**reading, "wind_speed": 1048.0},  # the sensor fault the real data has in February
        {**reading, "humid": "n/a"},
        {**reading, "time_hour": None},
    ]
    with weather_file.open("a") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in bad_readings)
        handle.write(json.dumps(reading)[:-5] + "\n")     # not valid JSON
        handle.write("[1, 2, 3]\n")                       # not an object

    planes_file = latest_snapshot(landing_dir, usecase.name, "planes", sources["planes"])
    plane = _csv_rows(planes_file)[0]
    _append_csv(planes_file, [{**plane, "tailnum": "N0SEAT", "seats": "0"}, {**plane, "tailnum": None}])

    airlines_file = latest_snapshot(landing_dir, usecase.name, "airlines", sources["airlines"])
    _append_csv(airlines_file, [_csv_rows(airlines_file)[0]])


def _bronze(usecase: UseCaseConfig, landing_dir: Path) -> dict[str, pa.Table]:
    """Bronze batches read exactly as the bronze assets read them (daily files with their day, newest snapshot)."""
    tables = {}
    for name in SOURCES:
        spec = usecase.sources[name]
        if spec.is_daily:
            files = [(path, day) for day in LANDED_DAYS
                     for path in files_for_day(landing_dir, usecase.name, name, spec, day)]
        else:
            files = [(latest_snapshot(landing_dir, usecase.name, name, spec), None)]
        tables[name] = read_bronze_batch(files, spec, batch_id="parity", ingested_at=INGESTED_AT).table
    return tables


@pytest.fixture(scope="module")
def usecase() -> UseCaseConfig:
    return load_settings("local").usecases["flights"]


@pytest.fixture(scope="module")
def bronze(usecase: UseCaseConfig, landed_template: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, pa.Table]:
    landing_dir = tmp_path_factory.mktemp("parity") / "landing"
    shutil.copytree(landed_template, landing_dir)
    _inject_bad_rows(usecase, landing_dir)
    return _bronze(usecase, landing_dir)


@pytest.fixture(scope="module")
def spark():
    """One local Spark session for the module (the JVM start dominates its runtime)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("engine-parity")
    for key, value in LOCAL_SPARK_CONFIG.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    yield session
    session.stop()


def _run(engine: Engine, usecase: UseCaseConfig, bronze: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Silver, quarantine and conflicts of every source, then gold from that engine's own silver, as Arrow tables."""
    out = {}
    for name in SOURCES:
        conformed = conformed_tables(engine, engine.from_arrow(bronze[name]), usecase.sources[name])
        out[name], out[f"{name}_quarantine"], out[f"{name}_conflicts"] = (
            conformed.silver, conformed.quarantine, conformed.conflicts)
    silver = {name: engine.from_arrow(out[name]) for name in SOURCES}
    out["gold"] = engine.to_arrow(build_gold_flights(silver))
    return out


@pytest.fixture(scope="module")
def polars_out(usecase, bronze) -> dict[str, pa.Table]:
    return _run(PolarsEngine(), usecase, bronze)


@pytest.fixture(scope="module")
def spark_out(usecase, bronze, spark) -> dict[str, pa.Table]:
    return _run(SparkEngine(spark), usecase, bronze)


# --- comparison ------------------------------------------------------------------------------------------------------

def _sort_keys(usecase: UseCaseConfig, table_name: str) -> list[str]:
    if table_name == "gold":
        return list(usecase.gold["flights"].keys)
    if table_name.endswith(("_quarantine", "_conflicts")):
        return ["_source_file", "_source_row"]     # unique per bronze row
    return list(usecase.sources[table_name].keys)


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.take(pc.sort_indices(table, [(key, "ascending") for key in keys]))


def _assert_columns_equal(name: str, column: str, left: pa.ChunkedArray, right: pa.ChunkedArray) -> None:
    if pa.types.is_floating(left.type):
        pairs = zip(left.to_pylist(), right.to_pylist(), strict=True)
        bad = [(i, a, b) for i, (a, b) in enumerate(pairs)
               if (a is None) != (b is None)
               or (a is not None and not (math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
                                          or (math.isnan(a) and math.isnan(b))))]
    else:
        bad = [(i, a, b) for i, (a, b) in enumerate(zip(left.to_pylist(), right.to_pylist(), strict=True))
               if a != b]
    assert not bad, f"{name}.{column}: {len(bad)} rows differ, first (row, polars, spark): {bad[:3]}"


@pytest.mark.parametrize("table_name", [
    *SOURCES, *(f"{name}_quarantine" for name in SOURCES), *(f"{name}_conflicts" for name in SOURCES), "gold",
])
def test_both_engines_give_the_same_table(usecase, polars_out, spark_out, table_name):
    left, right = polars_out[table_name], spark_out[table_name]

    # Identical schemas as handed to the warehouse, already canonical: no normalisation left to the caller.
    assert left.schema.equals(right.schema), f"{table_name}:\npolars {left.schema}\nspark  {right.schema}"
    assert left.schema.equals(canonical_schema(left.schema))
    assert left.num_rows == right.num_rows

    keys = _sort_keys(usecase, table_name)
    left, right = _sorted(left, keys), _sorted(right, keys)
    for column in left.column_names:
        _assert_columns_equal(table_name, column, left.column(column), right.column(column))


@pytest.mark.parametrize("table_name", ["flights", "flights_quarantine", "gold"])
def test_the_spark_3_route_into_spark_gives_the_same_frame_as_the_arrow_route(usecase, polars_out, spark, table_name):
    """Databricks runtimes on Spark 3.5 take Arrow tables through pandas; nothing may change on the way."""
    table = polars_out[table_name]
    through_arrow = canonical_arrow(spark.createDataFrame(table).toArrow())
    through_pandas = canonical_arrow(arrow_to_spark_via_pandas(spark, table).toArrow())

    assert through_pandas.schema.equals(through_arrow.schema), f"{through_pandas.schema}\n{through_arrow.schema}"
    keys = _sort_keys(usecase, table_name)
    through_arrow, through_pandas = _sorted(through_arrow, keys), _sorted(through_pandas, keys)
    for column in through_arrow.column_names:
        _assert_columns_equal(table_name, column, through_arrow.column(column), through_pandas.column(column))


def test_quarantine_rules_and_counts_match_and_cover_every_injected_branch(polars_out, spark_out):
    for name in SOURCES:
        by_engine = [Counter(out[f"{name}_quarantine"].column(RULE_COLUMN).to_pylist())
                     for out in (polars_out, spark_out)]
        assert by_engine[0] == by_engine[1], name
        for rule, count in INJECTED_RULES.get(name, {}).items():
            assert by_engine[0][rule] >= count, f"{name}: injected row for {rule} not quarantined: {by_engine[0]}"


def test_the_largest_64_bit_integer_reaches_silver_on_both_engines(polars_out, spark_out):
    for out in (polars_out, spark_out):
        assert I64_MAX in out["flights"].column("flight").to_pylist()


def test_both_engines_report_the_same_conflict_and_keep_the_same_copy(polars_out, spark_out):
    for out in (polars_out, spark_out):
        conflicts = out["flights_conflicts"]
        assert conflicts.num_rows == 2
        kept = conflicts.filter(pc.field("_kept"))
        assert kept.column("dep_delay").to_pylist() == [42.5]


def test_deduplication_keeps_the_same_copy_on_both_engines(polars_out, spark_out, bronze):
    # The re-sent flight from the second file part wins over the first part's copy on both engines.
    for out in (polars_out, spark_out):
        resent = out["flights"].filter(pc.match_substring(out["flights"].column("_source_file"), "_part2"))
        assert resent.num_rows == 1 and resent.column("dep_delay").to_pylist() == [42.5]
    # Silver + quarantine + removed duplicates account for every bronze row (three duplicates were injected).
    for name, duplicates in {"flights": 2, "airlines": 1}.items():
        for out in (polars_out, spark_out):
            assert bronze[name].num_rows == out[name].num_rows + out[f"{name}_quarantine"].num_rows + duplicates


def test_gold_keeps_one_row_per_silver_flight_on_both_engines(polars_out, spark_out):
    for out in (polars_out, spark_out):
        assert out["gold"].num_rows == out["flights"].num_rows
        assert out["gold"].schema.field("scheduled_hour").type == pa.timestamp("us", tz="UTC")


def test_a_table_written_by_one_engine_takes_a_day_from_the_other(tmp_path, polars_out, spark_out, spark):
    """Delta refuses a write whose types differ from the table's: each engine must replace the other's days."""
    warehouse = DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="parity")
    days = DayRange("flight_date", LANDED_DAYS[0], LANDED_DAYS[-1])
    one_day = DayRange("flight_date", BAD_DAY, BAD_DAY)

    def day_of(table: pa.Table) -> pa.Table:
        return table.filter(pc.equal(table.column("flight_date"), pa.scalar(BAD_DAY, pa.date32())))

    # Silver written by Polars, one day replaced by Spark; gold the other way round.
    warehouse.replace_days("silver", "flights", polars_out["flights"], days)
    warehouse.replace_days("silver", "flights", day_of(spark_out["flights"]), one_day)
    warehouse.replace_days("gold", "flights", spark_out["gold"], days)
    warehouse.replace_days("gold", "flights", day_of(polars_out["gold"]), one_day)
    quarantine_days = DayRange(LANDING_DATE, LANDED_DAYS[0], LANDED_DAYS[-1])
    warehouse.replace_days("silver", "flights_quarantine", polars_out["flights_quarantine"], quarantine_days)
    warehouse.replace_days("silver", "flights_quarantine", spark_out["flights_quarantine"], quarantine_days)

    assert warehouse.row_count("silver", "flights") == polars_out["flights"].num_rows
    assert warehouse.row_count("gold", "flights") == polars_out["gold"].num_rows

    # Spark reading what Polars wrote (its Parquet files) and handing it back gives the same canonical schema.
    spark_engine, polars_engine = SparkEngine(spark), PolarsEngine()
    reread = spark_engine.to_arrow(spark_engine.read(warehouse, "silver", "flights", one_day))
    assert reread.schema.equals(polars_engine.to_arrow(polars_engine.read(warehouse, "silver", "flights")).schema)
    warehouse.replace_days("silver", "flights", reread, one_day)
    assert reread.num_rows == day_of(polars_out["flights"]).num_rows


def test_a_reused_frame_is_cached_on_spark_for_the_block_only(spark):
    engine = SparkEngine(spark)
    frame = engine.from_arrow(pa.table({"flight": [3, 1, 2]}))
    with engine.reused(frame) as reused:
        assert reused.to_native().storageLevel.useMemory
        assert engine.to_arrow(reused).column("flight").to_pylist() == [3, 1, 2]
    assert not frame.to_native().storageLevel.useMemory


def test_both_engines_read_the_same_rows_through_filters(tmp_path, polars_out, spark):
    """Scoring reads feature tables between timestamp bounds (``features.lookup_bounds``): Spark applies the filters
    itself, and must keep exactly the rows the Delta reader keeps."""
    warehouse = DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="parity")
    gold = polars_out["gold"]
    for day in LANDED_DAYS:
        warehouse.append("gold", "flights", gold.filter(pc.equal(gold.column("flight_date"),
                                                                 pa.scalar(day, pa.date32()))))
    hours = sorted(gold.column("scheduled_hour").drop_null().to_pylist())
    low, high = hours[len(hours) // 3], hours[2 * len(hours) // 3]
    filters = [("scheduled_hour", ">=", low), ("scheduled_hour", "<=", high), ("origin", "!=", "EWR"),
               ("carrier", "in", ["UA", "AA", "B6"])]
    keys = list(load_settings("local").usecases["flights"].gold["flights"].keys)

    read = {engine.name: _sorted(engine.to_arrow(engine.read(warehouse, "gold", "flights", filters=filters)), keys)
            for engine in (PolarsEngine(), SparkEngine(spark))}

    assert 0 < read["polars"].num_rows < gold.num_rows
    assert read["spark"].equals(read["polars"])
