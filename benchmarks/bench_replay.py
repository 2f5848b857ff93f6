"""A replayed day with a champion, split by where its wall time goes, against the orchestrator's floor; and the
figures of a replay around it: retraining, memory, report and table bytes per day.

    python -m benchmarks.bench_replay [--days 4] [--window-days N] [--bootstrap-trials 2] [--skip-retraining]

Three processes, each started fresh, share one data folder and one persistent Dagster instance (SQLite without
fsync, as ``mlops run`` opens it):

1. setup: land the days; load the reference tables and run the daily job over the training window as one ranged
   run; two more days one by one (days without a champion, profiled); then the training job with a small tuning
   budget makes a first champion, registered, promoted and served (the serving process keeps running, as in
   ``mlops run``).
2. days: the replay's daily runs with a champion, one day at a time as ``mlops run`` runs them (the first day in a
   cold process, the others warm), each under a stack sampler (``benchmarks/profiling.py``) and split into
   Dagster orchestration (run start, between and after steps, event and run storage), imports, model loading,
   compute per stage, Delta reads and writes, Evidently report rendering and MLflow calls; the retraining sensor
   evaluated after each day; whether the days imported Evidently (they should not: its page is on demand), then
   the last day's page rendered on demand (``mlops report``'s function), timed and weighed. In the same process: the
   same job's graph with no-op bodies (the orchestrator's floor, ``harness.noop_twin``) on the same instance and on
   an in-memory one; the last day run again with the Delta handles the process keeps and with a table opened on
   every call, alternating; then a retraining with the
   configured (default) tuning budget on the configured window, profiled the same way, against one plain fit of
   each model's pipeline on the same rows and against the training job's own no-op twin.
3. this process: prints the figures and writes ``benchmarks/results/replay.json``.

Warm days are shown together and apart: quiet days, and failing days (a day whose features drift or quality drops:
before issue 16's on-demand page, its monitoring rendered Evidently's full page and, the first time, imported
Evidently).

Memory is the days process's peak RSS (``VmHWM``) before the retraining, against its RSS once the code location is
imported, and the models the process loaded against the versions it scored (one load per version is the target);
disk is what each day adds under the reports folder against what it adds to the warehouse, for quiet days and days
failing days apart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from benchmarks.measure import LoadRecorder

RESULTS = Path(__file__).resolve().parent / "results" / "replay.json"
USECASE = "flights"
NO_CHAMPION_DAYS = 2
PHASE_FILE = "{phase}.json"
# Hotspots kept in the results file; the terminal shows --hotspots of them.
HOTSPOTS_KEPT = 40


# ---------------------------------------------------------------------------------------------------------- setup

def phase_setup(folder: Path, args: argparse.Namespace) -> dict:
    from benchmarks.harness import (
        backfill,
        benchmark_settings,
        execute,
        land,
        open_instance,
        step_stages,
        step_windows,
        train,
    )
    from benchmarks.profiling import Split, StackSampler
    from mlops_platform import names
    from mlops_platform.defs import build_definitions
    from mlops_platform.ml.gate import CHAMPION

    settings = benchmark_settings(folder, USECASE, trials=args.bootstrap_trials)
    usecase = settings.usecases[USECASE]
    window = args.window_days or usecase.training_set.split.window_days
    definitions = build_definitions(settings)
    instance = open_instance()
    started = time.perf_counter()
    days = land(settings, USECASE, usecase.partitions.start, window + args.days)
    landed = time.perf_counter()
    backfill(definitions, settings, USECASE, instance, days[:window - NO_CHAMPION_DAYS])
    filled = time.perf_counter()

    daily = definitions.resolve_job_def(names.daily_job(usecase.name))
    stages = step_stages(definitions, daily)
    no_champion = []
    for day in days[window - NO_CHAMPION_DAYS:window]:
        with StackSampler(args.interval) as sampler:
            begin, clock = time.time(), time.perf_counter()
            result = execute(daily, instance, partition_key=day.isoformat())
            wall, end = time.perf_counter() - clock, time.time()
        split = Split()
        split.add(sampler.between(begin, end), step_windows(instance, result.run_id, stages))
        no_champion.append({"day": day.isoformat(), "wall_seconds": wall, "split": split.as_dict()})

    clock = time.perf_counter()
    train(definitions, settings, USECASE, instance)
    mlflow = definitions.resources["mlflow"]
    return {
        "window_days": window,
        "measured_days": [day.isoformat() for day in days[window:]],
        "land_seconds": landed - started,
        "backfill_days": window - NO_CHAMPION_DAYS,
        "backfill_seconds": filled - landed,
        "no_champion_days": no_champion,
        "first_champion_seconds": time.perf_counter() - clock,
        "first_champion_trials": args.bootstrap_trials,
        "champions": {name: mlflow.alias_version(config.registered_name, CHAMPION)
                      for name, config in usecase.models.items()},
    }


# ----------------------------------------------------------------------------------------------------------- days

def phase_days(folder: Path, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    import dagster as dg

    from benchmarks.harness import (
        benchmark_settings,
        execute,
        open_instance,
        step_stages,
        step_windows,
    )
    from benchmarks.measure import SqlStatements, folder_bytes, memory_mb
    from benchmarks.profiling import Split, StackSampler, hotspots
    from mlops_platform import names
    from mlops_platform.defs import build_definitions
    from mlops_platform.defs import stages as stages_module
    from mlops_platform.defs.monitoring.reports import render_day_report
    from mlops_platform.ml import scoring
    from mlops_platform.monitoring.decisions import quality_dropped_below

    imported = time.perf_counter()
    rss_imported = memory_mb("VmRSS")
    setup = json.loads((folder / PHASE_FILE.format(phase="setup")).read_text())
    settings = benchmark_settings(folder, USECASE)
    usecase = settings.usecases[USECASE]
    definitions = build_definitions(settings)
    instance = open_instance()
    built = time.perf_counter()
    daily = definitions.resolve_job_def(names.daily_job(usecase.name))
    stages = step_stages(definitions, daily)
    sensor = definitions.resolve_sensor_def(names.retraining_sensor(usecase.name))
    mlflow_database = Path(definitions.resources["mlflow"].tracking_uri).name
    spec = usecase.monitoring
    folders = {"warehouse": settings.warehouse_dir, "reports": settings.reports_dir, "mlflow": settings.mlflow_dir}

    days, warm_samples, cursor, versions_scored = [], [], None, set()
    for index, day in enumerate(dt.date.fromisoformat(day) for day in setup["measured_days"]):
        bytes_before = {name: folder_bytes(path) for name, path in folders.items()}
        with StackSampler(args.interval) as sampler, SqlStatements() as statements:
            begin, clock = time.time(), time.perf_counter()
            result = execute(daily, instance, partition_key=day.isoformat())
            wall, end = time.perf_counter() - clock, time.time()
        samples = sampler.between(begin, end)
        split = Split()
        split.add(samples, step_windows(instance, result.run_id, stages))
        if index:
            warm_samples += samples
        clock = time.perf_counter()
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions)
        requests = list(sensor(context))
        cursor = context.cursor
        sensor_seconds = time.perf_counter() - clock
        checks = [event.event_specific_data for event in result.all_events
                  if event.event_type_value == "ASSET_CHECK_EVALUATION"]
        materialized = [event.materialization for event in result.get_asset_materialization_events()]
        monitored = next((m.metadata for m in materialized
                          if m.asset_key == stages_module.monitoring_key(usecase, spec.model)), None)
        # The rule the compact page uses to point at the full page (``DayResult.failed``), from the day's metadata.
        failing = monitored is not None and (
            monitored["drift_share"].value >= spec.max_drifted_share
            or quality_dropped_below(monitored[spec.quality_metric].value,
                                     monitored[f"champion_test_{spec.quality_metric}"].value, spec))
        versions_scored |= {(materialization.asset_key.to_user_string(), materialization.metadata["model_version"].value)
                            for materialization in materialized
                            if names.PREDICTIONS in materialization.asset_key.path
                            and "model_version" in materialization.metadata}
        days.append({
            "day": day.isoformat(),
            "wall_seconds": wall,
            "step_seconds": {event.step_key: event.event_specific_data.duration_ms / 1000
                             for event in result.all_events if event.event_type_value == "STEP_SUCCESS"},
            "events": len(instance.all_logs(result.run_id)),
            "sql_statements": statements.by_store(mlflow_database),
            "checks_failed": [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed],
            "checks": len(checks),
            "failing": failing,
            "models_loaded": scoring.MODELS.loads,
            "sensor_seconds": sensor_seconds,
            "sensor_requests": len(requests),
            "bytes_added": {name: folder_bytes(path) - bytes_before[name] for name, path in folders.items()},
            "rss_mb": memory_mb("VmRSS"),
            "split": split.as_dict(),
        })
    evidently_imported = "evidently" in sys.modules
    figures = {
        "import_seconds": imported - started,
        "evidently_imported_by_days": evidently_imported,
        "definitions_seconds": built - imported,
        "rss_after_import_mb": rss_imported,
        "days": days,
        "hotspots": hotspots(warm_samples, top=HOTSPOTS_KEPT),
        "floor": floor(daily, definitions, instance, [dt.date.fromisoformat(d["day"]) for d in days], args),
        "levers": levers(definitions, usecase, dt.date.fromisoformat(days[-1]["day"]), args.floor_repeats),
        "handles": handles_lever(daily, instance, dt.date.fromisoformat(days[-1]["day"]), args.floor_repeats),
        "peak_rss_mb": memory_mb("VmHWM"),
        "steps": len(stages),
        "versions_scored": len(versions_scored),
        "assets": len(daily.asset_layer.selected_asset_keys),
    }
    # After the peak RSS is read: the page is not part of a day.
    last_day = dt.date.fromisoformat(days[-1]["day"])
    clock = time.perf_counter()
    page = render_day_report(definitions.resources, usecase, last_day)
    figures["page_on_demand"] = {"day": last_day.isoformat(), "seconds": time.perf_counter() - clock,
                                 "bytes": page.stat().st_size}
    page.unlink()
    if not args.skip_retraining:
        figures["retraining"] = retraining(definitions, settings, instance, args)
        figures["peak_rss_with_retraining_mb"] = memory_mb("VmHWM")
    return figures


def levers(definitions, usecase, day: dt.date, repeats: int) -> dict:
    """The day's scoring inputs and predict, each the way it is done and the way it was done before, alternating in
    the same process: the feature tables read between the day's timestamp keys against read whole, and the
    booster's predict on one OpenMP thread against one per core."""
    from mlops_platform import names
    from mlops_platform.features import build_scoring_rows, feature_columns, row_keys
    from mlops_platform.ml.gate import CHAMPION
    from mlops_platform.ml.scoring import feature_frame, load_alias, predict
    from mlops_platform.resources.warehouse import DayRange
    from mlops_platform.transforms.features import with_features

    warehouse, runner = definitions.resources["warehouse"], definitions.resources["engine"].engine()
    spec = usecase.training_set
    days = DayRange(usecase.gold[spec.source].partition_column, day, day)
    keys = row_keys(usecase)
    gold = names.table(usecase.name, names.GOLD, spec.source)

    def whole_tables():
        tables = {lookup.table: runner.read(warehouse, *names.table(usecase.name, names.FEATURES, lookup.table))
                  for lookup in spec.lookups}
        return runner.to_arrow(with_features(runner.read(warehouse, *gold, days), tables, usecase, keys).sort(*keys))

    rows = build_scoring_rows(usecase, runner, warehouse, days)
    assert rows.equals(whole_tables()), "the pruned read must join exactly the rows of the whole tables"
    config = next(iter(usecase.models.values()))
    model, _ = load_alias(definitions.resources["mlflow"].client(), config, CHAMPION)
    typed = feature_frame(rows.to_pandas(), config, feature_columns(usecase))
    pairs = {
        "scoring_rows": (lambda: build_scoring_rows(usecase, runner, warehouse, days), whole_tables),
        "predict": (lambda: predict(model, typed, threads=1), lambda: predict(model, typed, threads=os.cpu_count())),
    }
    figures = {}
    for name, (now, before) in pairs.items():
        timings: dict[str, list[float]] = {"now": [], "before": []}
        for _ in range(repeats):
            for label, run in (("now", now), ("before", before)):
                clock = time.perf_counter()
                run()
                timings[label].append(time.perf_counter() - clock)
        figures[name] = {label: statistics.median(values) for label, values in timings.items()}
    feature_files = {lookup.table: len(warehouse.tables.file_uris(*names.table(usecase.name, names.FEATURES,
                                                                                   lookup.table)))
                     for lookup in spec.lookups}
    return {"day": day.isoformat(), "rows": rows.num_rows, "feature_files": feature_files, **figures}


