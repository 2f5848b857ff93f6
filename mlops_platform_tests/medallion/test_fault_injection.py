"""Fault injection over hand-written landing files: every class of bad input, with exact counts per output.

The source is not the flights use case the code grew up with: hourly readings of weather stations, written by hand
here byte by byte (CSV and JSON lines), with every column type the platform knows. Each test lands files, reads
them as bronze does (``files_for_day`` + ``read_bronze_batch``), writes bronze to a real Delta warehouse in a
temporary folder, conforms what it reads back (``conformed_tables``) and writes silver and quarantine. It then
asserts the exact rows of each output (bronze, silver, quarantine by rule, conflicts) and that every good row
reached silver with its values. The last tests run the bronze and silver assets themselves with
``dg.materialize``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from mlops_platform import names
from mlops_platform.defs.bronze.assets import bronze_assets
from mlops_platform.defs.silver.assets import silver_assets
from mlops_platform.ingest import (
    CSV_QUOTING,
    ENCODING,
    FIELD_COUNT,
    JSON_LINE,
    UNTERMINATED,
    BronzeBatch,
    LandingFileError,
    read_bronze_batch,
)
from mlops_platform.landing import export_name, files_for_day, source_dir, unread_files
from mlops_platform.resources.engine import ComputeEngine, PolarsEngine
from mlops_platform.resources.landing_zone import LandingZone
from mlops_platform.resources.spark import spark_sessions
from mlops_platform.resources.warehouse import DayRange, DeltaWarehouse
from mlops_platform.settings import SourceConfig, UseCaseConfig, load_settings
from mlops_platform.transforms.conform import LANDING_DATE, RULE_COLUMN, conformed_tables
from mlops_platform_tests.conftest import QUIET

USECASE = "stations"
SOURCE = "readings"
DAY = dt.date(2013, 3, 10)
INGESTED_AT = dt.datetime(2013, 3, 11, 6, 0, tzinfo=dt.UTC)
LANDED_FROM = 1_362_900_000_000_000_000  # ns: 2013-03-10T07:20Z, the first file's landing time

COLUMNS = {"station": "string", "reading_id": "int", "year": "int", "month": "int", "day": "int",
           "taken_at": "datetime", "value": "float", "calibrated_on": "date", "ok": "bool", "note": "string"}
CSV_SOURCE = SourceConfig.model_validate({
    "description": "Hourly readings of weather stations.",
    "format": "csv",
    "columns": COLUMNS,
    "keys": ["reading_date", "station", "reading_id"],
    "partition": {"column": "reading_date", "from_parts": ["year", "month", "day"]},
    "rules": [{"name": "value_plausible", "kind": "range", "column": "value", "min": -80, "max": 150}],
})
JSON_SOURCE = CSV_SOURCE.model_copy(update={"format": "jsonl"})

HEADER = "station,reading_id,year,month,day,taken_at,value,calibrated_on,ok,note"
R1 = "KJFK,1,2013,3,10,2013-03-10T00:15:00Z,12.5,2013-01-31,true,fine"
R2 = "KJFK,2,2013,3,10,2013-03-10T01:15:00Z,-3,2012-02-29,false,"
R3 = "KLGA,1,2013,3,10,2013-03-10T02:15:00Z,0.25,2013-03-01,True,calm"
# The typed values silver must hold for R1-R3, keyed by (station, reading_id).
GOOD = {
    ("KJFK", 1): (dt.datetime(2013, 3, 10, 0, 15, tzinfo=dt.UTC), 12.5, dt.date(2013, 1, 31), True, "fine"),
    ("KJFK", 2): (dt.datetime(2013, 3, 10, 1, 15, tzinfo=dt.UTC), -3.0, dt.date(2012, 2, 29), False, None),
    ("KLGA", 1): (dt.datetime(2013, 3, 10, 2, 15, tzinfo=dt.UTC), 0.25, dt.date(2013, 3, 1), True, "calm"),
}


def csv_bytes(*lines: str, newline: str = "\n", last_newline: bool = True) -> bytes:
    return (newline.join(lines) + (newline if last_newline else "")).encode()


@dataclass
class Outcome:
    batch: BronzeBatch
    bronze: pl.DataFrame
    silver: pl.DataFrame
    quarantine: pl.DataFrame
    conflicts: pl.DataFrame

    def quarantined_by_rule(self) -> dict[str, int]:
        return dict(Counter(self.quarantine[RULE_COLUMN].to_list()))

    def silver_values(self) -> dict[tuple[str, int], tuple]:
        rows = self.silver.select("station", "reading_id", "taken_at", "value", "calibrated_on", "ok", "note").rows()
        return {(row[0], row[1]): row[2:] for row in rows}


def land(tmp_path: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` into the source's folder, each landing one second after the one before (dict order)."""
    landing = tmp_path / "landing"
    folder = source_dir(landing, USECASE, SOURCE)
    folder.mkdir(parents=True, exist_ok=True)
    for position, (name, content) in enumerate(files.items()):
        path = folder / name
        path.write_bytes(content)
        stamp = LANDED_FROM + position * 1_000_000_000
        os.utime(path, ns=(stamp, stamp))
    return landing


