"""A day's read from a table that gains a file every day, as the replay's feature and daily tables do.

    python -m benchmarks.bench_reads [--days 30 120 365] [--repeat 5]

Builds, for each length, a Delta table of that many days written one commit a day (220 rows a day, a route-delays
feature table's shape), then reads its last day, median of ``--repeat``, in the same run:

- the baselines: opening the table (the log read that every read pays) and reading the day's own Parquet file
  with ``pyarrow.parquet`` (the least work that gives the rows);
- the whole table, filtered afterwards (what a day's scoring did with every feature table);
- ``DeltaTable.to_pyarrow_table`` with the day as filters (files ruled out by their statistics are never opened,
  but a dataset fragment is still made for each of the table's files);
- the platform's reader as it was, its files pruned by delta-rs (``file_uris`` with the day as its pruning
  predicate, ~0.08 ms a file on this narrow table, growing with the files);
- ``DeltaTables.read`` with the day (the platform's reader: files pruned by the statistics its handle keeps per
  table version).

Figures go to stdout and ``benchmarks/results/reads.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable
from pyarrow.parquet import filters_to_expression

from benchmarks.measure import LoadRecorder
from mlops_platform.storage.delta import DeltaTables
from mlops_platform.storage.tables import DayRange

RESULTS = Path(__file__).resolve().parent / "results" / "reads.json"
FIRST_DAY = dt.date(2013, 1, 1)
ROWS_PER_DAY = 220
SCHEMA, TABLE = "features", "route_delays"


def day_rows(day: dt.date) -> pa.Table:
    routes = [f"R{i:03d}" for i in range(ROWS_PER_DAY)]
    return pa.table({
        "route": pa.array(routes, pa.large_string()),
        "feature_date": pa.array([day] * ROWS_PER_DAY, pa.date32()),
        "dep_delay_mean_7d": pa.array([float(i % 37) for i in range(ROWS_PER_DAY)], pa.float64()),
        "rows_7d": pa.array([i % 50 for i in range(ROWS_PER_DAY)], pa.int64()),
    })


def median_seconds(repeat: int, run: Callable[[], object], rows: int | None = ROWS_PER_DAY) -> float:
    """The median wall time of ``repeat`` runs; each must return the day's rows (None: check nothing)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
        if rows is not None:
            assert result.num_rows == rows, f"read {result.num_rows} rows, expected {rows}"
    return statistics.median(times)


def measure(root: Path, days: int, repeat: int) -> dict[str, float]:
    tables = DeltaTables(root, "bench")
    for offset in range(days):
        tables.append(SCHEMA, TABLE, day_rows(FIRST_DAY + dt.timedelta(days=offset)))
    path = str(tables.path(SCHEMA, TABLE))
    last = FIRST_DAY + dt.timedelta(days=days - 1)
    day = DayRange("feature_date", last, last)
    [own_file] = tables.file_uris(SCHEMA, TABLE, day.as_filters())

    def pruned_by_delta_rs() -> pa.Table:
        with tables.latest(SCHEMA, TABLE) as found:
            files = found.file_uris(file_pruning_predicate=day.as_filters())
            schema = pa.schema(found.schema().to_arrow())
        return pads.dataset(files, schema=schema, format="parquet").to_table(
            filter=filters_to_expression(day.as_filters()))

    def whole_then_filtered() -> pa.Table:
        table = DeltaTable(path).to_pyarrow_table()
        return table.filter(pc.equal(table.column("feature_date"), pa.scalar(last, pa.date32())))

    return {
        "files": len(tables.file_uris(SCHEMA, TABLE)),
        "open_seconds": median_seconds(repeat, lambda: DeltaTable(path), rows=None),
        "own_file_seconds": median_seconds(repeat, lambda: pq.read_table(own_file)),
        "whole_table_seconds": median_seconds(repeat, whole_then_filtered),
        "stats_fragments_seconds": median_seconds(
            repeat, lambda: DeltaTable(path).to_pyarrow_table(filters=day.as_filters())),
        "delta_rs_pruned_seconds": median_seconds(repeat, pruned_by_delta_rs),
        "pruned_seconds": median_seconds(repeat, lambda: tables.read(SCHEMA, TABLE, days=day)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, nargs="+", default=[30, 120, 365])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    figures = {}
    with LoadRecorder() as load, tempfile.TemporaryDirectory(prefix="bench_reads_") as tmp:
        for days in args.days:
            figures[days] = measure(Path(tmp) / str(days), days, args.repeat)
    print(f"one day's read from a table written a commit a day ({ROWS_PER_DAY} rows a day), median of "
          f"{args.repeat}; ratios against reading the day's own Parquet file:")
    print(f"  {'days':>5} {'files':>6} {'open table':>14} {'own file':>10} {'whole table':>16} "
          f"{'stats, all fragments':>22} {'delta-rs pruning':>19} {'pruned (platform)':>20}")
    for days, f in figures.items():
        base = f["own_file_seconds"]
        print(f"  {days:5d} {f['files']:6d} {f['open_seconds']:8.3f} s {f['open_seconds'] / base:4.1f}x "
              f"{base:8.3f} s {f['whole_table_seconds']:8.3f} s {f['whole_table_seconds'] / base:5.1f}x "
              f"{f['stats_fragments_seconds']:12.3f} s {f['stats_fragments_seconds'] / base:6.1f}x "
              f"{f['delta_rs_pruned_seconds']:9.3f} s {f['delta_rs_pruned_seconds'] / base:6.1f}x "
              f"{f['pruned_seconds']:10.3f} s {f['pruned_seconds'] / base:6.1f}x")
    print(f"machine load (1-minute average) during the run: {load.summary()}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": os.uname().nodename, "cpus": os.cpu_count(),
                                       "load": load.as_dict(), "rows_per_day": ROWS_PER_DAY, "tables": figures},
                                      indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