def handles_lever(daily, instance, day: dt.date, repeats: int) -> dict:
    """The whole day run again (it replaces its own days: idempotent), alternating in the same process: with the
    Delta handles this process keeps (warm from the days before), and with a table opened on every call, as before."""
    from benchmarks.harness import execute
    from mlops_platform.storage.delta import HANDLES

    timings: dict[str, list[float]] = {"now": [], "before": []}
    for repeat in range(repeats):
        # Each run adds to the instance's event log: the order alternates so that neither side always runs later.
        for label in ("before", "now") if repeat % 2 == 0 else ("now", "before"):
            HANDLES.keep = label == "now"
            try:
                clock = time.perf_counter()
                execute(daily, instance, partition_key=day.isoformat())
                timings[label].append(time.perf_counter() - clock)
            finally:
                HANDLES.keep = True
    return {"day": day.isoformat(), **{label: statistics.median(values) for label, values in timings.items()}}


def floor(daily, definitions, instance, days: list[dt.date], args: argparse.Namespace) -> dict:
    """The daily job's no-op twin: on the same instance (plain and sampled, for the sampler's overhead) and on an
    in-memory one (what the same graph costs without run storage)."""
    import dagster as dg

    from benchmarks.harness import execute, noop_twin
    from benchmarks.profiling import StackSampler

    twin = noop_twin(definitions, daily)

    def timed(target, day: dt.date) -> float:
        clock = time.perf_counter()
        execute(twin, target, partition_key=day.isoformat())
        return time.perf_counter() - clock

    plain = [timed(instance, days[i % len(days)]) for i in range(args.floor_repeats)]
    with StackSampler(args.interval):
        sampled = [timed(instance, days[i % len(days)]) for i in range(args.floor_repeats)]
    memory = dg.DagsterInstance.ephemeral()
    in_memory = [timed(memory, days[i % len(days)]) for i in range(args.floor_repeats)]
    return {"seconds": statistics.median(plain), "runs": plain, "sampled_seconds": statistics.median(sampled),
            "sampler_overhead": statistics.median(sampled) / statistics.median(plain) - 1,
            "in_memory_seconds": statistics.median(in_memory)}