def ingest(tmp_path: Path, files: dict[str, bytes], source: SourceConfig = CSV_SOURCE) -> Outcome:
    """Land ``files``, then bronze -> Delta -> silver, quarantine and conflicts -> Delta, read back."""
    landing = land(tmp_path, files)
    paths = [(path, DAY) for path in files_for_day(landing, USECASE, SOURCE, source, DAY)]
    batch = read_bronze_batch(paths, source, batch_id="faults", ingested_at=INGESTED_AT)
    warehouse = DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="faults")
    bronze_days = DayRange(LANDING_DATE, DAY, DAY)
    warehouse.replace_days("bronze", SOURCE, batch.table, bronze_days)
    engine = PolarsEngine()
    conformed = conformed_tables(engine, engine.read(warehouse, "bronze", SOURCE, bronze_days), source)
    warehouse.replace_days("silver", SOURCE, conformed.silver, DayRange("reading_date", DAY, DAY))
    warehouse.replace_days("silver", f"{SOURCE}_quarantine", conformed.quarantine, bronze_days)

    def read(schema: str, table: str) -> pl.DataFrame:
        return pl.from_arrow(warehouse.read(schema, table)).sort("_source_file", "_source_row")

    return Outcome(batch, read("bronze", SOURCE), read("silver", SOURCE), read("silver", f"{SOURCE}_quarantine"),
                   pl.from_arrow(conformed.conflicts))


def day_file(part: int = 1, source: SourceConfig = CSV_SOURCE) -> str:
    return export_name(SOURCE, source, DAY, part)


def assert_good_rows_in_silver(outcome: Outcome, expected: dict[tuple[str, int], tuple] = GOOD) -> None:
    values = outcome.silver_values()
    assert {key: values.get(key) for key in expected} == expected


# --- files that are fine, however they are spelled --------------------------------------------------------------------

def test_a_clean_file_reaches_silver_whole_with_its_values(tmp_path):
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, R2, R3)})

    assert (outcome.bronze.height, outcome.silver.height, outcome.quarantine.height) == (3, 3, 0)
    assert_good_rows_in_silver(outcome)
    assert outcome.bronze.select("_source_row", "_source_line").rows() == [(1, 2), (2, 3), (3, 4)]
    assert outcome.bronze["_parse_rule"].null_count() == 3
    assert outcome.conflicts.height == 0


@pytest.mark.parametrize(("name", "content"), [
    ("bom", b"\xef\xbb\xbf" + csv_bytes(HEADER, R1, R2, R3)),
    ("crlf", csv_bytes(HEADER, R1, R2, R3, newline="\r\n")),
    ("bom-crlf-quoted", b"\xef\xbb\xbf" + csv_bytes(HEADER, R1, R2, R3.replace(",calm", ',"calm"'), newline="\r\n")),
    ("blank-lines", csv_bytes(HEADER, R1, "", R2, "", R3)),
])
def test_a_byte_order_mark_crlf_line_ends_quotes_and_blank_lines_change_nothing(tmp_path, name, content):
    outcome = ingest(tmp_path, {day_file(): content})

    assert (outcome.bronze.height, outcome.silver.height, outcome.quarantine.height) == (3, 3, 0)
    assert_good_rows_in_silver(outcome)
    assert "station" in outcome.bronze.columns     # the header's first name, not "\ufeffstation"
    assert not any("\r" in (note or "") for note in outcome.silver["note"].to_list())


