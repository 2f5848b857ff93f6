"""detect_drift against Evidently's DataDriftPreset on the same data: time, peak memory, identical decisions.

Builds a reference and a current table (10 float columns, three of them shifted and one with missing values, and
one string column with shifted frequencies), saves them once as parquet, then runs each contender in its own
child process so that its peak resident memory (VmHWM) is its own: Evidently on pandas, detect_drift on the same
pandas frames, and detect_drift on Arrow tables (how the platform reads Delta). Import, load and compute times
are reported apart. Exits 1 when any per-column decision differs from Evidently's.

    .venv/bin/python benchmarks/bench_drift.py               # 1M reference rows vs 1M current rows
    .venv/bin/python benchmarks/bench_drift.py --rows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NUMERIC = [f"x{i}" for i in range(10)]
CATEGORY = "segment"
# Mean shift (in reference standard deviations) and scale factor of the current data: one clear shift, one
# spread change, and one shift small enough to stay under Evidently's 0.1 Wasserstein threshold.
SHIFTS = {"x0": (0.5, 1.0), "x1": (0.0, 1.5), "x2": (0.05, 1.0)}
MISSING_SHARE = {"x3": 0.02}
SEGMENTS = [f"segment_{i:02d}" for i in range(12)]
CONTENDERS = ("evidently", "ours-pandas", "ours-arrow")


def build(rows: int, directory: Path, seed: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    reference_p = np.full(len(SEGMENTS), 1 / len(SEGMENTS))
    current_p = np.linspace(2.0, 0.5, len(SEGMENTS))
    current_p /= current_p.sum()
    for side, probabilities in (("reference", reference_p), ("current", current_p)):
        columns = {}
        for i, name in enumerate(NUMERIC):
            shift, scale = SHIFTS.get(name, (0.0, 1.0)) if side == "current" else (0.0, 1.0)
            values = rng.normal(loc=10.0 * i + shift, scale=scale, size=rows)
            share = MISSING_SHARE.get(name, 0.0)
            if share:
                values[rng.random(rows) < share] = np.nan
            columns[name] = values
        # Plain strings, not a dictionary column: read back they are object columns, as most pipelines see them.
        codes = pa.array(rng.choice(len(SEGMENTS), rows, p=probabilities).astype(np.int32))
        columns[CATEGORY] = pa.DictionaryArray.from_arrays(codes, pa.array(SEGMENTS)).cast(pa.string())
        pq.write_table(pa.table(columns), directory / f"{side}.parquet")


def _memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(contender: str, directory: Path) -> None:
    """Run one contender and print one JSON line: timings, memory and per-column decisions."""
    started = time.perf_counter()
    import pandas as pd
    import pyarrow.parquet as pq

    if contender == "evidently":
        from evidently import Report
        from evidently.presets import DataDriftPreset
    else:
        from mlops_platform.monitoring.drift import detect_drift
    imported = time.perf_counter()

    if contender == "ours-arrow":
        reference, current = (
            pq.read_table(directory / f"{side}.parquet") for side in ("reference", "current")
        )
    else:
        reference, current = (
            pd.read_parquet(directory / f"{side}.parquet") for side in ("reference", "current")
        )
    loaded = time.perf_counter()
    rss_loaded = _memory_mb("VmRSS")

    if contender == "evidently":
        snapshot = Report([DataDriftPreset()], include_tests=True).run(
            current_data=current, reference_data=reference
        )
        result = snapshot.dict()
        failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL" for t in result["tests"]}
        columns = {
            m["config"]["column"]: {
                "method": m["config"]["method"],
                "score": m["value"],
                "drifted": failed[m["id"]],
            }
            for m in result["metrics"]
            if m["config"]["type"] == "evidently:metric_v2:ValueDrift"
        }
    else:
        drift = detect_drift(reference, current)
        columns = {
            c.column: {"method": c.method, "score": c.score, "drifted": c.drifted} for c in drift.columns
        }
    computed = time.perf_counter()

    print(
        json.dumps(
            {
                "import_s": imported - started,
                "load_s": loaded - imported,
                "compute_s": computed - loaded,
                "rss_after_load_mb": rss_loaded,
                "peak_mb": _memory_mb("VmHWM"),
                "columns": columns,
            }
        )
    )


def run_child(contender: str, directory: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", contender, "--data", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{contender} failed with exit code {done.returncode}:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows on each side (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child(args.child, args.data)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_drift_") as tmp:
        directory = Path(tmp)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        build(args.rows, directory, args.seed)
        print(
            f"{args.rows:,} reference rows vs {args.rows:,} current rows, 10 float + 1 string column "
            f"(data built in {time.perf_counter() - started:.1f} s)\n"
        )
        results = {contender: run_child(contender, directory) for contender in CONTENDERS}

    print(
        f"{'contender':<13} {'import s':>9} {'load s':>7} {'compute s':>10} "
        f"{'RSS after load MB':>18} {'peak MB':>8} {'compute +MB':>12}"
    )
    for contender, r in results.items():
        print(
            f"{contender:<13} {r['import_s']:>9.2f} {r['load_s']:>7.2f} {r['compute_s']:>10.2f} "
            f"{r['rss_after_load_mb']:>18.0f} {r['peak_mb']:>8.0f} {r['peak_mb'] - r['rss_after_load_mb']:>12.0f}"
        )
    # Other work on the machine stretches every figure; the ratios hold up better than the seconds.
    print(f"load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    evidently = results["evidently"]
    print()
    for contender in ("ours-pandas", "ours-arrow"):
        ours = results[contender]
        print(
            f"{contender}: evidently/ours compute time {evidently['compute_s'] / ours['compute_s']:.1f}x, "
            f"ours/evidently peak memory {ours['peak_mb'] / evidently['peak_mb']:.2f}"
        )

    print(f"\n{'column':<10} {'method':<31} {'evidently score':>16} {'ours score':>16} {'drifted':>8}")
    disagreements = []
    for column, theirs in evidently["columns"].items():
        print(
            f"{column:<10} {theirs['method']:<31} {theirs['score']:>16.10g} "
            f"{results['ours-pandas']['columns'][column]['score']:>16.10g} {theirs['drifted']!s:>8}"
        )
        for contender in ("ours-pandas", "ours-arrow"):
            ours = results[contender]["columns"].get(column)
            if ours is None or (ours["method"], ours["drifted"]) != (theirs["method"], theirs["drifted"]):
                disagreements.append((contender, column, theirs, ours))
    missing = {c for r in results.values() for c in r["columns"]} - set(evidently["columns"])
    disagreements += [("ours", column, None, "extra column") for column in sorted(missing)]

    if disagreements:
        print("\nDECISIONS DIFFER:")
        for contender, column, theirs, ours in disagreements:
            print(f"  {contender} {column}: evidently {theirs}, ours {ours}")
        return 1
    print("\nAll per-column methods and decisions agree with Evidently.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
