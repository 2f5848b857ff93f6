"""Gold -> promoted champion on the full year, and the training-set build alone against a plain pandas join.

Setup (not measured): land 2013 and run the reference job and the daily job over the whole year as one ranged run,
into a temporary data folder. Then, in one run:

- training set: ``build_training_set`` over the year (window 365 days) on the embedded engine, against the same
  joins written in plain pandas over the same Delta tables (read included in both);
- gold -> champion: the ``<usecase>_training`` job (training set, tuning with the configured budget, registration,
  champion gate, promotion) through Dagster, as the product runs it.

Usage: python benchmarks/bench_training.py [--days 365] [--skip-champion]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
warnings.filterwarnings("ignore")

import dagster as dg
import pandas as pd

from mlops_platform.defs import build_definitions
from mlops_platform.features import build_training_set
from mlops_platform.landing import day_range, land_days
from mlops_platform.resources import build_resources
from mlops_platform.resources.engine import PolarsEngine
from mlops_platform.settings import DATA_DIR_ENV, load_settings

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
RESULTS = Path(__file__).parent / "results"


def pandas_training_set(warehouse, usecase, first_day: dt.date, validation_start: dt.date, test_start: dt.date
                        ) -> pd.DataFrame:
    """The baseline: the same lookups as pandas merges over the same tables."""
    spec = usecase.training_set
    gold = warehouse.read("gold", spec.source).to_pandas()
    frame = gold[gold["flight_date"] >= first_day]
    for lookup in spec.lookups:
        table = warehouse.read("features", lookup.table).to_pandas()
        table = table.rename(columns={feature: label for label, feature in lookup.keys.items()})
        frame = frame.merge(table[[*lookup.keys, *usecase.features[lookup.table].columns]], on=list(lookup.keys),
                            how="left")
    frame["split"] = "train"
    frame.loc[frame["flight_date"] >= validation_start, "split"] = "validation"
    frame.loc[frame["flight_date"] >= test_start, "split"] = "test"
    return frame


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--skip-champion", action="store_true", help="measure the training set only")
    args = parser.parse_args()

    os.environ[DATA_DIR_ENV] = tempfile.mkdtemp(prefix="bench_training_")
    settings = load_settings("local")
    usecase = settings.usecases["flights"]
    spec = usecase.training_set
    usecase = usecase.model_copy(update={"training_set": spec.model_copy(
        update={"split": spec.split.model_copy(update={"window_days": args.days})})})
    settings = settings.model_copy(update={"usecases": {"flights": usecase}})
    days = day_range(usecase.partitions.start, args.days)
    definitions = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    warehouse = build_resources(settings)["warehouse"]

    print(f"setup: landing and processing {args.days} days (not measured) ...", flush=True)
    land_days(usecase, settings.landing_dir, days)
    assert definitions.resolve_job_def("flights_snapshot").execute_in_process(
        instance=instance, run_config=QUIET).success
    assert definitions.resolve_job_def("flights_daily").execute_in_process(
        instance=instance, run_config=QUIET,
        tags={"dagster/asset_partition_range_start": days[0].isoformat(),
              "dagster/asset_partition_range_end": days[-1].isoformat()}).success

    build, ours = timed(lambda: build_training_set(usecase, PolarsEngine(), warehouse))
    baseline_rows, baseline = timed(lambda: pandas_training_set(
        warehouse, usecase, build.first_day, build.validation_start, build.test_start))
    assert len(baseline_rows) == build.rows.num_rows, (len(baseline_rows), build.rows.num_rows)
    figures = {
        "rows": build.rows.num_rows,
        "training_set_seconds": ours,
        "pandas_join_seconds": baseline,
        "speedup_vs_pandas": baseline / ours,
    }
    print(f"\ntraining set, {build.rows.num_rows:,} rows x {build.rows.num_columns} columns")
    print(f"  platform (polars, Delta in/out of memory)  {ours:7.2f} s")
    print(f"  plain pandas merges (baseline)             {baseline:7.2f} s")
    print(f"  ratio baseline / platform                  {baseline / ours:7.2f}x")

    if not args.skip_champion:
        training_job = definitions.resolve_job_def("flights_training")
        result, seconds = timed(lambda: training_job.execute_in_process(instance=instance, run_config=QUIET,
                                                                       raise_on_error=False))
        figures["gold_to_champion_seconds"] = seconds
        figures["gold_to_champion_success"] = result.success
        figures["gold_to_champion_vs_training_set"] = seconds / ours
        print(f"\ngold -> promoted champion (training set, tuning, registry, gate, promotion): {seconds:.1f} s "
              f"({'succeeded' if result.success else 'FAILED'}), {seconds / ours:.0f}x the training-set build")

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