def test_quoted_separators_quotes_and_newlines_stay_inside_their_field(tmp_path):
    quoted = 'KEWR,7,2013,3,10,2013-03-10T03:15:00Z,4.5,2013-03-02,false,"gusts, then ""calm""\nafter 3am"'
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, quoted, R2)})

    assert (outcome.silver.height, outcome.quarantine.height) == (3, 0)
    assert outcome.silver_values()[("KEWR", 7)][-1] == 'gusts, then "calm"\nafter 3am'
    # The record after the embedded newline starts on line 5: lines, not records, are what an editor shows.
    assert outcome.bronze.select("_source_row", "_source_line").rows() == [(1, 2), (2, 3), (3, 5)]


# --- rows that cannot be parsed: quarantined, the rest of the day proceeds ----------------------------------------

def test_a_truncated_last_line_is_quarantined_not_padded_with_nulls(tmp_path):
    cut = "KLGA,1,2013,3,10,2013-03-10T02:15:00Z,0."
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, R2, cut, last_newline=False)})

    assert (outcome.bronze.height, outcome.silver.height) == (3, 2)
    assert outcome.quarantined_by_rule() == {UNTERMINATED: 1}
    bad = outcome.quarantine.row(0, named=True)
    assert (bad["_raw_line"], bad["_source_line"], bad["_source_row"]) == (cut, 4, 3)
    assert "cut short" in bad["_rule_detail"]
    assert bad["station"] is None and bad["value"] is None     # nothing half-parsed reaches a column
    assert_good_rows_in_silver(outcome, {key: GOOD[key] for key in [("KJFK", 1), ("KJFK", 2)]})


def test_a_last_line_cut_inside_its_last_field_is_quarantined_although_its_field_count_is_right(tmp_path):
    # "calm" cut to "ca": ten fields, every value valid; only the missing line break tells.
    cut = R3.removesuffix("lm")
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, R2, cut, last_newline=False)})

    assert outcome.quarantined_by_rule() == {UNTERMINATED: 1}
    assert outcome.silver.height == 2


def test_rows_with_too_few_or_too_many_fields_are_quarantined_with_their_line(tmp_path):
    short = "KEWR,1,2013,3,10,2013-03-10T00:15:00Z,4.0"
    long = "KEWR,2,2013,3,10,2013-03-10T01:15:00Z,4.0,2013-03-01,true,ok,EXTRA"
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, short, R2, long, R3)})

    assert (outcome.bronze.height, outcome.silver.height) == (5, 3)
    assert outcome.quarantined_by_rule() == {FIELD_COUNT: 2}
    assert outcome.quarantine.select("_source_line", "_raw_line", "_rule_detail").rows() == [
        (3, short, "expected 10 fields, found 7"), (5, long, "expected 10 fields, found 11")]
    assert_good_rows_in_silver(outcome)


def test_a_broken_quote_within_one_line_is_quarantined(tmp_path):
    broken = 'KEWR,1,2013,3,10,2013-03-10T00:15:00Z,4.0,2013-03-01,true,"calm"ish'
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, broken, R2, R3)})

    assert outcome.quarantined_by_rule() == {CSV_QUOTING: 1}
    assert outcome.quarantine["_source_line"].to_list() == [3]
    assert_good_rows_in_silver(outcome)


def test_bytes_that_are_not_utf8_in_one_field_quarantine_that_row_only(tmp_path):
    latin1 = "KEWR,1,2013,3,10,2013-03-10T00:15:00Z,4.0,2013-03-01,true,M\xfcnchen".encode("latin-1")
    content = csv_bytes(HEADER, R1) + latin1 + b"\n" + csv_bytes(R2, R3)
    outcome = ingest(tmp_path, {day_file(): content})

    assert (outcome.bronze.height, outcome.silver.height) == (4, 3)
    assert outcome.quarantined_by_rule() == {ENCODING: 1}
    bad = outcome.quarantine.row(0, named=True)
    assert bad["_rule_detail"] == "not valid UTF-8 in note"
    assert bad["_raw_line"] == "KEWR,1,2013,3,10,2013-03-10T00:15:00Z,4.0,2013-03-01,true,M\\xfcnchen"
    assert_good_rows_in_silver(outcome)


