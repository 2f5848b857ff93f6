"""DeltaWarehouse on real Delta tables in a temporary folder: day replacement, schema guard, upserts, concurrency."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import multiprocessing.synchronize
import queue
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from mlops_platform.resources.warehouse import DayRange, DeltaWarehouse, SchemaEvolutionError

JAN = [dt.date(2013, 1, day) for day in range(1, 32)]


@pytest.fixture
def warehouse(tmp_path: Path) -> DeltaWarehouse:
    return DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="test")


def _rows(days: list[dt.date], per_day: int = 3, value: float = 1.0, start: int = 0) -> pa.Table:
    dates = [day for day in days for _ in range(per_day)]
    return pa.table({
        "flight_date": pa.array(dates, pa.date32()),
        "flight": pa.array([start + i for i in range(len(dates))], pa.int64()),
        "dep_delay": pa.array([value] * len(dates), pa.float64()),
    })


def _day(days: list[dt.date] | dt.date, last: dt.date | None = None) -> DayRange:
    first = days if isinstance(days, dt.date) else days[0]
    return DayRange("flight_date", first, last or first)


def _sorted(table: pa.Table) -> pl.DataFrame:
    return pl.from_arrow(table).sort("flight_date", "flight")


def _on(warehouse: DeltaWarehouse, day: dt.date) -> pl.DataFrame:
    return _sorted(warehouse.read("silver", "flights", days=_day(day)))


def test_replacing_a_day_twice_is_idempotent_and_leaves_other_days_alone(warehouse):
    warehouse.replace_days("silver", "flights", _rows(JAN[:3]), _day(JAN[0], JAN[2]))
    neighbours = _on(warehouse, JAN[0]), _on(warehouse, JAN[2])
    day_two = _rows([JAN[1]], per_day=5, value=7.0, start=100)

    first = warehouse.replace_days("silver", "flights", day_two, _day(JAN[1]))
    after_first = _sorted(warehouse.read("silver", "flights"))
    second = warehouse.replace_days("silver", "flights", day_two, _day(JAN[1]))

    assert second.version == first.version + 1 == 2
    assert _sorted(warehouse.read("silver", "flights")).equals(after_first)
    assert _on(warehouse, JAN[1]).equals(_sorted(day_two))
    assert _on(warehouse, JAN[0]).equals(neighbours[0])
    assert _on(warehouse, JAN[2]).equals(neighbours[1])
    assert warehouse.row_count("silver", "flights") == 3 + 5 + 3


def test_an_earlier_version_stays_readable(warehouse):
    original = _rows(JAN[:2])
    warehouse.replace_days("silver", "flights", original, _day(JAN[0], JAN[1]))
    warehouse.replace_days("silver", "flights", _rows([JAN[0]], value=9.0), _day(JAN[0]))

    assert _sorted(warehouse.read("silver", "flights", version=0)).equals(_sorted(original))
    assert warehouse.version("silver", "flights") == 1


def test_a_write_with_rows_outside_its_days_is_refused(warehouse):
    warehouse.replace_days("silver", "flights", _rows([JAN[0]]), _day(JAN[0]))
    before = _sorted(warehouse.read("silver", "flights"))
    stray = _rows([JAN[1], JAN[2]])

    with pytest.raises(ValueError, match=r"refusing to write test\.silver\.flights: some rows are outside"):
        warehouse.replace_days("silver", "flights", stray, _day(JAN[1]))
    with pytest.raises(ValueError, match=r"test\.silver\.fresh.*2013-01-02"):
        warehouse.replace_days("silver", "fresh", stray, _day(JAN[1]))

    assert _sorted(warehouse.read("silver", "flights")).equals(before)
    assert warehouse.version("silver", "flights") == 0
    assert not warehouse.exists("silver", "fresh")


def test_a_schema_change_is_refused_naming_the_table_and_column(warehouse):
    warehouse.replace_days("silver", "flights", _rows([JAN[0]]), _day(JAN[0]))
    with_gate = _rows([JAN[1]]).append_column("gate", pa.array(["A1", "B2", "C3"]))
    retyped = _rows([JAN[1]]).set_column(2, "dep_delay", pa.array(["1", "2", "3"]))

    with pytest.raises(SchemaEvolutionError, match=r"test\.silver\.flights: new column 'gate' \(string\)"):
        warehouse.replace_days("silver", "flights", with_gate, _day(JAN[1]))
    with pytest.raises(SchemaEvolutionError, match=r"test\.silver\.flights: column 'dep_delay' changes type"):
        warehouse.append("silver", "flights", retyped)
    assert warehouse.version("silver", "flights") == 0

    warehouse.replace_days("silver", "flights", with_gate, _day(JAN[1]), allow_evolution=True)

    table = _sorted(warehouse.read("silver", "flights"))
    assert "gate" in table.columns
    assert table.filter(pl.col("flight_date") == JAN[0])["gate"].null_count() == 3
    assert table.filter(pl.col("flight_date") == JAN[1])["gate"].to_list() == ["A1", "B2", "C3"]


def test_overwrite_replaces_the_whole_table_and_append_adds(warehouse):
    warehouse.overwrite("silver", "planes", _rows(JAN[:2]))
    warehouse.overwrite("silver", "planes", _rows([JAN[5]], value=2.0))
    assert _sorted(warehouse.read("silver", "planes")).equals(_sorted(_rows([JAN[5]], value=2.0)))

    write = warehouse.append("silver", "planes", _rows([JAN[6]], start=10))

    assert write.rows_written == 3
    assert write.full_name == "test.silver.planes"
    assert warehouse.row_count("silver", "planes") == 6
    assert sorted(warehouse.read("silver", "planes", columns=["flight"]).column(0).to_pylist()) == [
        0, 1, 2, 10, 11, 12,
    ]


def test_merge_updates_matching_keys_and_inserts_new_ones(warehouse):
    keys = ["flight_date", "flight"]
    warehouse.merge("features", "delays", _rows([JAN[0]], value=1.0), keys)  # creates the table
    update = pa.table({
        "flight_date": pa.array([JAN[0], JAN[0], JAN[1]], pa.date32()),
        "flight": pa.array([1, 7, 1], pa.int64()),
        "dep_delay": pa.array([50.0, 70.0, 10.0], pa.float64()),
    })

    write = warehouse.merge("features", "delays", update, keys)

    assert write.version == 1
    table = _sorted(warehouse.read("features", "delays"))
    assert table.rows() == [
        (JAN[0], 0, 1.0), (JAN[0], 1, 50.0), (JAN[0], 2, 1.0), (JAN[0], 7, 70.0), (JAN[1], 1, 10.0),
    ]
    assert warehouse.row_count("features", "delays") == 5


def test_a_merge_scans_only_the_files_its_rows_date_and_integer_keys_can_match(warehouse):
    """A feature table merged day by day holds a file per day; a day's upsert must not scan the others (it scanned
    every file, a cost that grew with the table). The string key alone prunes nothing: every file holds every
    carrier."""
    keys = ["carrier", "flight_date", "flight"]
    for day in JAN[:6]:
        warehouse.merge("features", "delays", _rows([day]).append_column("carrier", pa.array(["AA", "UA", "B6"])),
                        keys)
    update = pa.table({
        "flight_date": pa.array([JAN[3], JAN[3], JAN[4], JAN[4]], pa.date32()),
        "flight": pa.array([0, 1, 2, 40], pa.int64()),
        "dep_delay": pa.array([9.0, 9.0, 9.0, 5.0], pa.float64()),
        "carrier": pa.array(["AA", "UA", "B6", "DL"]),
    })

    warehouse.merge("features", "delays", update, keys)

    metrics = DeltaTable(str(warehouse.tables.path("features", "delays"))).history(1)[0]["operationMetrics"]
    assert metrics["num_target_files_scanned"] == 2
    assert (metrics["num_target_rows_updated"], metrics["num_target_rows_inserted"]) == (3, 1)
    merged = pl.from_arrow(warehouse.read("features", "delays")).sort("flight_date", "flight")
    assert merged.filter(pl.col("dep_delay") != 1.0).select("carrier", "flight_date", "flight", "dep_delay").rows() == [
        ("AA", JAN[3], 0, 9.0), ("UA", JAN[3], 1, 9.0), ("B6", JAN[4], 2, 9.0), ("DL", JAN[4], 40, 5.0)]
    assert merged.height == 19


def test_a_filtered_read_opens_only_the_files_its_filters_can_match(warehouse):
    """A daily table holds a file per day written; reading some days must not touch the others' files. With the
    other days' files gone from disk, the filtered reads still answer and the whole read fails, or this could
    not tell a pruned read from one that reads everything and filters."""
    for day in JAN[:5]:
        warehouse.append("silver", "flights", _rows([day]).append_column(
            "at", pa.array([dt.datetime.combine(day, dt.time(hour), dt.UTC) for hour in (0, 12, 23)],
                           pa.timestamp("us", tz="UTC"))))
    kept = {str(path) for path in warehouse.tables.file_uris("silver", "flights", _day(JAN[3]).as_filters())}
    assert len(kept) == 1
    for path in set(warehouse.tables.file_uris("silver", "flights")) - kept:
        Path(path).unlink()

    assert _on(warehouse, JAN[3])["flight_date"].to_list() == [JAN[3]] * 3
    late = dt.datetime.combine(JAN[3], dt.time(12), dt.UTC)
    at_or_after = warehouse.read("silver", "flights", filters=[("at", ">=", late), ("at", "<", late.replace(hour=23))])
    assert at_or_after.column("at").to_pylist() == [late]
    assert warehouse.read("silver", "flights", filters=[("flight_date", "==", JAN[3]), ("flight", "==", 0)]
                          ).num_rows == 1
    with pytest.raises(OSError):
        warehouse.read("silver", "flights")


def test_reading_an_absent_table_names_it(warehouse):
    with pytest.raises(FileNotFoundError, match=r"table test\.gold\.flights does not exist"):
        warehouse.read("gold", "flights")
    assert warehouse.row_count("gold", "flights") == 0
    assert warehouse.version("gold", "flights") is None


WORKERS = 4
DAYS_PER_WORKER = 5
FINAL_ROWS = 4


def _writer(root: str, worker: int, start: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue
            ) -> None:
    """Land five days: append a draft, replace it with the final rows, replace again (a re-run): 15 commits."""
    try:
        warehouse = DeltaWarehouse(root=root, catalog="test")
        days = JAN[1 + worker * DAYS_PER_WORKER: 1 + (worker + 1) * DAYS_PER_WORKER]
        start.wait(timeout=120)  # every process has imported everything: the writes really overlap
        commits = 0
        for day in days:
            warehouse.append("silver", "flights", _rows([day], per_day=2, value=-1.0, start=900))
            final = _rows([day], per_day=FINAL_ROWS, value=float(worker))
            warehouse.replace_days("silver", "flights", final, _day(day))
            warehouse.replace_days("silver", "flights", final, _day(day))
            commits += 3
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test with it
        results.put((worker, f"{type(exc).__name__}: {exc}"))
        return
    results.put((worker, commits))


def _collect(processes: list, results: multiprocessing.Queue, deadline_seconds: float = 240) -> dict[int, object]:
    """Each worker's outcome; a worker that died without reporting fails the test with its exit code."""
    outcomes: dict[int, object] = {}
    deadline = time.monotonic() + deadline_seconds
    while len(outcomes) < len(processes):
        try:
            worker, outcome = results.get(timeout=1)
            outcomes[worker] = outcome
        except queue.Empty:
            dead = {i: p.exitcode for i, p in enumerate(processes) if p.exitcode not in (None, 0)}
            assert not dead, f"writer processes died without reporting (exit codes {dead})"
            assert time.monotonic() < deadline, f"writers still running after {deadline_seconds} s: {outcomes}"
    return outcomes