def retraining(definitions, settings, instance, args: argparse.Namespace) -> dict:
    """The training job with the configured budget while a champion exists, as the sensor would request it."""

    from benchmarks.harness import noop_twin, run_seconds, step_stages, step_windows, train
    from benchmarks.profiling import Split, StackSampler, hotspots
    from mlops_platform import names
    from mlops_platform.defs.stages import model_key
    from mlops_platform.ml.gate import CHAMPION

    usecase = settings.usecases[USECASE]
    mlflow = definitions.resources["mlflow"]
    job = definitions.resolve_job_def(names.training_job(usecase.name))
    before = {name: mlflow.alias_version(config.registered_name, CHAMPION) for name, config in usecase.models.items()}
    with StackSampler(args.interval) as sampler:
        begin, clock = time.time(), time.perf_counter()
        result = train(definitions, settings, USECASE, instance)
        wall, end = time.perf_counter() - clock, time.time()
    samples = sampler.between(begin, end)
    split = Split()
    split.add(samples, step_windows(instance, result.run_id, step_stages(definitions, job)))
    client = mlflow.client()
    models = {}
    for name in usecase.models:
        event = next(e for e in result.get_asset_materialization_events()
                     if e.asset_key == model_key(usecase, name))
        metadata = {key: value.value for key, value in event.materialization.metadata.items()}
        tags = client.get_run(metadata["mlflow_run_id"]).data.tags
        models[name] = {"trials": metadata["trials"], "version": metadata["model_version"],
                        "seconds": {key.removeprefix("seconds."): float(value) for key, value in tags.items()
                                    if key.startswith("seconds.")},
                        "one_fit_seconds": training_fit_seconds(definitions, usecase, name)}
    gate = {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}
    twin = noop_twin(definitions, job)
    floors = run_seconds(twin, instance, args.floor_repeats)
    return {
        "wall_seconds": wall,
        "step_seconds": {event.step_key: event.event_specific_data.duration_ms / 1000
                         for event in result.all_events if event.event_type_value == "STEP_SUCCESS"},
        "split": split.as_dict(),
        "hotspots": hotspots(samples, top=HOTSPOTS_KEPT),
        "models": models,
        "checks": gate,
        "champion_before": before,
        "champion_after": {name: mlflow.alias_version(config.registered_name, CHAMPION)
                           for name, config in usecase.models.items()},
        "floor_seconds": statistics.median(floors),
        "window_days": usecase.training_set.split.window_days,
        "budget": {name: {"max_trials": config.tuning.max_trials, "timeout_seconds": config.tuning.timeout_seconds}
                   for name, config in usecase.models.items()},
    }