def test_numbers_beyond_64_bits_and_non_finite_floats_are_quarantined_and_the_limits_kept(tmp_path):
    rows = [
        "KEWR,9223372036854775807,2013,3,10,2013-03-10T00:15:00Z,1e2,2013-03-01,true,",    # i64 max: valid
        "KEWR,-9223372036854775808,2013,3,10,2013-03-10T00:15:00Z,-1.5E1,2013-03-01,true,",  # i64 min: valid
        "KEWR,9223372036854775808,2013,3,10,2013-03-10T00:15:00Z,1,2013-03-01,true,",      # max + 1
        "KEWR,-9223372036854775809,2013,3,10,2013-03-10T00:15:00Z,1,2013-03-01,true,",     # min - 1
        "KEWR,99999999999999999999999,2013,3,10,2013-03-10T00:15:00Z,1,2013-03-01,true,",
        "KEWR,5,2013,3,10,2013-03-10T00:15:00Z,1e999,2013-03-01,true,",                   # float overflow
    ]
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, R2, R3, *rows)})

    assert (outcome.bronze.height, outcome.silver.height) == (9, 5)
    assert outcome.quarantined_by_rule() == {"type_reading_id": 3, "type_value": 1}
    assert outcome.silver_values()[("KEWR", 2**63 - 1)][1] == 100.0
    assert outcome.silver_values()[("KEWR", -(2**63))][1] == -15.0
    assert_good_rows_in_silver(outcome)


def test_impossible_dates_and_times_are_quarantined_and_real_leap_days_kept(tmp_path):
    template = "KEWR,{id},2013,3,10,{taken_at},1.0,{calibrated},true,"
    cases = [  # (reading_id, taken_at, calibrated_on, expected rule or None)
        (10, "2013-03-10T25:00:00Z", "2013-03-01", "type_taken_at"),
        (11, "2013-03-10T23:60:00Z", "2013-03-01", "type_taken_at"),
        (12, "2013-02-30T10:00:00Z", "2013-03-01", "type_taken_at"),
        (13, "2013-03-10T10:00:00Z", "2013-02-29", "type_calibrated_on"),    # 2013 is not a leap year
        (14, "2013-03-10T10:00:00Z", "1900-02-29", "type_calibrated_on"),    # nor is 1900
        (15, "2013-03-10T10:00:00Z", "2013-04-31", "type_calibrated_on"),
        (16, "2013-03-10T10:00:00Z", "0000-01-01", "type_calibrated_on"),    # there is no year 0
        (17, "2013-03-10T23:59:59Z", "2000-02-29", None),
        (18, "2013-03-10T00:00:00Z", "2013-12-31", None),
    ]
    rows = [template.format(id=id_, taken_at=taken, calibrated=calibrated) for id_, taken, calibrated, _ in cases]
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, R2, R3, *rows)})

    quarantined = dict(outcome.quarantine.select(pl.col("reading_id").cast(pl.Int64), RULE_COLUMN).rows())
    assert quarantined == {id_: rule for id_, _, _, rule in cases if rule}
    assert outcome.silver.height == 3 + 2
    assert outcome.silver_values()[("KEWR", 17)][:3] == (dt.datetime(2013, 3, 10, 23, 59, 59, tzinfo=dt.UTC), 1.0,
                                                         dt.date(2000, 2, 29))
    assert_good_rows_in_silver(outcome)


def test_dates_and_numbers_in_other_formats_are_quarantined_by_column(tmp_path):
    template = "KEWR,{id},2013,3,10,{taken_at},{value},{calibrated},{ok},"
    good = {"taken_at": "2013-03-10T10:00:00Z", "value": "1.0", "calibrated": "2013-03-01", "ok": "true"}
    variants = [  # one column spelled differently per row
        ("taken_at", "2013-03-10 10:00:00"), ("taken_at", "2013-03-10T10:00:00+01:00"), ("taken_at", "1362909600"),
        ("calibrated", "03/01/2013"), ("calibrated", "2013-3-1"), ("value", '"1,5"'), ("value", "1 000"),
        ("value", " 2.0"), ("ok", "yes"), ("ok", "1"),
    ]
    rows = [template.format(id=20 + i, **(good | {column: spelling})) for i, (column, spelling) in enumerate(variants)]
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, R2, R3, *rows)})

    assert outcome.quarantined_by_rule() == {"type_taken_at": 3, "type_calibrated_on": 2, "type_value": 3,
                                             "type_ok": 2}
    assert outcome.quarantine["value"].to_list()[5:8] == ["1,5", "1 000", " 2.0"]   # raw, as landed
    assert outcome.silver.height == 3
    assert_good_rows_in_silver(outcome)


