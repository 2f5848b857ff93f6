"""Medallion throughput: a year of flights from landing files to gold, per engine, against a raw Delta write.

    python -m benchmarks.bench_medallion [--engines polars,spark] [--days 365] [--repeat 1]

The year is landed once (timed apart). Then, for each engine, into a fresh warehouse:

- bronze: every landing file through ``read_bronze_batch`` and one Delta write per source (``replace_days`` over
  the whole range for daily sources, ``overwrite`` for snapshots), as the bronze asset does for a range backfill;
- silver: the silver asset's calls per source (engine read of bronze, ``conform``, silver, quarantine, the clean and
  bronze counts, both writes, its check results);
- gold: the gold asset's calls (``read_inputs``, the use case's builder, write, reconcile count, check results).

The floor is ``deltalake.write_deltalake`` of the same flights rows, read from the landed CSVs beforehand, to a
fresh path. Rates are in flights rows (the business unit) per second of wall time; every stage also handles the
weather and reference tables. Spark's session start and a warm-up job are timed apart and excluded from compute.
Figures go to stdout and ``benchmarks/results/medallion.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import narwhals as nw
import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

from mlops_platform import names
from mlops_platform.defs.gold.assets import builder, read_inputs
from mlops_platform.defs.quality import reconcile_result, rule_result, sample_rows, unique_keys_result
from mlops_platform.ingest import read_bronze_batch
from mlops_platform.landing import day_range, files_for_day, land_day, latest_snapshot, load_source_data
from mlops_platform.resources.engine import Engine, PolarsEngine, SparkEngine
from mlops_platform.resources.spark import LOCAL_SPARK_CONFIG
from mlops_platform.resources.warehouse import DayRange, DeltaWarehouse
from mlops_platform.settings import UseCaseConfig, load_settings
from mlops_platform.transforms.conform import LANDING_DATE, RULE_COLUMN, conformed_tables

RESULTS = Path(__file__).resolve().parent / "results" / "medallion.json"
STAGES = ("bronze", "silver", "gold")
# The targets for the embedded engine on the full year.
TARGET_SECONDS = 10.0
TARGET_FLOOR_SHARE = 0.5
FLOOR_REPEATS = 3


class Phases:
    """Wall time per (stage, phase): read, compute (transform + collect), counts, write, checks.

    This process's CPU time per stage is kept too: on a shared machine it moves less than wall time. It misses the
    JVM's work, so for Spark it covers the Python driver only.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.cpu: dict[str, float] = defaultdict(float)
        self.stage = ""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[self.stage][name] += time.perf_counter() - start
            self.cpu[self.stage] += time.process_time() - cpu_start

    def total(self, stage: str) -> float:
        return sum(self.seconds[stage].values())


# --- the three stages, as the assets run them for one range --------------------------------------------------------

def run_bronze(usecase: UseCaseConfig, landing_dir: Path, warehouse: DeltaWarehouse, days: list[dt.date],
               phases: Phases) -> dict[str, int]:
    rows = {}
    ingested_at = dt.datetime.now(dt.UTC)
    for name, spec in usecase.sources.items():
        with phases.phase("read"):
            if spec.is_daily:
                files = [(path, day) for day in days
                         for path in files_for_day(landing_dir, usecase.name, name, spec, day)]
            else:
                files = [(latest_snapshot(landing_dir, usecase.name, name, spec), None)]
            batch = read_bronze_batch(files, spec, batch_id="bench", ingested_at=ingested_at)
        with phases.phase("write"):
            if spec.is_daily:
                write = warehouse.replace_days("bronze", name, batch.table, DayRange(LANDING_DATE, days[0], days[-1]),
                                               allow_evolution=spec.allow_schema_evolution)
            else:
                write = warehouse.overwrite("bronze", name, batch.table, allow_evolution=spec.allow_schema_evolution)
        rows[name] = write.rows_written
    return rows


