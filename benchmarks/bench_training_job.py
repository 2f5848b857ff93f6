"""The whole training job (issue 16.3): two versions of the code run the same job from the same state, alternating,
each against its own same-run baselines, and must decide the same.

    python -m benchmarks.bench_training_job [--before REV] [--rounds 2] [--profile] [--window-days 120]

Setup (not measured): land the training window, run the daily job over it as one ranged run and train a first
champion with 2 trials per model, then keep a copy of the folder. Each measured run restores that copy (the same
training-set version, the same champion, the same next model versions) and runs, in a fresh process, the training
job with the configured budget as the replay runs it (``execute_in_process``), then its baselines in the same
process: its no-op twin (the orchestrator's floor) and one fit of each model's pipeline at the middle of its space.
``--before`` (default ``HEAD``) is the code compared against the working tree, read out of git into a temporary
folder; ``--before ''`` measures the working tree alone.

Per run it records the job's seconds, each step's seconds, the split the model steps record in their MLflow run
(``seconds.*`` tags: tuning, trial logging, refit and test, datasets, log_model, diagnostics), and what the job
decided: each model's best parameters, test metrics, gate verdict and both sides' gate metrics, and the champions
after. Exit status 1 when the two codes decided anything differently. ``--profile`` also writes, for the working
tree's first run, the slowest functions of the job's main thread (cProfile, cumulative) to the results.
Writes ``benchmarks/results/training_job.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "training_job.json"
USECASE = "flights"
WORKING = "working tree"
# What two runs from the same state must agree on; seconds and load may differ.
DECISIONS = ("best_params", "test_metrics", "gate_passed", "gate_candidate", "gate_champion", "champions")
PROFILE_ROWS = 40


def setup(folder: Path, window_days: int | None, trials: int) -> None:
    from benchmarks.harness import backfill, benchmark_settings, land, open_instance, train
    from mlops_platform.defs import build_definitions

    settings = benchmark_settings(folder, USECASE, trials=trials, window_days=window_days)
    usecase = settings.usecases[USECASE]
    definitions = build_definitions(settings)
    instance = open_instance()
    days = land(settings, USECASE, usecase.partitions.start, usecase.training_set.split.window_days)
    backfill(definitions, settings, USECASE, instance, days)
    try:
        train(definitions, settings, USECASE, instance)
    finally:
        from mlops_platform.resources.serving import stop_server

        stop_server(settings.serving_dir)


FOLDER_ENV = "BENCH_TRAINING_JOB_FOLDER"


def launched_training_job():
    """The training job rebuilt from ``FOLDER_ENV`` in any process: what ``dg.reconstructable`` needs for a run
    executed by the job's own executor, as a run the daemon launches is. The configured window only:
    ``--window-days`` does not reach the step processes."""
    from benchmarks.harness import benchmark_settings
    from mlops_platform import names
    from mlops_platform.defs import build_definitions

    settings = benchmark_settings(Path(os.environ[FOLDER_ENV]), USECASE)
    return build_definitions(settings).resolve_job_def(names.training_job(USECASE))


def worker(folder: Path, window_days: int | None, profile: Path | None, launched: bool = False) -> dict:
    """One training job with the configured budget on ``folder``, then its baselines; runs in its own process.

    ``launched``: the run goes through the job's own executor (``dg.execute_job``), as a sensor's run does under
    the daemon, instead of in-process as the replay runs it.
    """
    import cProfile
    import pstats

    import dagster as dg

    from benchmarks.harness import (
        LoadSampler,
        benchmark_settings,
        noop_twin,
        one_fit_seconds,
        open_instance,
        run_seconds,
    )
    from mlops_platform import names
    from mlops_platform.defs import build_definitions, stages
    from mlops_platform.defs.training.assets import read_training_set
    from mlops_platform.features import feature_columns, row_keys
    from mlops_platform.ml.gate import CHAMPION
    from mlops_platform.ml.model_data import model_frame
    from mlops_platform.replay import QUIET
    from mlops_platform.resources.serving import stop_server

    settings = benchmark_settings(folder, USECASE, window_days=window_days)
    usecase = settings.usecases[USECASE]
    definitions = build_definitions(settings)
    instance = open_instance()
    job = definitions.resolve_job_def(names.training_job(USECASE))
    mlflow = definitions.resources["mlflow"]
    load = LoadSampler()
    load.start()
    profiler = cProfile.Profile() if profile else None
    try:
        clock = time.perf_counter()
        if profiler:
            profiler.enable()
        if launched:
            os.environ[FOLDER_ENV] = str(folder)
            result = dg.execute_job(dg.reconstructable(launched_training_job), instance, run_config=QUIET,
                                    raise_on_error=False)
        else:
            result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - clock
        job_load = load.summary()
    finally:
        stop_server(settings.serving_dir)
    figures: dict = {"seconds": seconds, "load": job_load, "success": result.success,
                     "steps": {event.step_key: event.event_specific_data.duration_ms / 1000
                               for event in result.all_events if event.event_type_value == "STEP_SUCCESS"},
                     "models": {}}
    client = mlflow.client()
    for name, config in usecase.models.items():
        key = stages.model_key(usecase, name)
        metadata = {k: value.value for event in result.get_asset_materialization_events()
                    if event.asset_key == key for k, value in event.materialization.metadata.items()}
        run = client.get_run(metadata["mlflow_run_id"])
        check = next(e for e in result.get_asset_check_evaluations() if e.asset_key == key)
        figures["models"][name] = {
            "best_params": metadata["best_params"],
            "test_metrics": {k: v for k, v in metadata.items() if k.startswith("test_")},
            "gate_passed": check.passed,
            "gate_candidate": check.metadata["candidate_metrics"].value,
            "gate_champion": check.metadata["champion_metrics"].value,
            "train_split": {k.removeprefix("seconds."): float(v) for k, v in run.data.tags.items()
                            if k.startswith("seconds.")},
            "champions": mlflow.alias_version(config.registered_name, CHAMPION),
        }
    figures["floor_seconds"] = statistics.median(run_seconds(noop_twin(definitions, job), instance, 3))
    table, _ = read_training_set(definitions.resources["warehouse"], usecase)
    features = feature_columns(usecase)
    figures["one_fit_seconds"] = {
        name: one_fit_seconds(config, model_frame(table, config, features, row_keys(usecase)), features)
        for name, config in usecase.models.items()}
    load.stop()
    if profiler:
        stats = pstats.Stats(profiler)
        rows = sorted(stats.stats.items(), key=lambda item: -item[1][3])[:PROFILE_ROWS]
        figures["profile"] = [{"function": f"{Path(file).name}:{line}:{function}", "cumulative": round(cum, 2),
                               "own": round(own, 2), "calls": calls}
                              for (file, line, function), (_, calls, own, cum, _) in rows]
        stats.dump_stats(str(profile))
    return figures


def source_tree(rev: str, into: Path) -> Path:
    """The project at git revision ``rev``, written out under ``into`` (code and config, no history)."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_once(code: Path, folder: Path, base: Path, window_days: int | None, profile: Path | None,
             launched: bool = False) -> dict:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(base, folder, symlinks=True)
    out = folder.parent / "figures.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(folder), "--out", str(out)]
    if window_days:
        command += ["--window-days", str(window_days)]
    if profile:
        command += ["--profile-to", str(profile)]
    if launched:
        command += ["--launched"]
    # The code under test first on the path: its mlops_platform, its config and its benchmarks.harness.
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(command, check=True, env=env, cwd=code)
    return json.loads(out.read_text())