# --- files that cannot be read at all: the batch fails naming the file and the line ---------------------------------

def test_a_quote_that_never_closes_fails_the_file_naming_the_line(tmp_path):
    landing = land(tmp_path, {day_file(): csv_bytes(HEADER, R1, '"' + R2, R3)})
    path = files_for_day(landing, USECASE, SOURCE, CSV_SOURCE, DAY)[0]

    with pytest.raises(LandingFileError) as failure:
        read_bronze_batch([(path, DAY)], CSV_SOURCE, batch_id="faults", ingested_at=INGESTED_AT)

    assert failure.value.line == 3
    assert str(failure.value).startswith(f"{path}, line 3: a quote opened on this line does not close on it: "
                                         "lines 3-4 cannot be read as records")


def test_a_stray_quote_pair_that_swallows_lines_fails_the_file_naming_both_lines(tmp_path):
    swallowing = R2.replace(",false,", ',"false,')
    closing = R3.replace(",calm", ',calm"')
    landing = land(tmp_path, {day_file(): csv_bytes(HEADER, R1, swallowing, R1.replace("KJFK", "KBOS"), closing)})
    path = files_for_day(landing, USECASE, SOURCE, CSV_SOURCE, DAY)[0]

    with pytest.raises(LandingFileError, match=r"line 3: a quote opened on this line closes on line 5, so lines 3-5 "
                                               r"read as one record of \d+ fields instead of 10"):
        read_bronze_batch([(path, DAY)], CSV_SOURCE, batch_id="faults", ingested_at=INGESTED_AT)


@pytest.mark.parametrize(("header", "missing", "found"), [
    (HEADER.replace("value", "reading"), "['value']", "'reading'"),                  # renamed
    (HEADER.replace(",ok", ""), "['ok']", "'note'"),                                    # missing
], ids=["renamed", "missing"])
def test_a_renamed_or_missing_column_fails_the_file_naming_the_column(tmp_path, header, missing, found):
    landing = land(tmp_path, {day_file(): csv_bytes(header, R1)})
    path = files_for_day(landing, USECASE, SOURCE, CSV_SOURCE, DAY)[0]

    with pytest.raises(LandingFileError) as failure:
        read_bronze_batch([(path, DAY)], CSV_SOURCE, batch_id="faults", ingested_at=INGESTED_AT)

    assert str(failure.value).startswith(f"{path}, line 1: missing declared columns {missing} (found [")
    assert found in str(failure.value)


def test_a_repeated_column_fails_the_file(tmp_path):
    landing = land(tmp_path, {day_file(): csv_bytes(HEADER + ",note", R1 + ",again")})
    path = files_for_day(landing, USECASE, SOURCE, CSV_SOURCE, DAY)[0]

    with pytest.raises(LandingFileError, match=r"line 1: the header repeats columns \['note'\]"):
        read_bronze_batch([(path, DAY)], CSV_SOURCE, batch_id="faults", ingested_at=INGESTED_AT)


def test_a_file_that_cannot_be_opened_fails_naming_it(tmp_path):
    landing = land(tmp_path, {})
    path = source_dir(landing, USECASE, SOURCE) / day_file()
    path.mkdir()   # a folder where the file should be

    with pytest.raises(LandingFileError, match=rf"^{re.escape(str(path))}: cannot be read: Is a directory"):
        read_bronze_batch([(path, DAY)], CSV_SOURCE, batch_id="faults", ingested_at=INGESTED_AT)


def test_an_extra_column_is_reported_and_left_out(tmp_path):
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER + ",gate", R1 + ",G1", R2 + ",G2", R3 + ",G3")})

    assert "gate" not in outcome.bronze.columns
    assert list(outcome.batch.unexpected_columns.values()) == [["gate"]]
    assert (outcome.silver.height, outcome.quarantine.height) == (3, 0)


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n", b"\xef\xbb\xbf", csv_bytes(HEADER),
                                     csv_bytes(HEADER, newline="\r\n"), csv_bytes(HEADER, last_newline=False)],
                         ids=["empty", "blank-line", "spaces", "bom-only", "header-only", "header-only-crlf",
                              "header-no-eol"])