def run_silver(usecase: UseCaseConfig, runner: Engine, warehouse: DeltaWarehouse, days: list[dt.date],
               phases: Phases) -> dict[str, int]:
    rows = {}
    for name, spec in usecase.sources.items():
        bronze_days = DayRange(LANDING_DATE, days[0], days[-1]) if spec.is_daily else None
        with phases.phase("read"):
            bronze = runner.read(warehouse, "bronze", name, bronze_days)
        with phases.phase("compute"):
            conformed = conformed_tables(runner, bronze, spec)
            silver_rows, quarantined = conformed.silver, conformed.quarantine
        with phases.phase("counts"):
            bronze_rows = runner.to_arrow(bronze.select(nw.len())).column(0)[0].as_py()
        with phases.phase("write"):
            if spec.is_daily:
                silver_days = DayRange(spec.partition.column, days[0], days[-1])
                write = warehouse.replace_days("silver", name, silver_rows, silver_days)
                quarantine_write = warehouse.replace_days("silver", names.quarantine(name), quarantined, bronze_days)
            else:
                write = warehouse.overwrite("silver", name, silver_rows)
                quarantine_write = warehouse.overwrite("silver", names.quarantine(name), quarantined)
        with phases.phase("checks"):
            duplicates = bronze_rows - quarantined.num_rows - silver_rows.num_rows
            key = dg.AssetKey(["silver", name])
            unique_keys_result(key, silver_rows, spec.keys)
            reconcile_result(key, expected=bronze_rows,
                             actual=write.rows_written + quarantine_write.rows_written + duplicates, explanation="")
            pl.from_arrow(quarantined).group_by(RULE_COLUMN).len().sort("len", descending=True).to_dicts()
            sample_rows(pl.from_arrow(quarantined), [RULE_COLUMN, "_rule_detail", "_source_file", "_source_row"])
        rows[name] = write.rows_written
    return rows


def run_gold(usecase: UseCaseConfig, runner: Engine, warehouse: DeltaWarehouse, days: list[dt.date],
             phases: Phases) -> dict[str, int]:
    rows = {}
    for table, spec in usecase.gold.items():
        build = builder(usecase, spec)
        run_days = DayRange(spec.partition_column, days[0], days[-1])
        with phases.phase("read"):
            inputs = read_inputs(usecase, spec, runner, warehouse, run_days)
        with phases.phase("compute"):
            gold_rows = runner.to_arrow(build(inputs))
        with phases.phase("write"):
            write = warehouse.replace_days("gold", table, gold_rows, run_days)
        with phases.phase("counts"):
            expected = runner.to_arrow(inputs[spec.reconcile_with].select(nw.len())).column(0)[0].as_py()
        with phases.phase("checks"):
            key = dg.AssetKey(["gold", table])
            unique_keys_result(key, gold_rows, spec.keys)
            reconcile_result(key, expected=expected, actual=write.rows_written, explanation="")
            for rule in spec.checks:
                rule_result(rule, key, gold_rows, spec.keys)
        if expected != write.rows_written:
            raise AssertionError(f"gold/{table}: {write.rows_written} rows for {expected} silver rows")
        rows[table] = write.rows_written
    return rows


def run_engine(engine: Engine, usecase: UseCaseConfig, landing_dir: Path, root: Path, days: list[dt.date]) -> dict:
    """Bronze, silver and gold of ``days`` into a fresh warehouse under ``root``, timed per stage and phase."""
    warehouse = DeltaWarehouse(root=str(root), catalog="bench")
    phases, rows = Phases(), {}
    # Bronze never uses the engine (the bronze asset reads landing files with Polars whatever the engine).
    phases.stage = "bronze"
    rows["bronze"] = run_bronze(usecase, landing_dir, warehouse, days, phases)
    phases.stage = "silver"
    rows["silver"] = run_silver(usecase, engine, warehouse, days, phases)
    phases.stage = "gold"
    rows["gold"] = run_gold(usecase, engine, warehouse, days, phases)
    return {
        "stages": {stage: {"seconds": phases.total(stage), "phases": dict(phases.seconds[stage]),
                           "cpu_seconds": phases.cpu[stage], "rows": rows[stage]} for stage in STAGES},
        "total_seconds": sum(phases.total(stage) for stage in STAGES),
        "cpu_seconds": sum(phases.cpu.values()),
    }


# --- inputs, floor, Spark ------------------------------------------------------------------------------------------

def land(usecase: UseCaseConfig, landing_dir: Path, days: list[dt.date]) -> dict[str, float]:
    start = time.perf_counter()
    data = load_source_data(usecase)
    loaded = time.perf_counter()
    for day in days:
        land_day(usecase, landing_dir, day, data)
    return {"load_source_data": loaded - start, "land_days": time.perf_counter() - loaded}


def raw_flights(usecase: UseCaseConfig, landing_dir: Path, days: list[dt.date]) -> pa.Table:
    """The landed flights rows as a plain CSV load types them (no lineage, no validation)."""
    spec = usecase.sources["flights"]
    paths = [path for day in days for path in files_for_day(landing_dir, usecase.name, "flights", spec, day)]
    frames = [pl.read_csv(path, infer_schema_length=None) for path in paths]
    return pl.concat(frames, how="vertical_relaxed").to_arrow()


def floor(table: pa.Table, root: Path) -> list[float]:
    seconds = []
    for attempt in range(FLOOR_REPEATS):
        path = root / f"floor_{attempt}"
        start = time.perf_counter()
        write_deltalake(str(path), table)
        seconds.append(time.perf_counter() - start)
    return seconds