def same(runs: list[dict], reference: dict) -> dict[str, bool]:
    return {what: all(run["models"][name][what] == reference["models"][name][what]
                      for run in runs for name in reference["models"]) for what in DECISIONS}


def report(figures: dict) -> list[str]:
    lines = []
    for label, runs in figures["runs"].items():
        for index, run in enumerate(runs):
            fits = sum(run["one_fit_seconds"].values())
            lines.append(f"{label} #{index}: job {run['seconds']:.1f} s = {run['seconds'] / run['floor_seconds']:.0f}x "
                         f"its no-op twin ({run['floor_seconds']:.2f} s) = {run['seconds'] / fits:.1f}x one fit of "
                         f"each model ({fits:.1f} s), load {run['load']['mean']:.1f} "
                         f"({run['load']['min']:.1f}-{run['load']['max']:.1f})")
            lines.append("    steps: " + ", ".join(f"{step} {value:.1f}" for step, value in
                                                     sorted(run["steps"].items(), key=lambda item: -item[1])))
            for name, model in run["models"].items():
                lines.append(f"    {name}: " + ", ".join(f"{part} {value:.1f}" for part, value in
                                                        model["train_split"].items())
                             + f"; gate {'passed' if model['gate_passed'] else 'failed'}")
    for label, verdict in figures.get("same_decisions", {}).items():
        lines.append(f"{label} vs {WORKING}: " + ", ".join(f"{what} {'same' if equal else 'DIFFERENT'}"
                                                           for what, equal in verdict.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="HEAD", help="git revision compared against the working tree")
    parser.add_argument("--after", help="a git revision measured instead of the working tree")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window-days", type=int)
    parser.add_argument("--bootstrap-trials", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--launched", action="store_true",
                        help="run the job through its own executor, as the daemon does (default: in-process)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its setup is reusable)")
    parser.add_argument("--scratch", type=Path, help="a kept folder: its setup is reused, and it is kept")
    parser.add_argument("--setup-in", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.setup_in:
        setup(args.setup_in, args.window_days, args.bootstrap_trials)
        return 0
    if args.worker:
        args.out.write_text(json.dumps(worker(args.worker, args.window_days, args.profile_to, args.launched), default=str))
        return 0

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bench_training_job_"))
    try:
        codes = {WORKING: ROOT if not args.after else source_tree(args.after, scratch / "after")}
        if args.before:
            codes = {f"before ({args.before})": source_tree(args.before, scratch / "before"), **codes}
        base, folder = scratch / "base", scratch / "run" / "folder"
        if not base.exists():
            print(f"setup in {base} ...", flush=True)
            command = [sys.executable, str(Path(__file__).resolve()), "--setup-in", str(folder),
                       "--bootstrap-trials", str(args.bootstrap_trials)]
            subprocess.run(command + (["--window-days", str(args.window_days)] if args.window_days else []),
                           check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"})
            shutil.copytree(folder, base, symlinks=True)
        figures: dict = {"runs": {label: [] for label in codes}}
        for round_number in range(args.rounds):
            # Each round reverses the order, so neither code always runs into what the other left behind.
            for label, code in list(codes.items())[::-1 if round_number % 2 else 1]:
                profile = (scratch / "job.prof" if args.profile and label == WORKING and round_number == 0
                           else None)
                print(f"round {round_number}: {label} ...", flush=True)
                figures["runs"][label].append(run_once(code, folder, base, args.window_days, profile,
                                                             args.launched))
                RESULTS.write_text(json.dumps(figures, indent=2, default=str))
        reference = figures["runs"][WORKING][0]
        figures["same_decisions"] = {label: same(runs, reference) for label, runs in figures["runs"].items()}
        RESULTS.write_text(json.dumps(figures, indent=2, default=str))
        print("\n".join(report(figures)))
    finally:
        if args.keep or args.scratch:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(all(v.values()) for v in figures["same_decisions"].values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