def test_an_empty_or_header_only_file_gives_no_rows_and_is_reported(tmp_path, content):
    outcome = ingest(tmp_path, {day_file(): content})

    assert (outcome.bronze.height, outcome.silver.height, outcome.quarantine.height) == (0, 0, 0)
    assert len(outcome.batch.empty_files) == 1


# --- several copies of a key -------------------------------------------------------------------------------------------

def test_exact_duplicates_are_removed_without_a_conflict(tmp_path):
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, R2, R3, R1, R1)})

    assert (outcome.bronze.height, outcome.silver.height, outcome.quarantine.height) == (5, 3, 0)
    assert outcome.conflicts.height == 0
    assert outcome.silver.filter(pl.col("station") == "KJFK", pl.col("reading_id") == 1)["_source_row"].to_list() == [5]


def test_copies_that_disagree_are_conflicts_and_the_last_landed_file_wins_whatever_its_name(tmp_path):
    revised = R1.replace(",12.5,", ",13.0,")
    # Part 2 landed first, the unnumbered file last: its name sorts first, yet it is the newer export.
    outcome = ingest(tmp_path, {day_file(part=2): csv_bytes(HEADER, revised, R2),
                                day_file(): csv_bytes(HEADER, R1, R3)})

    assert (outcome.bronze.height, outcome.silver.height) == (4, 3)
    assert_good_rows_in_silver(outcome)                     # 12.5, from the file landed last
    assert outcome.conflicts.select("reading_id", "value", "_kept").rows() == [(1, 13.0, False), (1, 12.5, True)]
    assert [Path(name).name for name in outcome.conflicts["_source_file"]] == [day_file(part=2), day_file()]


def test_within_one_file_the_later_row_wins(tmp_path):
    revised = R1.replace(",12.5,", ",13.0,")
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, R2, R3, revised)})

    assert outcome.silver_values()[("KJFK", 1)][1] == 13.0
    assert outcome.conflicts["_kept"].to_list() == [False, True]


# --- files that do not follow the naming convention --------------------------------------------------------------------

def test_a_stale_file_beside_the_days_export_is_reported_and_not_read(tmp_path):
    stale = csv_bytes(HEADER, R1.replace(",12.5,", ",99.0,"), R2)
    # Landed after the real export, and its name sorts after it: neither makes it the day's data.
    outcome = ingest(tmp_path, {day_file(): csv_bytes(HEADER, R1, R2, R3),
                                f"{SOURCE}_{DAY.isoformat()}_old.csv": stale,
                                f"{SOURCE}-{DAY.isoformat()}.csv": stale,
                                f".{day_file()}.partial": stale})

    assert [Path(name).name for name in outcome.batch.files] == [day_file()]
    assert (outcome.bronze.height, outcome.silver.height, outcome.conflicts.height) == (3, 3, 0)
    assert_good_rows_in_silver(outcome)
    unread = unread_files(tmp_path / "landing", USECASE, SOURCE, CSV_SOURCE, [DAY])
    # The file being written (a dot file) is not reported: it is not landed yet.
    assert sorted(path.name for path in unread) == [f"{SOURCE}-{DAY.isoformat()}.csv",
                                                    f"{SOURCE}_{DAY.isoformat()}_old.csv"]


# --- JSON lines --------------------------------------------------------------------------------------------------------

J1 = '{"station": "KJFK", "reading_id": 1, "year": 2013, "month": 3, "day": 10, "taken_at": "2013-03-10T00:15:00Z", ' \
     '"value": 12.50, "calibrated_on": "2013-01-31", "ok": true, "note": "fine"}'
J2 = '{"station": "KJFK", "reading_id": 2, "year": 2013, "month": 3, "day": 10, "taken_at": "2013-03-10T01:15:00Z", ' \
     '"value": -3, "calibrated_on": "2012-02-29", "ok": false}'     # "note" absent: null
J3 = '{"station": "KLGA", "reading_id": 1, "year": 2013, "month": 3, "day": 10, "taken_at": "2013-03-10T02:15:00Z", ' \
     '"value": 2.5e-1, "calibrated_on": "2013-03-01", "ok": "True", "note": "calm"}'


def test_json_lines_keep_numbers_as_written_and_read_absent_keys_as_null(tmp_path):
    outcome = ingest(tmp_path, {day_file(source=JSON_SOURCE): csv_bytes(J1, J2, J3)}, JSON_SOURCE)

    assert (outcome.silver.height, outcome.quarantine.height) == (3, 0)
    assert outcome.bronze["value"].to_list() == ["12.50", "-3", "2.5e-1"]
    assert outcome.bronze["ok"].to_list() == ["true", "false", "True"]
    assert_good_rows_in_silver(outcome)


