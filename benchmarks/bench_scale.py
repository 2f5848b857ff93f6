"""Scale: the medallion and feature steps on ten times the year, embedded engine vs Spark ``local[2]``.

    python -m benchmarks.bench_scale [--copies 10] [--engines polars,spark]

The year is landed once and read into bronze once; the daily sources (flights, weather) are then replicated
``--copies`` times with their dates shifted by whole 365-day blocks (year/month/day parts, date-time strings and
the landing date move together, so natural keys stay unique and the copies do not overlap), about 3.4M flights
rows for 10 copies. Each engine then runs, in its own process against its own copy of that bronze warehouse, the
silver and gold steps exactly as ``bench_medallion`` times them and the feature tables as the feature assets build
and upsert them, over the whole range as one run.

Reported per engine: flights rows per second of wall time per stage and in total, and the peak resident memory
of the engine's process tree (sampled from /proc, so Spark's JVM counts). The baseline is ``write_deltalake`` of
the same replicated flights rows. Spark's session start and warm-up are timed apart and excluded. Figures go to
stdout and ``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import pyarrow as pa

from benchmarks.bench_medallion import (
    Phases,
    floor,
    land,
    publish,
    rate,
    run_gold,
    run_silver,
    start_spark,
)
from mlops_platform.features import build_feature_rows
from mlops_platform.ingest import read_bronze_batch
from mlops_platform.landing import day_range, files_for_day, latest_snapshot
from mlops_platform.resources.engine import Engine, PolarsEngine, SparkEngine
from mlops_platform.resources.warehouse import DayRange, DeltaWarehouse
from mlops_platform.settings import SourceConfig, UseCaseConfig, load_settings
from mlops_platform.transforms.conform import LANDING_DATE

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
STAGES = ("silver", "gold", "features")
BLOCK_DAYS = 365
SAMPLE_SECONDS = 0.2


# --- input: one landed year, replicated in bronze ---------------------------------------------------------------------

def shift_copy(frame: pl.DataFrame, spec: SourceConfig, days: int) -> pl.DataFrame:
    """``frame`` (raw bronze strings) moved ``days`` later: date parts, date-time strings and the landing date."""
    if days == 0:
        return frame
    year, month, day = spec.partition.from_parts
    moved = pl.date(pl.col(year).cast(pl.Int32), pl.col(month).cast(pl.Int32), pl.col(day).cast(pl.Int32)) + \
        pl.duration(days=days)
    shifted = [moved.dt.year().cast(pl.String).alias(year), moved.dt.month().cast(pl.String).alias(month),
               moved.dt.day().cast(pl.String).alias(day), (pl.col(LANDING_DATE) + pl.duration(days=days))]
    for column, kind in spec.columns.items():
        if kind in ("date", "datetime"):
            # Only the leading YYYY-MM-DD moves; the time and zone suffix are kept as landed.
            lead = pl.col(column).str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False) + pl.duration(days=days)
            shifted.append(pl.concat_str(lead.dt.strftime("%Y-%m-%d"), pl.col(column).str.slice(10)).alias(column))
    return frame.with_columns(shifted)


def build_bronze(usecase: UseCaseConfig, landing_dir: Path, year: list[dt.date], copies: int, root: Path
                 ) -> tuple[DayRange, pa.Table]:
    """Bronze of ``copies`` shifted years under ``root``; returns the range and the replicated flights rows."""
    warehouse = DeltaWarehouse(root=str(root), catalog="bench")
    ingested_at = dt.datetime.now(dt.UTC)
    last = year[0] + dt.timedelta(days=BLOCK_DAYS * copies - 1)
    flights = None
    for name, spec in usecase.sources.items():
        if not spec.is_daily:
            files = [(latest_snapshot(landing_dir, usecase.name, name, spec), None)]
            warehouse.overwrite("bronze", name, read_bronze_batch(files, spec, batch_id="bench",
                                                                  ingested_at=ingested_at).table)
            continue
        files = [(path, day) for day in year for path in files_for_day(landing_dir, usecase.name, name, spec, day)]
        one_year = pl.from_arrow(read_bronze_batch(files, spec, batch_id="bench", ingested_at=ingested_at).table)
        table = pl.concat([shift_copy(one_year, spec, BLOCK_DAYS * k) for k in range(copies)]).to_arrow()
        warehouse.replace_days("bronze", name, table, DayRange(LANDING_DATE, year[0], last))
        if name == "flights":
            flights = table
    assert flights is not None
    return DayRange(LANDING_DATE, year[0], last), flights


# --- one engine, in its own process -----------------------------------------------------------------------------------

def run_features(usecase: UseCaseConfig, runner: Engine, warehouse: DeltaWarehouse, days: list[dt.date],
                 phases: Phases) -> dict[str, int]:
    """Every feature table as its asset builds and upserts it, over the whole range."""
    rows = {}
    for name, spec in usecase.features.items():
        daily = spec.kind == "rolling" or usecase.sources[spec.source].is_daily
        run_days = DayRange(spec.timestamp_key or "feature_date", days[0], days[-1]) if daily else None
        with phases.phase("compute"):
            table = build_feature_rows(usecase, name, runner, warehouse, run_days)
        with phases.phase("write"):
            rows[name] = warehouse.merge("features", name, table, spec.keys).rows_written
    return rows


def engine_run(name: str, bronze_root: str, root: str, first: str, last: str, results: mp.Queue) -> None:
    try:
        usecase = load_settings("local").usecases["flights"]
        shutil.copytree(Path(bronze_root) / "bronze", Path(root) / "bronze")
        warehouse = DeltaWarehouse(root=root, catalog="bench")
        days = day_range(dt.date.fromisoformat(first),
                         (dt.date.fromisoformat(last) - dt.date.fromisoformat(first)).days + 1)
        figures: dict = {}
        session = None
        if name == "spark":
            session, figures["spark_start"] = start_spark()
            engine: Engine = SparkEngine(session)
        else:
            engine = PolarsEngine()
        phases, rows = Phases(), {}
        for stage, step in (("silver", run_silver), ("gold", run_gold), ("features", run_features)):
            phases.stage = stage
            rows[stage] = step(usecase, engine, warehouse, days, phases)
        if session is not None:
            session.stop()
        figures["stages"] = {stage: {"seconds": phases.total(stage), "phases": dict(phases.seconds[stage]),
                                     "rows": rows[stage]} for stage in STAGES}
        figures["total_seconds"] = sum(phases.total(stage) for stage in STAGES)
        results.put(figures)
    except Exception as exc:  # noqa: BLE001 - the parent reports it and the other engine still runs
        results.put({"failure": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (Spark's JVM is a child of the Python driver)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current and child not in tree]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for member in tree:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def measure(name: str, bronze_root: Path, root: Path, days: DayRange) -> dict:
    """Run one engine in a fresh process and sample its tree's memory until it reports."""
    context = mp.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=engine_run, args=(name, str(bronze_root), str(root), days.first.isoformat(),
                                                       days.last.isoformat(), results))
    process.start()
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    figures = results.get()
    done.set()
    sampler.join()
    process.join()
    figures["peak_rss_bytes"] = peak
    return figures


