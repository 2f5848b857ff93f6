"""Bronze's file reader: the cost of reading every record with its line number and keeping the malformed ones.

    python -m benchmarks.bench_ingest [--repeat 3]

Lands the real 2013 flights (336,776 rows) as one CSV file and the real weather (26,115 rows) as one JSON-lines
file, then times in the same run, best of ``--repeat``:

- the baseline: Polars' own reader with every column a string (what bronze ran before it kept malformed rows:
  ``pl.read_csv(infer_schema=False)``, ``pl.read_ndjson`` with a string schema), which pads a short line with nulls
  and fails the whole file on one bad byte;
- ``read_bronze_batch`` on the clean files (a clean CSV goes through Polars, with the structure checked first);
- ``read_bronze_batch`` on the same CSV with one line cut short in the middle, which sends the whole file through
  the record-by-record reader.

Rates are rows per second of wall time. Figures go to stdout and ``benchmarks/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from mlops_platform.ingest import read_bronze_batch
from mlops_platform.landing import load_source_data
from mlops_platform.settings import load_settings

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
INGESTED_AT = dt.datetime(2014, 1, 1, tzinfo=dt.UTC)


def best_of(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    """The shortest wall time of ``repeat`` runs, and the rows the run returned."""
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = run()
        times.append(time.perf_counter() - started)
    return min(times), rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    usecase = load_settings("local").usecases["flights"]
    flights, weather = usecase.sources["flights"], usecase.sources["weather"]
    data = load_source_data(usecase)
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        folder = Path(tmp)
        clean, cut, readings = folder / "flights.csv", folder / "flights_cut.csv", folder / "weather.jsonl"
        data["flights"].write_csv(clean)
        data["weather"].write_ndjson(readings)
        lines = clean.read_text().splitlines(keepends=True)
        middle = len(lines) // 2
        cut.write_text("".join([*lines[:middle], lines[middle][:25] + "\n", *lines[middle + 1:]]))

        def bronze(path: Path, spec) -> int:
            return read_bronze_batch([(path, None)], spec, batch_id="bench", ingested_at=INGESTED_AT).table.num_rows

        strings = {name: pl.String for name in weather.columns}
        timings = {
            "csv_baseline": best_of(args.repeat, lambda: pl.read_csv(clean, infer_schema=False).height),
            "csv_clean": best_of(args.repeat, lambda: bronze(clean, flights)),
            "csv_one_cut_line": best_of(args.repeat, lambda: bronze(cut, flights)),
            "jsonl_baseline": best_of(args.repeat, lambda: pl.read_ndjson(readings, schema=strings).height),
            "jsonl": best_of(args.repeat, lambda: bronze(readings, weather)),
        }

    print(f"{'reader':<18} {'rows':>9} {'seconds':>8} {'rows/s':>11} {'vs baseline':>12}")
    figures = {}
    for name, (seconds, rows) in timings.items():
        baseline = timings["jsonl_baseline" if name.startswith("jsonl") else "csv_baseline"][0]
        figures[name] = {"rows": rows, "seconds": seconds, "rows_per_second": rows / seconds,
                         "time_vs_baseline": seconds / baseline}
        print(f"{name:<18} {rows:>9,} {seconds:>8.3f} {rows / seconds:>11,.0f} {seconds / baseline:>11.2f}x")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; times are best of {args.repeat}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