def training_fit_seconds(definitions, usecase, model_name: str) -> float:
    """One fit on the current training set (see ``harness.one_fit_seconds``)."""
    from benchmarks.harness import one_fit_seconds
    from mlops_platform.defs.training.assets import read_training_set
    from mlops_platform.features import feature_columns, row_keys
    from mlops_platform.ml.model_data import model_frame

    config = usecase.models[model_name]
    features = feature_columns(usecase)
    table, _ = read_training_set(definitions.resources["warehouse"], usecase)
    return one_fit_seconds(config, model_frame(table, config, features, row_keys(usecase)), features)


# ------------------------------------------------------------------------------------------------------- reporting

def mean_split(days: list[dict]) -> dict[str, dict[str, float]]:
    """Seconds per day by stage and category, averaged over ``days``."""
    totals: dict[str, dict[str, float]] = {}
    for day in days:
        for key, seconds in day["split"]["by_stage_and_category"].items():
            stage, category = key.split(" | ")
            totals.setdefault(category, {}).setdefault(stage, 0.0)
            totals[category][stage] += seconds / len(days)
    return totals


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def report(setup: dict, figures: dict, top: int) -> list[str]:
    from benchmarks.profiling import CATEGORIES

    days = figures["days"]
    warm = days[1:] or days
    warm_wall = _mean(d["wall_seconds"] for d in warm)
    floor = figures["floor"]
    lines = [
        (f"setup: {setup['backfill_days']} days backfilled as one run in {setup['backfill_seconds']:.1f} s, "
        f"first champion ({setup['first_champion_trials']} trials per model) in "
        f"{setup['first_champion_seconds']:.1f} s; training window {setup['window_days']} days"),
        (f"a day without a champion: {_mean(d['wall_seconds'] for d in setup['no_champion_days']):.2f} s "
        f"(mean of {len(setup['no_champion_days'])})"),
        "",
        (f"daily run with a champion ({figures['steps']} steps, {figures['assets']} assets), "
        f"days {days[0]['day']} .. {days[-1]['day']}:"),
        (f"  first day in a fresh process     {days[0]['wall_seconds']:7.2f} s   (+ {figures['import_seconds']:.1f} s "
        f"importing the code location, {figures['definitions_seconds']:.1f} s building definitions)"),
        (f"  warm day (mean of {len(warm)})            {warm_wall:7.2f} s   "
        f"= {warm_wall / floor['seconds']:.2f}x the floor"),
        *(f"    {f'{label} (mean of {len(kind)})':33}{_mean(d['wall_seconds'] for d in kind):7.2f} s   "
          f"= {_mean(d['wall_seconds'] for d in kind) / floor['seconds']:.2f}x the floor"
          for label, kind in (("quiet", [d for d in warm if not d["failing"]]),
                              ("failing", [d for d in warm if d["failing"]]))
          if kind),
        (f"  floor: no-op twin, same instance {floor['seconds']:7.2f} s   (in-memory instance "
        f"{floor['in_memory_seconds']:.2f} s; sampler overhead on it {floor['sampler_overhead']:+.1%})"),
        "",
        ("first day, by kind of work: " + ", ".join(
            f"{category} {seconds:.1f}" for category, seconds in days[0]["split"]["by_category"].items())),
        "",
        "split of a warm day, seconds (stage x kind of work):",
    ]
    split = mean_split(warm)
    stages = sorted({stage for per_stage in split.values() for stage in per_stage},
                    key=lambda s: -sum(split[c].get(s, 0.0) for c in split))
    lines.append(f"  {'':36}" + "".join(f"{stage[:11]:>12}" for stage in stages) + f"{'total':>9}{'share':>7}")
    for category in CATEGORIES:
        if category not in split:
            continue
        row = split[category]
        total = sum(row.values())
        lines.append(f"  {category:36}" + "".join(f"{row.get(stage, 0.0):12.2f}" for stage in stages)
                     + f"{total:9.2f}{total / warm_wall:7.1%}")
    stage_totals = [sum(split[c].get(stage, 0.0) for c in split) for stage in stages]
    lines.append(f"  {'total':36}" + "".join(f"{t:12.2f}" for t in stage_totals)
                 + f"{sum(stage_totals):9.2f}{sum(stage_totals) / warm_wall:7.1%}")
    lines += ["", ("per warm day: "
              f"{_mean(d['events'] for d in warm):.0f} Dagster events, "
              f"{_mean(d['sql_statements']['dagster'] for d in warm):.0f} SQL statements to Dagster's storage, "
              f"{_mean(d['sql_statements']['mlflow'] for d in warm):.0f} to MLflow's; "
              f"retraining sensor {_mean(d['sensor_seconds'] for d in warm):.2f} s; "
              f"failed checks: {sorted({c for d in days for c in d['checks_failed']}) or 'none'}"),
              "", f"top {top} hotspots of the warm days (cumulative, seconds per day):"]
    for spot in figures["hotspots"][:top]:
        lines.append(f"  {spot['seconds'] / len(warm):7.2f} {spot['share']:6.1%}  {spot['function']}  "
                     f"({spot['module']}:{spot['line']})")
    levers = figures["levers"]
    lines += ["", (f"levers on {levers['day']} ({levers['rows']} rows; feature tables' files "
                   f"{levers['feature_files']}), median of {len(figures['floor']['runs'])}, same process:")]
    for name, label, before in (("scoring_rows", "scoring rows, features read between the day's keys", "whole"),
                                ("predict", "predict on one OpenMP thread", f"{os.cpu_count()} threads")):
        lines.append(f"  {label}: {levers[name]['now']:.3f} s vs {levers[name]['before']:.3f} s {before} "
                     f"= {levers[name]['now'] / levers[name]['before']:.2f}x")
    handles = figures["handles"]
    lines.append(f"  {handles['day']} run again, Delta handles kept: {handles['now']:.2f} s vs {handles['before']:.2f} s "
                 f"a table opened per call = {handles['now'] / handles['before']:.2f}x "
                 f"(floor {figures['floor']['seconds']:.2f} s: {handles['now'] / figures['floor']['seconds']:.2f}x vs "
                 f"{handles['before'] / figures['floor']['seconds']:.2f}x)")
    report_bytes = _mean(d["bytes_added"]["reports"] for d in days)
    table_bytes = _mean(d["bytes_added"]["warehouse"] for d in days)
    lines += [
        "",
        (f"memory: RSS after importing {figures['rss_after_import_mb']:.0f} MB; peak of the replay process "
        f"{figures['peak_rss_mb']:.0f} MB ({figures['peak_rss_mb'] / figures['rss_after_import_mb']:.2f}x); "
        f"RSS after each day: {', '.join(format(d['rss_mb'], '.0f') for d in days)} MB"),
        (f"disk per day: reports {report_bytes / 1e6:.2f} MB, tables {table_bytes / 1e6:.2f} MB "
        f"(reports = {report_bytes / table_bytes:.1f}x tables), MLflow "
        f"{_mean(d['bytes_added']['mlflow'] for d in days) / 1e6:.2f} MB; " + ", ".join(
            f"{label} {_mean(d['bytes_added']['reports'] for d in kind) / 1e6:.2f} MB of reports "
            f"({_mean(d['bytes_added']['reports'] for d in kind) / table_bytes:.2f}x tables)"
            for label, kind in (("a quiet day", [d for d in days if not d["failing"]]),
                                ("a failing day", [d for d in days if d["failing"]])) if kind)),
        (f"Evidently imported by the daily runs: {figures['evidently_imported_by_days']}; its page of "
         f"{figures['page_on_demand']['day']} on demand afterwards: {figures['page_on_demand']['seconds']:.2f} s "
         f"(= {figures['page_on_demand']['seconds'] / floor['seconds']:.2f}x the floor, the import included), "
         f"{figures['page_on_demand']['bytes'] / 1e6:.2f} MB"),
        (f"models loaded by the replay process: {days[-1]['models_loaded']} for "
        f"{figures['versions_scored']} versions scored"),
    ]
    if "retraining" in figures:
        lines += [""] + retraining_report(figures["retraining"])
        lines.append(f"peak RSS including the retraining: {figures['peak_rss_with_retraining_mb']:.0f} MB")
    return lines


