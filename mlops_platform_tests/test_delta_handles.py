"""The one Delta handle per table a process keeps (``storage/delta.py``), on real tables: it sees every commit,
whoever made it, time travel never moves it, a table made again is not mixed with the old one, and threads share it."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from mlops_platform.storage import delta
from mlops_platform.storage.delta import DeltaTables
from mlops_platform.storage.tables import DayRange

DAYS = [dt.date(2013, 1, day) for day in range(1, 9)]


def _rows(day: dt.date, count: int, value: float = 1.0) -> pa.Table:
    return pa.table({"flight_date": pa.array([day] * count, pa.date32()),
                     "flight": pa.array(range(count), pa.int64()),
                     "dep_delay": pa.array([value] * count, pa.float64())})


def _day(day: dt.date) -> DayRange:
    return DayRange("flight_date", day, day)


@pytest.fixture
def tables(tmp_path: Path) -> DeltaTables:
    return DeltaTables(tmp_path / "warehouse", "test")


def _replace_in_another_process(root: str, day: dt.date, count: int) -> None:
    DeltaTables(root, "test").replace_days("silver", "flights", _rows(day, count), _day(day))


def test_the_process_keeps_one_handle_per_table_and_it_sees_another_processs_commit(tables):
    tables.replace_days("silver", "flights", _rows(DAYS[0], 3), _day(DAYS[0]))
    with tables.latest("silver", "flights") as before:
        assert before is not None and before.version() == 0

    writer = multiprocessing.get_context("spawn").Process(
        target=_replace_in_another_process, args=(str(tables.root), DAYS[1], 5))
    writer.start()
    writer.join(timeout=120)
    assert writer.exitcode == 0

    assert tables.version("silver", "flights") == 1
    assert tables.read("silver", "flights", days=_day(DAYS[1])).num_rows == 5
    assert tables.row_count("silver", "flights") == 8
    with tables.latest("silver", "flights") as after:
        assert after is before  # brought up to date, not opened again


def test_a_handle_sees_commits_made_through_another_handle_of_the_same_table_in_this_process(tables, tmp_path):
    tables.replace_days("silver", "flights", _rows(DAYS[0], 3), _day(DAYS[0]))
    assert tables.row_count("silver", "flights") == 3
    # The same folder through a link is another key, so another handle: the first must still see what it commits.
    (tmp_path / "link").symlink_to(tmp_path / "warehouse")
    other = DeltaTables(tmp_path / "link", "test")
    other.replace_days("silver", "flights", _rows(DAYS[1], 4), _day(DAYS[1]))
    with other.latest("silver", "flights") as theirs, tables.latest("silver", "flights") as ours:
        assert theirs is not ours
    assert tables.row_count("silver", "flights") == 7
    assert tables.version("silver", "flights") == 1


def test_reading_an_earlier_version_leaves_the_kept_handle_at_the_latest(tables):
    first = tables.replace_days("silver", "flights", _rows(DAYS[0], 3), _day(DAYS[0]))
    tables.replace_days("silver", "flights", _rows(DAYS[0], 6, value=2.0), _day(DAYS[0]))

    assert tables.read("silver", "flights", version=first).num_rows == 3
    assert tables.version("silver", "flights") == first + 1
    assert tables.read("silver", "flights").column("dep_delay").to_pylist() == [2.0] * 6
    assert tables.read("silver", "flights", version=first + 1).num_rows == 6


def test_a_table_deleted_and_made_again_is_read_afresh_not_on_top_of_the_old_one(tables):
    for day in DAYS[:3]:
        tables.replace_days("silver", "flights", _rows(day, 2), _day(day))
    assert tables.version("silver", "flights") == 2

    # Made again behind the kept handle's back (delta-rs directly), up to the very version the handle is at.
    path = tables.path("silver", "flights")
    shutil.rmtree(path)
    for count, day in enumerate(DAYS[4:7], start=1):
        write_deltalake(str(path), _rows(day, count), mode="append")

    assert tables.version("silver", "flights") == 2
    assert sorted(tables.read("silver", "flights").column("flight_date").to_pylist()) == \
        [DAYS[4]] + [DAYS[5]] * 2 + [DAYS[6]] * 3


def test_threads_writing_and_reading_one_table_share_its_handle_safely(tables):
    tables.replace_days("silver", "flights", _rows(DAYS[0], 2), _day(DAYS[0]))
    failures: list[BaseException] = []

    def work(day: dt.date) -> None:
        try:
            for count in (1, 3):
                tables.replace_days("silver", "flights", _rows(day, count), _day(day))
                assert tables.read("silver", "flights", days=_day(day)).num_rows == count
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(day,)) for day in DAYS[1:5]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert failures == []
    assert tables.version("silver", "flights") == 8
    assert tables.row_count("silver", "flights") == 2 + 4 * 3


def test_the_handles_kept_are_bounded_and_the_least_recently_used_goes_first(tmp_path):
    handles = delta._Handles(capacity=2)
    tables = DeltaTables(tmp_path, "test")
    for name in ("a", "b", "c"):
        tables.write("silver", name, _rows(DAYS[0], 1), mode="append")

    def handle(name: str):
        with handles.latest(tables.path("silver", name)) as found:
            return found

    a, b = handle("a"), handle("b")
    assert handle("a") is a  # a is now the most recently used
    handle("c")  # drops b
    assert handle("a") is a
    assert handle("b") is not b


def test_with_keeping_off_every_call_opens_its_own_handle_and_the_kept_ones_stay(tables):
    tables.write("silver", "flights", _rows(DAYS[0], 2), mode="append")
    with tables.latest("silver", "flights") as kept:
        pass
    delta.HANDLES.keep = False
    try:
        with tables.latest("silver", "flights") as first, tables.latest("silver", "flights") as second:
            assert first is not second and first is not kept and second is not kept
        tables.write("silver", "flights", _rows(DAYS[1], 3), mode="append")
    finally:
        delta.HANDLES.keep = True
    with tables.latest("silver", "flights") as again:
        assert again is kept and again.version() == 1


def test_a_read_takes_the_days_files_only_and_a_partitioned_tables_values_from_its_log(tables):
    for day in DAYS[:4]:
        tables.replace_days("silver", "flights", _rows(day, 3, value=day.day), _day(day))
    one_day = tables.read("silver", "flights", days=_day(DAYS[2]))
    assert one_day.column("dep_delay").to_pylist() == [3.0, 3.0, 3.0]

    # A table written elsewhere with partitions: the partition column is in the log, not in the files.
    write_deltalake(str(tables.path("silver", "partitioned")),
                    pa.concat_tables([_rows(day, 2) for day in DAYS[:2]]), partition_by=["flight_date"])
    read = tables.read("silver", "partitioned", days=_day(DAYS[1]))
    assert read.column("flight_date").to_pylist() == [DAYS[1], DAYS[1]]


def test_the_handles_file_pruning_keeps_what_delta_rs_keeps_and_follows_new_commits(tables):
    """The handle prunes dates and integers by the add actions' statistics it keeps per version. Judged against
    delta-rs's own pruning on a table with a file per day, a file of null dates, and a column that older files lack
    (no statistics: kept); a commit after a read must show in the next read's files."""
    for day in DAYS[:4]:
        tables.replace_days("silver", "flights", _rows(day, 3), _day(day))
    tables.append("silver", "flights", pa.table({"flight_date": pa.array([None, None], pa.date32()),
                                                 "flight": pa.array([70, 80], pa.int64()),
                                                 "dep_delay": pa.array([0.0, 0.0])}))
    tables.write("silver", "flights", _rows(DAYS[4], 2).append_column("gate", pa.array([5, 9], pa.int32())),
                 mode="append", allow_evolution=True)
    path = str(tables.path("silver", "flights"))
    probes = [("flight_date", operator, day) for day in (DAYS[0], DAYS[2], DAYS[4], DAYS[7])
              for operator in ("=", "==", ">=", ">", "<=", "<")]
    probes += [("flight", operator, value) for value in (0, 2, 75) for operator in ("=", ">", "<=")]
    probes += [("gate", operator, value) for value in (4, 5, 9, 10) for operator in ("=", ">=", "<")]

    for column, operator, value in probes:
        ours = tables.file_uris("silver", "flights", [(column, operator, value)])
        theirs = DeltaTable(path).file_uris(file_pruning_predicate=[(column, "=" if operator == "==" else operator,
                                                                     value)])
        assert sorted(ours) == sorted(theirs), (column, operator, value)
    assert len(tables.file_uris("silver", "flights", [("flight_date", "=", DAYS[2])])) == 1
    assert len(tables.file_uris("silver", "flights", [("gate", "=", 10)])) == 5  # the files older than the column

    tables.replace_days("silver", "flights", _rows(DAYS[6], 4).append_column("gate", pa.array([1] * 4, pa.int32())),
                        _day(DAYS[6]))
    assert tables.read("silver", "flights", days=_day(DAYS[6])).num_rows == 4