# --- report -----------------------------------------------------------------------------------------------------------

def report(figures: dict) -> str:
    rows = figures["flights_rows"]
    lines = [(f"Scale benchmark: {figures['copies']} copies of the year = {figures['days']} days, {rows:,} flights "
              f"rows, {os.cpu_count()} CPUs, load average {figures['load_average_start']:.1f} -> "
              f"{figures['load_average_end']:.1f}"),
             (f"Preparation (not in the figures): landing {figures['landing']['land_days']:.1f} s, bronze "
              f"replication {figures['bronze_seconds']:.1f} s"), "",
             f"{'':<18}" + "".join(f"{stage:>18}" for stage in (*STAGES, "total")) + f"{'peak memory':>14}"]
    for name, run in figures["engines"].items():
        if "failure" in run:
            lines.append(f"{name:<18}FAILED: {run['failure']}")
            continue
        cells = [f"{run['stages'][s]['seconds']:6.1f} s {rate(rows, run['stages'][s]['seconds']) / 1e3:5.0f}k/s"
                 for s in STAGES]
        cells.append(f"{run['total_seconds']:6.1f} s {rate(rows, run['total_seconds']) / 1e3:5.0f}k/s")
        lines.append(f"{name:<18}" + "".join(f"{cell:>18}" for cell in cells)
                     + f"{run['peak_rss_bytes'] / 2**30:11.2f} GiB")
        if "spark_start" in run:
            lines.append(f"{'':<20}Spark start-up (excluded): session {run['spark_start']['session_start']:.1f} s, "
                         f"warm-up {run['spark_start']['warm_up']:.1f} s")
    base = figures["floor"]["seconds"]
    lines.append(f"{'floor (raw Delta)':<18}{'':>54}{f'{base:6.1f} s {rate(rows, base) / 1e3:5.0f}k/s':>18}")
    lines.append("")
    lines += [f"{label}: {value:.3f}" for label, value in figures["ratios"].items()]
    if max(figures["load_average_start"], figures["load_average_end"]) > (os.cpu_count() or 1):
        lines.append("Note: the machine was busy (load average above the CPU count); wall times are inflated.")
    return "\n".join(lines)