def retraining_report(figures: dict) -> list[str]:
    one_fit = sum(model["one_fit_seconds"] for model in figures["models"].values())
    fits = sum(model["one_fit_seconds"] * (model["trials"] + 1) for model in figures["models"].values())
    lines = [
        (f"retraining with the configured budget ({figures['budget']}) on a {figures['window_days']}-day window: "
        f"{figures['wall_seconds']:.1f} s"),
        (f"  = {figures['wall_seconds'] / one_fit:.1f}x one fit of each model ({one_fit:.2f} s), "
        f"{figures['wall_seconds'] / fits:.2f}x (trials + refit) fits ({fits:.1f} s), "
        f"{figures['wall_seconds'] / figures['floor_seconds']:.1f}x the training job's no-op twin "
        f"({figures['floor_seconds']:.2f} s)"),
        f"  champion {figures['champion_before']} -> {figures['champion_after']}; checks {figures['checks']}",
        "  steps: " + ", ".join(f"{step} {seconds:.1f}" for step, seconds in
                                sorted(figures["step_seconds"].items(), key=lambda item: -item[1])),
    ]
    for name, model in figures["models"].items():
        lines.append(f"  {name}: {model['trials']} trials; " + ", ".join(
            f"{phase} {seconds:.1f}" for phase, seconds in model["seconds"].items()) + " s (MLflow run tags)")
    lines.append("  by kind of work: " + ", ".join(f"{category} {seconds:.1f}" for category, seconds in
                                                  figures["split"]["by_category"].items()))
    lines.append("  hotspots: " + "; ".join(f"{spot['function']} {spot['seconds']:.1f}"
                                            for spot in figures["hotspots"][:8]))
    return lines