def start_spark() -> tuple[object, dict[str, float]]:
    from pyspark.sql import SparkSession

    start = time.perf_counter()
    builder_ = SparkSession.builder.appName("bench-medallion")
    for key, value in {**LOCAL_SPARK_CONFIG, "spark.ui.showConsoleProgress": "false"}.items():
        builder_ = builder_.config(key, value)
    session = builder_.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    started = time.perf_counter()
    # Class loading and the Arrow path's first use are start-up too, not the medallion's compute.
    SparkEngine(session).to_arrow(SparkEngine(session).from_arrow(pa.table({"x": [1, 2]})).select(nw.len()))
    return session, {"session_start": started - start, "warm_up": time.perf_counter() - started}


# --- report ----------------------------------------------------------------------------------------------------------

def median_run(runs: list[dict]) -> dict:
    """Per stage and phase, the median over repeats (the run with the median total is kept for row counts)."""
    if len(runs) == 1:
        return runs[0]
    result = json.loads(json.dumps(sorted(runs, key=lambda run: run["total_seconds"])[len(runs) // 2]))
    for stage in STAGES:
        result["stages"][stage]["seconds"] = statistics.median(run["stages"][stage]["seconds"] for run in runs)
        for phase in result["stages"][stage]["phases"]:
            result["stages"][stage]["phases"][phase] = statistics.median(
                run["stages"][stage]["phases"][phase] for run in runs)
    result["total_seconds"] = statistics.median(run["total_seconds"] for run in runs)
    result["cpu_seconds"] = statistics.median(run["cpu_seconds"] for run in runs)
    result["all_totals"] = [run["total_seconds"] for run in runs]
    return result


def write_seconds(run: dict) -> float:
    return sum(run["stages"][stage]["phases"].get("write", 0.0) for stage in STAGES)


def rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("inf")


def report(figures: dict) -> str:
    rows = figures["flights_rows"]
    lines = [
        (f"Medallion benchmark: {figures['days']} days, {rows:,} flights rows "
         f"(+{figures['other_rows']:,} weather and reference rows), {os.cpu_count()} CPUs, "
         f"load average {figures['load_average_start']:.1f} -> {figures['load_average_end']:.1f}"),
        (f"Landing (not in the engine figures): {figures['landing']['land_days']:.2f} s to land "
         f"({figures['landing']['load_source_data']:.2f} s to load the source data)"),
        "",
        f"{'':<18}{'bronze':>18}{'silver':>18}{'gold':>18}{'total':>18}",
    ]
    for name, run in figures["engines"].items():
        cells = [f"{run['stages'][s]['seconds']:6.2f} s {rate(rows, run['stages'][s]['seconds']) / 1e3:6.0f}k/s"
                 for s in STAGES]
        total = f"{run['total_seconds']:6.2f} s {rate(rows, run['total_seconds']) / 1e3:6.0f}k/s"
        lines.append(f"{name:<18}" + "".join(f"{cell:>18}" for cell in [*cells, total]))
        for stage in STAGES:
            detail = ", ".join(f"{phase} {secs:.2f}" for phase, secs in run["stages"][stage]["phases"].items())
            lines.append(f"{'':<20}{stage}: {detail}")
        lines.append(f"{'':<20}CPU time of this process: {run['cpu_seconds']:.2f} s"
                     + (" (the Python driver only)" if name == "spark" else ""))
        if len(run.get("all_totals", [])) > 1:
            lines.append(f"{'':<20}totals of the {len(run['all_totals'])} runs (median above): "
                         + ", ".join(f"{seconds:.2f}" for seconds in run["all_totals"]))
    floor_seconds = figures["floor"]["seconds"]
    floor_cell = f"{floor_seconds:6.2f} s {rate(rows, floor_seconds) / 1e3:6.0f}k/s"
    lines.append(f"{'floor (raw Delta)':<18}{'':>54}{floor_cell:>18}")
    if "spark" in figures["engines"]:
        spark = figures["spark_start"]
        lines.append(f"Spark start-up (excluded): session {spark['session_start']:.2f} s, warm-up job "
                     f"{spark['warm_up']:.2f} s")
    for name, failure in figures.get("failures", {}).items():
        lines.append(f"{name:<18}FAILED: {failure}")
    lines.append("")
    for label, value in figures["ratios"].items():
        lines.append(f"{label}: {value:.3f}")
    for label, verdict in figures["verdicts"].items():
        lines.append(f"[{'PASS' if verdict['passed'] else 'MISS'}] {label}: {verdict['measured']}")
    if max(figures["load_average_start"], figures["load_average_end"]) > (os.cpu_count() or 1):
        lines.append("Note: the machine was busy (load average above the CPU count); wall times are inflated, "
                     "CPU time and the ratios move less.")
    return "\n".join(lines)


def publish(figures: dict, text: str, output: Path) -> dict:
    """Print a benchmark's report and write its figures as JSON to ``output``."""
    print(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nfigures written to {output}")
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="polars,spark", help="comma-separated: polars, spark")
    parser.add_argument("--days", type=int, default=365, help="days from the use case's first day (default 365)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine; the median is reported")
    parser.add_argument("--keep", action="store_true", help="keep the temporary landing zone and warehouses")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = set(engines) - {"polars", "spark"}
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}: choose from polars, spark")

    usecase = load_settings("local").usecases["flights"]
    days = day_range(usecase.partitions.start, args.days)
    work = Path(tempfile.mkdtemp(prefix="bench_medallion_"))
    load_start = os.getloadavg()[0]
    try:
        landing_dir = work / "landing"
        landing = land(usecase, landing_dir, days)
        flights = raw_flights(usecase, landing_dir, days)

        figures: dict = {"days": args.days, "flights_rows": flights.num_rows, "landing": landing,
                         "engines": {}, "repeat": args.repeat}
        floor_seconds = floor(flights, work / "floor")
        figures["floor"] = {"seconds": statistics.median(floor_seconds), "all": floor_seconds,
                            "columns": flights.num_columns,
                            "schema": {f.name: str(f.type) for f in flights.schema}}

        for name in engines:
            session = None
            try:
                if name == "spark":
                    session, figures["spark_start"] = start_spark()
                    engine: Engine = SparkEngine(session)
                else:
                    engine = PolarsEngine()
                runs = [run_engine(engine, usecase, landing_dir, work / f"{name}_{attempt}", days)
                        for attempt in range(args.repeat)]
            except Exception as exc:  # noqa: BLE001 - reported below and in the exit status; other engines still run
                figures.setdefault("failures", {})[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                continue
            finally:
                if session is not None:
                    session.stop()
            figures["engines"][name] = median_run(runs)
            bronze_rows = figures["engines"][name]["stages"]["bronze"]["rows"]
            if bronze_rows["flights"] != flights.num_rows:
                raise AssertionError(f"{name}: bronze has {bronze_rows['flights']} flights, landed {flights.num_rows}")

        bronze_rows = next(iter(figures["engines"].values()))["stages"]["bronze"]["rows"] if figures["engines"] else {}
        figures["other_rows"] = sum(bronze_rows.values()) - flights.num_rows if bronze_rows else 0
        floor_rate = rate(flights.num_rows, figures["floor"]["seconds"])
        figures["floor"]["rows_per_second"] = floor_rate
        for run in figures["engines"].values():
            run["rows_per_second"] = rate(flights.num_rows, run["total_seconds"])
            for stage in STAGES:
                run["stages"][stage]["rows_per_second"] = rate(flights.num_rows, run["stages"][stage]["seconds"])
        figures["ratios"], figures["verdicts"] = {}, {}
        if "polars" in figures["engines"]:
            embedded = figures["engines"]["polars"]
            share = embedded["rows_per_second"] / floor_rate
            figures["ratios"]["embedded total rows/s / floor rows/s"] = share
            figures["ratios"]["embedded total seconds / floor seconds"] = embedded["total_seconds"] / figures[
                "floor"]["seconds"]
            # The pipeline writes bronze, silver (+ quarantine) and gold: its Delta writes alone bound the share.
            figures["ratios"]["embedded Delta writes alone / floor seconds"] = write_seconds(embedded) / figures[
                "floor"]["seconds"]
            full_year = args.days == 365
            figures["verdicts"][f"embedded engine does the year in under {TARGET_SECONDS:.0f} s of compute"] = {
                "passed": embedded["total_seconds"] < TARGET_SECONDS and full_year,
                "measured": f"{embedded['total_seconds']:.2f} s wall ({embedded['cpu_seconds']:.2f} s CPU)"
                            + ("" if full_year else f" for {args.days} days"),
            }
            figures["verdicts"]["reaches at least half the raw Delta write rate"] = {
                "passed": share >= TARGET_FLOOR_SHARE,
                "measured": f"{share:.1%} of the floor's rows/s",
            }
            if "spark" in figures["engines"]:
                figures["ratios"]["spark total rows/s / embedded total rows/s"] = (
                    figures["engines"]["spark"]["rows_per_second"] / embedded["rows_per_second"])
        figures["load_average_end"] = os.getloadavg()[0]
        figures["load_average_start"] = load_start
        figures["environment"] = {
            "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "polars": pl.__version__, "pyarrow": pa.__version__, "narwhals": nw.__version__,
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    return publish(figures, report(figures), args.output)


if __name__ == "__main__":
    sys.exit(1 if main().get("failures") else 0)