def ratios(figures: dict) -> dict[str, float]:
    engines = {name: run for name, run in figures["engines"].items() if "failure" not in run}
    rows, out = figures["flights_rows"], {}
    floor_rate = rate(rows, figures["floor"]["seconds"])
    for name, run in engines.items():
        out[f"{name} rows/s / raw Delta write rows/s"] = rate(rows, run["total_seconds"]) / floor_rate
    if {"polars", "spark"} <= set(engines):
        polars, spark = engines["polars"], engines["spark"]
        out["spark rows/s / embedded rows/s (total)"] = polars["total_seconds"] / spark["total_seconds"]
        for stage in STAGES:
            out[f"spark rows/s / embedded rows/s ({stage})"] = (polars["stages"][stage]["seconds"]
                                                                 / spark["stages"][stage]["seconds"])
        out["spark peak memory / embedded peak memory"] = spark["peak_rss_bytes"] / polars["peak_rss_bytes"]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10, help="shifted copies of the year (default 10)")
    parser.add_argument("--engines", default="polars,spark", help="comma-separated: polars, spark")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    if set(engines) - {"polars", "spark"}:
        parser.error(f"unknown engines {sorted(set(engines) - {'polars', 'spark'})}: choose from polars, spark")

    usecase = load_settings("local").usecases["flights"]
    year = day_range(usecase.partitions.start, BLOCK_DAYS)
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    load_start = os.getloadavg()[0]
    try:
        landing = land(usecase, work / "landing", year)
        start = time.perf_counter()
        days, flights = build_bronze(usecase, work / "landing", year, args.copies, work / "bronze_warehouse")
        bronze_seconds = time.perf_counter() - start
        floor_seconds = floor(flights, work / "floor")
        figures: dict = {"copies": args.copies, "days": (days.last - days.first).days + 1,
                         "flights_rows": flights.num_rows, "landing": landing, "bronze_seconds": bronze_seconds,
                         "floor": {"seconds": statistics.median(floor_seconds), "all": floor_seconds}}
        del flights
        figures["engines"] = {name: measure(name, work / "bronze_warehouse", work / name, days) for name in engines}
        figures["ratios"] = ratios(figures)
        figures["load_average_start"], figures["load_average_end"] = load_start, os.getloadavg()[0]
        figures["when"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    return publish(figures, report(figures), args.output)


if __name__ == "__main__":
    sys.exit(1 if any("failure" in run for run in main()["engines"].values()) else 0)