# ------------------------------------------------------------------------------------------------------------ main

PHASES = {"setup": phase_setup, "days": phase_days}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=6, help="days with a champion to replay and profile")
    parser.add_argument("--window-days", type=int, help="days before them (default: the training window)")
    parser.add_argument("--bootstrap-trials", type=int, default=2, help="tuning trials of the first champion")
    parser.add_argument("--skip-retraining", action="store_true")
    parser.add_argument("--floor-repeats", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between stack samples")
    parser.add_argument("--hotspots", type=int, default=15)
    parser.add_argument("--keep", type=Path, help="keep the data folder here (must not exist)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_phase(phase: str, folder: Path, argv: list[str]) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_replay", *argv, "--phase", phase, "--folder", str(folder)]
    completed = subprocess.run(command, check=False, cwd=Path(__file__).resolve().parent.parent)
    if completed.returncode != 0:
        raise RuntimeError(f"phase {phase} failed with exit code {completed.returncode}")
    return json.loads((folder / PHASE_FILE.format(phase=phase)).read_text())


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.phase:
        figures = PHASES[args.phase](args.folder, args)
        (args.folder / PHASE_FILE.format(phase=args.phase)).write_text(json.dumps(figures, indent=2, default=str))
        sys.stdout.flush()
        # delta-rs' runtime threads can abort the interpreter's teardown (see mlops_platform.cli.run).
        os._exit(0)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_replay_"))
    folder.mkdir(parents=True, exist_ok=args.keep is None)
    load = LoadRecorder()
    try:
        with load:
            setup = run_phase("setup", folder, argv)
            figures = run_phase("days", folder, argv)
    finally:
        stop_serving(folder)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print("\n".join(report(setup, figures, args.hotspots)))
    print(f"machine load (1-minute average) during the run: {load.summary()}")
    results = {"machine": platform.node(), "cpus": os.cpu_count(), "load": load.as_dict(), "setup": setup,
               **figures}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str))
    return results


def stop_serving(folder: Path) -> None:
    """Stop the serving process the training job started for this folder."""
    from benchmarks.harness import benchmark_settings
    from mlops_platform.resources.serving import stop_server

    stop_server(benchmark_settings(folder, USECASE).serving_dir)


if __name__ == "__main__":
    main()
