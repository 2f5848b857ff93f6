"""A retraining with the configured budget on the flights window: the default tuning against tuning one trial at a
time (as before issue 16), with the gate decision of each, and the training job as the retraining sensor runs it.

    python -m benchmarks.bench_retraining [--window-days 120] [--bootstrap-trials 2] [--fast] [--skip-job]

Setup (not measured): land the training window, run the daily job over it as one ranged run, train a first champion
with a small budget (as ``mlops run`` does after its bootstrap days). Then, in one process, on the same training-set
version and against the same champion, for each model:

- sequential: ``train_model`` tuning one trial at a time, refitting after tuning (``parallel_trials: 1``), then
  the champion gate;
- default: ``train_model`` with the configured tuning (Hyperopt's random start-up trials fitted together, the best
  trial so far refit on a spare thread), then the same gate;
- fast (``--fast``): the opt-in fast tuning (Optuna, two trials at a time, early stopping), then the same gate;
- baselines measured in the same run: one fit of each model's pipeline at the middle of its space, and the
  training job's no-op twin;
- the training job itself (training set, both models, gates, promotion, serving) with the configured budget.

A retraining's seconds are its training plus its gate. It prints whether the default and the sequential tuning
found the same best parameters, the same test metrics and the same gate verdict (exit status 1 when not: a default
that changes a gate decision must not ship), and the load average over the run. Writes
``benchmarks/results/retraining.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

RESULTS = Path(__file__).resolve().parent / "results" / "retraining.json"
USECASE = "flights"
DEFAULT, SEQUENTIAL, FAST = "default", "sequential", "fast"


def sequential_config(config):
    """The model's configuration tuned one trial at a time, the refit after tuning: how the default tuned until
    issue 16."""
    return config.model_copy(update={"tuning": config.tuning.model_copy(update={"parallel_trials": 1})})


def fast_config(config):
    """The opt-in fast tuning: Optuna, two trials at a time, early stopping on the validation split."""
    tuning = config.tuning.model_copy(update={"library": "optuna", "parallel_trials": 2, "early_stopping": True})
    return config.model_copy(update={"tuning": tuning})


def candidate(usecase, name: str, config, frame, features, mlflow, lineage, load) -> dict:
    from mlops_platform import names
    from mlops_platform.ml.gate import evaluate_against_champion
    from mlops_platform.ml.model_data import held_out
    from mlops_platform.ml.training import train_model

    experiment_id = mlflow.experiment_id(names.experiment(usecase.name, name))
    load.mark()
    clock = time.perf_counter()
    outcome = train_model(config, frame, features, experiment_id=experiment_id, lineage=lineage,
                          run_name=f"bench-{name}")
    training = time.perf_counter() - clock
    decision = evaluate_against_champion(mlflow.client(), config, outcome.registered_version, held_out(frame),
                                         experiment_id=experiment_id)
    seconds = time.perf_counter() - clock
    return {"seconds": seconds, "training_seconds": training, "gate_seconds": seconds - training,
            "load": load.since_mark(), "steps": outcome.seconds, "trials": outcome.trials,
            "best_params": outcome.best_params, "version": outcome.registered_version,
            "test_metrics": {k: v for k, v in outcome.metrics.items() if k.startswith("test_")},
            "gate_passed": decision.passed, "champion": decision.champion_version, "failures": list(decision.failures),
            "gate_metrics": {"candidate": decision.candidate_metrics, "champion": decision.champion_metrics}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window-days", type=int, help="days before the retraining (default: the training window)")
    parser.add_argument("--bootstrap-trials", type=int, default=2)
    parser.add_argument("--floor-repeats", type=int, default=3)
    parser.add_argument("--fast", action="store_true", help="measure the opt-in fast tuning too")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--skip-job", action="store_true", help="measure the tunings only, not the job")
    args = parser.parse_args(argv)

    from benchmarks.harness import (
        LoadSampler,
        backfill,
        benchmark_settings,
        land,
        one_fit_seconds,
        open_instance,
        train,
    )
    from mlops_platform import names
    from mlops_platform.defs import build_definitions
    from mlops_platform.defs.training.assets import read_training_set
    from mlops_platform.features import feature_columns, row_keys
    from mlops_platform.ml.model_data import TrainingLineage, model_frame

    folder = Path(tempfile.mkdtemp(prefix="bench_retraining_"))
    settings = benchmark_settings(folder, USECASE, trials=args.bootstrap_trials)
    load = LoadSampler()
    try:
        usecase = settings.usecases[USECASE]
        window = args.window_days or usecase.training_set.split.window_days
        definitions = build_definitions(settings)
        instance = open_instance()
        print(f"setup: {window} days landed, processed and a first champion ({args.bootstrap_trials} trials) ...",
              flush=True)
        days = land(settings, USECASE, usecase.partitions.start, window)
        backfill(definitions, settings, USECASE, instance, days)
        train(definitions, settings, USECASE, instance)

        configured = load_configured_usecase(settings)
        resources = definitions.resources
        warehouse, mlflow = resources["warehouse"], resources["mlflow"]
        table, version = read_training_set(warehouse, usecase)
        features = feature_columns(usecase)
        where = names.training_set_table(usecase.name)
        lineage = TrainingLineage(table=warehouse.full_name(*where), path=warehouse.location(*where), version=version)
        figures: dict = {"window_days": window, "training_set_rows": table.num_rows, "models": {}}
        load.start()
        for name, config in configured.models.items():
            frame = model_frame(table, config, features, row_keys(usecase))
            runs = {SEQUENTIAL: sequential_config(config), DEFAULT: config} | (
                {FAST: fast_config(config)} if args.fast else {})
            model: dict = {"budget": config.tuning.model_dump(exclude={"space"}),
                           "one_fit_seconds": one_fit_seconds(config, frame, features)}
            for when, tuned in runs.items():
                print(f"{name}: {when} ({tuned.tuning.library}, {tuned.tuning.parallel_trials} at a time, "
                      f"early stopping {tuned.tuning.early_stopping}) ...", flush=True)
                model[when] = candidate(usecase, name, tuned, frame, features, mlflow, lineage, load)
            figures["models"][name] = model
            # Kept as it is measured: a long run interrupted later still leaves these figures.
            write(figures)
        if not args.skip_job:
            figures |= measure_job(settings, configured, instance, mlflow, args.floor_repeats, load)
    finally:
        load.stop()
        from mlops_platform.resources.serving import stop_server

        stop_server(settings.serving_dir)
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    figures["load_average"] = load.summary()
    return finish(figures)


def measure_job(settings, configured, instance, mlflow, floor_repeats: int, load) -> dict:
    """The training job as the sensor runs it, with the configured budget (the bootstrap settings only shrank
    trials), and its no-op twin on the same instance."""
    from benchmarks.harness import noop_twin, run_seconds
    from mlops_platform import names
    from mlops_platform.defs import build_definitions
    from mlops_platform.ml.gate import CHAMPION
    from mlops_platform.replay import QUIET

    definitions = build_definitions(settings.model_copy(update={"usecases": {**settings.usecases,
                                                                             USECASE: configured}}))
    job = definitions.resolve_job_def(names.training_job(USECASE))

    def champions() -> dict:
        return {n: mlflow.alias_version(c.registered_name, CHAMPION) for n, c in configured.models.items()}

    before = champions()
    load.mark()
    clock = time.perf_counter()
    # A gate that keeps the champion fails its blocking check, and with it the run: a decision, not an error.
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
    figures = {"job_seconds": time.perf_counter() - clock, "job_load": load.since_mark(),
               "job_success": result.success,
               "job_steps": {event.step_key: event.event_specific_data.duration_ms / 1000
                             for event in result.all_events if event.event_type_value == "STEP_SUCCESS"},
               "job_checks": {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
                              for e in result.get_asset_check_evaluations()},
               "job_champions": {"before": before, "after": champions()}}
    figures["job_floor_seconds"] = statistics.median(run_seconds(noop_twin(definitions, job), instance,
                                                                 floor_repeats))
    return figures


def write(figures: dict) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2, default=str))


def same_decisions(figures: dict) -> dict[str, dict[str, bool]]:
    """For each model, whether the default tuning found what tuning one trial at a time found."""
    return {name: {"best_params": model[DEFAULT]["best_params"] == model[SEQUENTIAL]["best_params"],
                   "test_metrics": model[DEFAULT]["test_metrics"] == model[SEQUENTIAL]["test_metrics"],
                   "gate": model[DEFAULT]["gate_passed"] == model[SEQUENTIAL]["gate_passed"]}
            for name, model in figures["models"].items()}


def finish(figures: dict) -> dict:
    figures["same_decisions"] = same_decisions(figures)
    write(figures)
    print("\n".join(report(figures)))
    differing = [name for name, same in figures["same_decisions"].items() if not all(same.values())]
    if differing:
        print(f"the default tuning decided differently from one trial at a time for {differing}: it must not ship")
    return figures


def load_configured_usecase(settings):
    """The use case with its configured tuning budget (``benchmark_settings`` shrank it for the first champion)."""
    from mlops_platform.settings import load_settings

    return load_settings("local").usecases[USECASE].model_copy(
        update={"training_set": settings.usecases[USECASE].training_set})


def report(figures: dict) -> list[str]:
    lines = [f"\nretraining on a {figures['window_days']}-day window ({figures['training_set_rows']:,} rows)",
             (f"  {'model':14} {'tuning':10} {'seconds':>8} {'train':>6} {'gate':>6} {'x one fit':>9} {'load':>5}"
              f" {'trials':>6}  gate     test metric")]
    totals: dict[str, float] = {}
    fits = 0.0
    for name, model in figures["models"].items():
        fits += model["one_fit_seconds"]
        for when in (SEQUENTIAL, DEFAULT, FAST):
            if when not in model:
                continue
            run = model[when]
            totals[when] = totals.get(when, 0.0) + run["seconds"]
            metric = next(iter(run["test_metrics"].items()))
            lines.append(f"  {name:14} {when:10} {run['seconds']:8.1f} {run['training_seconds']:6.1f}"
                         f" {run['gate_seconds']:6.1f} {run['seconds'] / model['one_fit_seconds']:9.1f}"
                         f" {run['load']['mean']:5.1f} {run['trials']:6}  {'passed' if run['gate_passed'] else 'failed':7}"
                         f"  {metric[0]} {metric[1]:.4f}")
    default = totals[DEFAULT]
    lines.append(f"a retraining (both models, training + gate), default: {default:.1f} s = {default / fits:.1f}x one fit "
                 f"of each model ({fits:.1f} s) = {default / totals[SEQUENTIAL]:.2f}x one trial at a time "
                 f"({totals[SEQUENTIAL]:.1f} s)" + (f"; fast (opt-in) {totals[FAST]:.1f} s" if FAST in totals else ""))
    if "job_seconds" in figures:
        lines.append(f"the training job (configured budget): {figures['job_seconds']:.1f} s = "
                     f"{figures['job_seconds'] / figures['job_floor_seconds']:.0f}x its no-op twin "
                     f"({figures['job_floor_seconds']:.2f} s), load {figures['job_load']['mean']:.1f}; "
                     f"default retraining = {default / figures['job_floor_seconds']:.0f}x the twin; champions "
                     f"{figures['job_champions']['before']} -> {figures['job_champions']['after']}")
    for name, same in figures["same_decisions"].items():
        lines.append(f"default vs one at a time, {name}: " + ", ".join(
            f"{what} {'same' if equal else 'DIFFERENT'}" for what, equal in same.items()))
    average = figures.get("load_average")
    if average:
        lines.append(f"load average (1 min) over the measured part: mean {average['mean']:.1f}, min {average['min']:.1f},"
                     f" max {average['max']:.1f} on {os.cpu_count()} CPUs")
    return lines


if __name__ == "__main__":
    outcome = main(sys.argv[1:])
    sys.exit(0 if all(all(same.values()) for same in outcome["same_decisions"].values()) else 1)
