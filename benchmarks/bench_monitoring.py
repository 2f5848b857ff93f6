"""A monitored day the old way against the new, in one process on the same frames, with the same verdicts required.

Before (what the monitoring asset did every day): build the reference baseline (type the training rows, score them
with the champion), judge the day, render Evidently's full HTML page. After: take the baseline from the cache (one
build per model version), judge the day with ``monitor_day``, write the compact page; Evidently's page never (it is
on demand: the drift page asset or ``mlops report``). The frames have the flights use case's columns (28 numerical, 5 categorical features), a
reference the size of a train split of the 120-day window and a day of about 900 flights; the model is the flights
model's own pipeline (``ml.estimators.build_pipeline``), fitted once on the reference. Every third day drifts;
quiet and drifted days are reported apart, and the two ways alternate day by day so that both see the same load. Exits 1 when any verdict differs.

    .venv/bin/python -m benchmarks.bench_monitoring [--days 6] [--reference-rows 80000] [--day-rows 900]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.measure import LoadRecorder
from mlops_platform.defs import stages
from mlops_platform.defs.monitoring.inputs import monitored_model
from mlops_platform.ml.estimators import build_pipeline
from mlops_platform.ml.scoring import PREDICTION, feature_frame
from mlops_platform.monitoring import reference as reference_cache
from mlops_platform.monitoring.day import MonitoredModel, Reference, judge, monitor_day
from mlops_platform.monitoring.reference import ReferenceCache
from mlops_platform.monitoring.report import compact_name, full_name, render_full_report, write_compact_report
from mlops_platform.settings import load_settings

FIRST_DAY = dt.date(2013, 5, 1)
WAYS = ("before", "after")
# Most days of a replay are quiet; every third one drifts here, so both kinds of day are measured.
DRIFTED_EVERY = 3


def frame(model: MonitoredModel, rows: int, rng: np.random.Generator, shift: float) -> pd.DataFrame:
    columns = {column: rng.normal(10.0 * i + (shift if i % 2 == 0 else 0.0), 1.0 + i % 3, rows)
               for i, column in enumerate(model.numerical)}
    for column in model.categorical:
        columns[column] = rng.choice(np.array(["a", "b", "c", "d", None], dtype=object), rows,
                                     p=[0.4, 0.3, 0.15, 0.1, 0.05])
    return pd.DataFrame(columns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--reference-rows", type=int, default=80_000)
    parser.add_argument("--day-rows", type=int, default=900)
    args = parser.parse_args(argv)

    usecase = load_settings().usecases["flights"]
    model = monitored_model(usecase, usecase.monitoring)
    rng = np.random.default_rng(0)
    training = frame(model, args.reference_rows, rng, 0.0)
    typed = feature_frame(training, model.config, list(model.features))
    label = (typed[model.numerical[0]] + rng.normal(0, 1, len(typed)) > 0).astype(int)
    pipeline = build_pipeline(model.config, list(model.features), {"max_iter": 60}, seed=0).fit(typed, label)

    def build() -> Reference:
        features = feature_frame(training, model.config, list(model.features))
        return Reference("1", features, pipeline.predict_proba(features)[:, 1], champion_quality=0.7)

    page_asset = stages.drift_page_key(usecase, model.spec.model).to_user_string()
    days = []
    for offset in range(args.days):
        drifted = offset % DRIFTED_EVERY == DRIFTED_EVERY - 1
        rows = frame(model, args.day_rows, rng, 3.0 if drifted else 0.0)
        typed_day = feature_frame(rows, model.config, list(model.features))
        rows[PREDICTION] = pipeline.predict_proba(typed_day)[:, 1]
        rows["model_version"] = "1"
        days.append((FIRST_DAY + dt.timedelta(days=offset), rows, drifted))

    # Evidently's import and first report are paid once per process whichever way runs first: pay them untimed.
    first_day, first_rows, _ = days[0]
    warm_up = monitor_day(model, first_day, first_rows.head(200), build(), window_start=first_day)
    with tempfile.TemporaryDirectory() as tmp:
        render_full_report(Path(tmp) / "warm_up.html", model, warm_up, build(), first_rows.head(200))

    results: dict[tuple[str, bool], list[float]] = {(w, d): [] for w in WAYS for d in (False, True)}
    verdicts: dict[str, list[tuple]] = {way: [] for way in WAYS}
    reports_bytes: dict[str, int] = {}
    histories: dict[str, dict[dt.date, bool]] = {way: {} for way in WAYS}
    reference_cache.forget_in_process()
    with tempfile.TemporaryDirectory(prefix="bench_monitoring_") as tmp, LoadRecorder() as load:
        folder = Path(tmp)
        cache = ReferenceCache(folder / "cache")
        # The two ways alternate day by day, so both see the same load on this shared machine.
        for day, rows, drifted in days:
            for way in WAYS:
                reports = folder / way
                started = time.perf_counter()
                reference = build() if way == "before" else cache.get("flights_delay-v1", build)[0]
                result = monitor_day(model, day, rows, reference, window_start=day)
                checks = judge(result, histories[way], {}, model.spec)
                histories[way][day] = result.drift.dataset_drifted
                if way == "before":
                    render_full_report(reports / full_name(day), model, result, reference, rows)
                else:
                    write_compact_report(reports / compact_name(day), "flights_delay", result, checks,
                                         usecase="flights", page_asset=page_asset)
                results[(way, drifted)].append(time.perf_counter() - started)
                verdicts[way].append((result.drift, result.prediction_drift, checks))
        for way in WAYS:
            reports_bytes[way] = sum(path.stat().st_size for path in (folder / way).iterdir())
        cache_bytes = sum(path.stat().st_size for path in (folder / "cache").iterdir())

    readings = load.readings
    print(f"{args.days} days of {args.day_rows} rows (every {DRIFTED_EVERY}th drifted) against a "
          f"{args.reference_rows:,}-row reference; load average {statistics.mean(readings):.1f} "
          f"({min(readings):.1f}-{max(readings):.1f}) on {os.cpu_count()} CPUs")
    for drifted in (False, True):
        before, after = (results[(way, drifted)] for way in WAYS)
        if not before:
            continue
        print(f"  {'drifted' if drifted else 'quiet'} days: before {statistics.mean(before):6.2f} s/day "
              f"({', '.join(f'{s:.2f}' for s in before)}), after {statistics.mean(after):6.2f} s/day "
              f"({', '.join(f'{s:.2f}' for s in after)}): after/before "
              f"{statistics.mean(after) / statistics.mean(before):.2f}")
    total = {way: sum(results[(way, False)]) + sum(results[(way, True)]) for way in WAYS}
    print(f"  all days: after/before {total['after'] / total['before']:.2f} "
          f"(the first after-day builds the cached baseline)")
    print(f"  reports per day: before {reports_bytes['before'] / args.days / 1e6:.2f} MB, after "
          f"{reports_bytes['after'] / args.days / 1e6:.2f} MB (after/before "
          f"{reports_bytes['after'] / reports_bytes['before']:.3f}); cached baseline {cache_bytes / 1e6:.1f} MB, "
          "once per model version")
    if verdicts["before"] != verdicts["after"]:
        print("VERDICTS DIFFER between before and after")
        return 1
    print("  every day's drift results and check verdicts are identical before and after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