def test_malformed_json_lines_are_quarantined_with_their_line_and_the_rest_proceeds(tmp_path):
    broken = J2.replace('"value": -3,', '"value": -3')                 # a missing comma
    array = '["KEWR", 3, 2013, 3, 10]'
    latin1 = J1.replace("fine", "M\xfcnchen").replace('"reading_id": 1', '"reading_id": 9').encode("latin-1")
    cut = J3[:60]
    content = csv_bytes(J1, broken, array) + latin1 + b"\n\n" + csv_bytes(J2, J3) + cut.encode()
    outcome = ingest(tmp_path, {day_file(source=JSON_SOURCE): content}, JSON_SOURCE)

    assert (outcome.bronze.height, outcome.silver.height) == (7, 3)
    assert outcome.quarantined_by_rule() == {JSON_LINE: 3, ENCODING: 1}
    rows = outcome.quarantine.select("_source_line", RULE_COLUMN, "_rule_detail").rows()
    assert [(line, rule) for line, rule, _ in rows] == [(2, JSON_LINE), (3, JSON_LINE), (4, ENCODING), (8, JSON_LINE)]
    assert rows[0][2].startswith("not valid JSON: Expecting ',' delimiter at column")
    assert rows[1][2] == "a line must be a JSON object, found list"
    assert rows[3][2].endswith("(the last line ends without a line break: the file may have been cut short)")
    assert outcome.quarantine["_raw_line"].to_list()[3] == cut
    assert_good_rows_in_silver(outcome)


def test_a_json_file_without_one_object_fails_naming_the_first_line(tmp_path):
    landing = land(tmp_path, {day_file(source=JSON_SOURCE): csv_bytes(HEADER, R1)})
    path = files_for_day(landing, USECASE, SOURCE, JSON_SOURCE, DAY)[0]

    with pytest.raises(LandingFileError,
                       match=rf"^{re.escape(str(path))}, line 1: no line is a JSON object: not valid JSON"):
        read_bronze_batch([(path, DAY)], JSON_SOURCE, batch_id="faults", ingested_at=INGESTED_AT)


def test_a_json_key_absent_from_every_line_fails_naming_it(tmp_path):
    without_ok = [line.replace('"ok": true, ', "").replace(', "ok": false', "").replace('"ok": "True", ', "")
                  for line in (J1, J2, J3)]
    assert not any('"ok"' in line for line in without_ok)
    landing = land(tmp_path, {day_file(source=JSON_SOURCE): csv_bytes(*without_ok)})
    path = files_for_day(landing, USECASE, SOURCE, JSON_SOURCE, DAY)[0]

    with pytest.raises(LandingFileError, match=rf"^{re.escape(str(path))}: missing declared columns \['ok'\]"):
        read_bronze_batch([(path, DAY)], JSON_SOURCE, batch_id="faults", ingested_at=INGESTED_AT)


# --- the same faults through the bronze and silver assets --------------------------------------------------------------

def _stations(source: SourceConfig) -> UseCaseConfig:
    return UseCaseConfig.model_validate({
        "name": USECASE, "description": "Weather stations (fault injection).", "owners": ["team:test"],
        "module": "mlops_platform.usecases.flights", "partitions": {"start": "2013-03-01", "end": "2013-04-01"},
        "sources": {SOURCE: source},
    })


@dataclass
class Materialized:
    result: dg.ExecuteInProcessResult
    bronze: dict[str, object]
    silver: dict[str, object]
    quarantine: dict[str, object]

    def checks(self) -> dict[str, dg.AssetCheckEvaluation]:
        return {evaluation.check_name: evaluation for evaluation in self.result.get_asset_check_evaluations()}


