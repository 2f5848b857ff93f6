"""The landing naming convention, owned by ``mlops_platform.landing``: which files are a day's export, in what
order they landed, and which are reported instead of read."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from mlops_platform.landing import (
    export_name,
    files_for_day,
    latest_snapshot,
    newest_snapshot,
    parse_export_name,
    sort_exports,
    source_dir,
    unread_files,
)
from mlops_platform.settings import SourceConfig

SPEC = SourceConfig.model_validate({"description": "d", "format": "csv", "columns": {"id": "int"}, "keys": ["id"]})
DAY = dt.date(2013, 1, 5)


@pytest.mark.parametrize(("name", "expected"), [
    ("flights_2013-01-05.csv", (DAY, 1)),
    ("flights_2013-01-05_part2.csv", (DAY, 2)),
    ("flights_2013-01-05_part12.csv", (DAY, 12)),
    ("flights_2013-01-05_part1.csv", (DAY, 1)),
    ("flights_2013-01-05_old.csv", None),
    ("flights_2013-01-05_part0.csv", None),
    ("flights_2013-01-05.csv.bak", None),
    ("flights_2013-01-05.jsonl", None),
    ("flights-2013-01-05.csv", None),
    ("flights_2013-02-30.csv", None),
    ("flights_20130105.csv", None),
    ("weather_2013-01-05.csv", None),
    ("flights_extra_2013-01-05.csv", None),
])
def test_a_name_is_an_export_only_if_it_follows_the_convention(name, expected):
    assert parse_export_name(name, "flights", SPEC) == expected


def test_export_names_round_trip():
    for part in (1, 2, 10):
        assert parse_export_name(export_name("flights", SPEC, DAY, part), "flights", SPEC) == (DAY, part)


def test_exports_are_in_landing_order_and_strays_are_set_apart():
    listing = [("flights_2013-01-05_part2.csv", 100), ("flights_2013-01-05.csv", 300),
               ("flights_2013-01-05_part10.csv", 200), ("flights_2013-01-05_old.csv", 400),
               (".flights_2013-01-05.csv.partial", 500), ("notes.txt", 50)]

    exports, strays = sort_exports(listing, "flights", SPEC)

    assert [export.name for export in exports] == ["flights_2013-01-05_part2.csv", "flights_2013-01-05_part10.csv",
                                                   "flights_2013-01-05.csv"]
    assert strays == ["flights_2013-01-05_old.csv", "notes.txt"]    # a file being written is neither


def test_exports_landed_at_the_same_instant_follow_their_part_numbers():
    exports, _ = sort_exports([("flights_2013-01-05_part10.csv", 7), ("flights_2013-01-05_part9.csv", 7)],
                              "flights", SPEC)

    assert [export.part for export in exports] == [9, 10]


def test_the_newest_snapshot_is_the_latest_day_then_the_last_landed():
    exports, _ = sort_exports([("planes_2013-01-06.csv", 1), ("planes_2013-01-05.csv", 9),
                               ("planes_2013-01-06_part2.csv", 5), ("planes_2013-01-07_old.csv", 10)],
                              "planes", SPEC)

    assert newest_snapshot(exports).name == "planes_2013-01-06_part2.csv"
    assert newest_snapshot([]) is None


def test_files_of_a_day_come_in_landing_order_not_name_order(tmp_path):
    folder = source_dir(tmp_path, "usecase", "flights")
    folder.mkdir(parents=True)
    landed = ["flights_2013-01-05_part2.csv", "flights_2013-01-05.csv", "flights_2013-01-05_old.csv",
              "flights_2013-01-06.csv"]
    for second, name in enumerate(landed):
        (folder / name).write_text("id\n1\n")
        os.utime(folder / name, ns=(second * 1_000_000_000,) * 2)

    assert [path.name for path in files_for_day(tmp_path, "usecase", "flights", SPEC, DAY)] == landed[:2]
    assert [path.name for path in unread_files(tmp_path, "usecase", "flights", SPEC, [DAY])] == [landed[2]]
    assert unread_files(tmp_path, "usecase", "flights", SPEC, [DAY + dt.timedelta(days=1)]) == []
    assert latest_snapshot(tmp_path, "usecase", "flights", SPEC).name == landed[3]