def test_concurrent_writers_on_disjoint_days_all_succeed_and_keep_every_row_once(warehouse):
    # Created before the fan-out: concurrent first commits of a table are a different race.
    warehouse.replace_days("silver", "flights", _rows([JAN[0]], per_day=FINAL_ROWS), _day(JAN[0]))
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(WORKERS), context.Queue()
    processes = [context.Process(target=_writer, args=(warehouse.root, worker, start, results))
                 for worker in range(WORKERS)]
    for process in processes:
        process.start()
    try:
        outcomes = _collect(processes, results)
    except BaseException:
        for process in processes:
            process.terminate()
        raise
    finally:
        for process in processes:
            process.join(timeout=30)

    assert outcomes == {worker: 3 * DAYS_PER_WORKER for worker in range(WORKERS)}
    assert warehouse.version("silver", "flights") == WORKERS * 3 * DAYS_PER_WORKER
    table = pl.from_arrow(warehouse.read("silver", "flights"))
    written_days = JAN[: 1 + WORKERS * DAYS_PER_WORKER]
    assert table.height == FINAL_ROWS * len(written_days)
    assert dict(table.group_by("flight_date").len().iter_rows()) == {day: FINAL_ROWS for day in written_days}
    assert table.select("flight_date", "flight").is_duplicated().sum() == 0
    assert table.filter(pl.col("dep_delay") < 0).height == 0  # no draft survived its replacement
    for worker in range(WORKERS):
        days = written_days[1 + worker * DAYS_PER_WORKER: 1 + (worker + 1) * DAYS_PER_WORKER]
        assert set(table.filter(pl.col("flight_date").is_in(days))["dep_delay"]) == {float(worker)}