def _materialize(tmp_path: Path, source: SourceConfig) -> Materialized:
    usecase = _stations(source)
    revised = R1.replace(",12.5,", ",13.0,")
    land(tmp_path, {
        day_file(part=2): csv_bytes(HEADER, revised),
        day_file(): csv_bytes(HEADER, R1, R2, R3, "KEWR,1,2013,3,10,2013-03-10T25:00:00Z,1.0,2013-03-01,true,",
                              "KEWR,2,2013,3,10", "KEWR,3,2013,3,10,2013-03-10T00:15:00Z,1e999,2013-03-01,true,x",
                              R3.removesuffix("lm"), last_newline=False),
        f"{SOURCE}_{DAY.isoformat()}_old.csv": csv_bytes(HEADER, R1),
    })
    (bronze,), (silver,) = bronze_assets(usecase), silver_assets(usecase)
    result = dg.materialize(
        [bronze, silver],
        partition_key=DAY.isoformat(),
        resources={"warehouse": DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="faults"),
                   "landing": LandingZone(root=str(tmp_path / "landing")),
                   "engine": ComputeEngine(kind="polars", pyspark=spark_sessions())},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, run_config=QUIET,
    )
    metadata = {event.asset_key: {name: value.value for name, value in event.materialization.metadata.items()}
                for event in result.get_asset_materialization_events()}
    quarantine_key = next(key for key in silver.keys if key.path[-1] == names.quarantine(SOURCE))
    silver_key = next(key for key in silver.keys if key != quarantine_key)
    return Materialized(result, metadata[bronze.key], metadata.get(silver_key, {}), metadata.get(quarantine_key, {}))


def _table(metadata: dict[str, object]) -> pl.DataFrame:
    return pl.from_arrow(DeltaTable(metadata["dagster/uri"]).to_pyarrow_table())


def test_the_assets_quarantine_each_faulty_row_report_the_stale_file_and_warn_about_the_conflict(tmp_path):
    run = _materialize(tmp_path, CSV_SOURCE)

    assert run.result.success
    assert [Path(name).name for name in run.bronze["source_files"]] == [day_file(part=2), day_file()]
    assert [Path(name).name for name in run.bronze["unread_files"]] == [f"{SOURCE}_{DAY.isoformat()}_old.csv"]
    assert {Path(name).name: count for name, count in run.bronze["malformed_rows"].items()} == {day_file(): 2}
    assert run.bronze["dagster/row_count"] == 8

    quarantine = _table(run.quarantine)
    assert dict(Counter(quarantine[RULE_COLUMN].to_list())) == {
        "type_taken_at": 1, FIELD_COUNT: 1, "type_value": 1, UNTERMINATED: 1}
    silver = _table(run.silver)
    assert sorted(silver.select("station", "reading_id").rows()) == sorted(GOOD)
    assert silver.filter(pl.col("station") == "KJFK", pl.col("reading_id") == 1)["value"].to_list() == [12.5]

    checks = run.checks()
    conflict = checks["keys_consistent"]
    assert not conflict.passed and conflict.severity == dg.AssetCheckSeverity.WARN
    assert conflict.metadata["conflicting_keys"].value == 1
    sample = conflict.metadata["conflicting_sample"].value
    assert [(row["value"], row["_kept"]) for row in sample] == [(13.0, False), (12.5, True)]
    assert checks["rows_reconcile"].passed


def test_a_conflict_blocks_the_day_when_the_source_says_so(tmp_path):
    run = _materialize(tmp_path, CSV_SOURCE.model_copy(update={"conflict_severity": "ERROR"}))

    assert not run.result.success
    conflict = run.checks()["keys_consistent"]
    assert not conflict.passed
    assert conflict.severity == dg.AssetCheckSeverity.ERROR


def test_both_csv_readers_give_the_same_bronze_rows_for_a_real_day(tmp_path, landed_template):
    """A clean file goes through Polars; quoting one value sends the same file through Python's ``csv``."""
    flights = landed_template / "flights" / "flights"
    spec = load_settings("local").usecases["flights"].sources["flights"]
    original = min(flights.glob("flights_*.csv"))
    lines = original.read_text().splitlines(keepends=True)
    first = lines[1].split(",")
    quoted = tmp_path / original.name
    quoted.write_text("".join([lines[0], ",".join([f'"{first[0]}"', *first[1:]]), *lines[2:]]))
    os.utime(quoted, ns=(original.stat().st_mtime_ns,) * 2)

    def bronze(path: Path) -> pl.DataFrame:
        table = read_bronze_batch([(path, DAY)], spec, batch_id="faults", ingested_at=INGESTED_AT).table
        return pl.from_arrow(table).drop("_source_file")

    assert bronze(quoted).equals(bronze(original))
    assert bronze(original).height == len(lines) - 1
