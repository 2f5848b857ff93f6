"""Start-up figures: the CLI, the code location, the serving process and a local deploy, against bare imports.

    python -m benchmarks.bench_startup [--repeats 5] [--heavy-repeats 2] [--usecases 1,3] [--window-days 28] [--bootstrap-trials 2]

Each figure is a fresh process timed from spawn to exit (or to an answer), with that process's own peak RSS
(``wait4``), as the median of ``--repeats`` runs (``--heavy-repeats`` for those that take more than a second or
so); the baselines run in the same way in the same run:

- ``python -c pass`` (the interpreter) and ``python -c 'import dagster'`` (the issue's baseline for start-up);
- ``mlops --help``; ``import mlops_platform.definitions`` (the code location);
- ``dagster definitions validate -w workspace.yaml`` with the first N shipped use cases enabled, flights first
  (``--usecases``; the local environment ships with all three);
- the serving process (``LocalServing.server_command``) from spawn to ``/health`` and to ``/ready`` with the
  deployed endpoints loaded, its peak RSS after 200 requests, against a fresh process that loads the served model
  with MLflow and predicts one row (the model's own floor);
- ``mlops deploy`` when no serving process runs (it starts one) and when one runs with the same versions, and the
  same deploy in a warm process (``deploy_endpoints``) against the serving assets' no-op twin.

A first champion is trained before (not measured): the first ``--window-days`` days backfilled in one run, then
the training job with ``--bootstrap-trials`` trials per model. Figures go to ``benchmarks/results/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
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

from benchmarks.measure import LoadRecorder, median_child, memory_mb, timed_child

RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
USECASE = "flights"
SETUP_FILE = "setup.json"
REQUESTS = 200
READY_TIMEOUT = 300.0

# What a serving process must do at the least: load the served model as MLflow stores it and predict one row.
MODEL_FLOOR = """
import sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_registry_uri(sys.argv[1])
local = mlflow.artifacts.download_artifacts(sys.argv[2])
example = mlflow.models.Model.load(local).load_input_example(local).head(1)
model = mlflow.sklearn.load_model(local)
print(getattr(model, "predict_proba", model.predict)(example))
"""


# ---------------------------------------------------------------------------------------------------------- setup

def phase_setup(folder: Path, args: argparse.Namespace) -> dict:
    """A first champion, served; then the in-process deploy against its no-op twin (this process is warm)."""
    import dagster as dg

    from benchmarks.harness import (
        backfill,
        benchmark_settings,
        land,
        noop_twin,
        open_instance,
        run_seconds,
        train,
    )
    from mlops_platform.defs import build_definitions
    from mlops_platform.defs.serving.assets import deploy_endpoints
    from mlops_platform.defs.serving.keys import serving_keys
    from mlops_platform.ml.gate import CHAMPION
    from mlops_platform.replay import QUIET

    settings = benchmark_settings(folder, USECASE, trials=args.bootstrap_trials, window_days=args.window_days)
    usecase = settings.usecases[USECASE]
    definitions = build_definitions(settings)
    instance = open_instance()
    days = land(settings, USECASE, usecase.partitions.start, args.window_days)
    backfill(definitions, settings, USECASE, instance, days)
    train(definitions, settings, USECASE, instance)

    deploys = []
    for _ in range(args.heavy_repeats):
        clock = time.perf_counter()
        result = deploy_endpoints(usecase, definitions.resources, instance, run_config=QUIET)
        deploys.append(time.perf_counter() - clock)
        if not result.success:
            raise RuntimeError("the in-process deploy failed")
    job_name = "bench_deploy"
    with_job = dg.Definitions.merge(definitions, dg.Definitions(jobs=[dg.define_asset_job(
        job_name, selection=dg.AssetSelection.assets(*serving_keys(usecase)))]))
    twin = noop_twin(with_job, with_job.resolve_job_def(job_name))
    floors = run_seconds(twin, instance, args.repeats)
    mlflow = definitions.resources["mlflow"]
    endpoint, spec = next(iter(usecase.serving.items()))
    model = usecase.models[spec.model]
    return {
        "in_process_deploy_seconds": statistics.median(deploys),
        "deploy_twin_seconds": statistics.median(floors),
        "deploy_steps": len(twin.graph.nodes),
        "tracking_uri": mlflow.tracking_uri,
        "model_uri": f"models:/{model.registered_name}/{mlflow.alias_version(model.registered_name, CHAMPION)}",
        "staging_endpoint": spec.stages.staging.name,
        "endpoint": endpoint,
        "smoke_record": spec.smoke.single,
    }


# -------------------------------------------------------------------------------------------------------- serving

def _get(url: str) -> int:
    import httpx

    try:
        return httpx.get(url, timeout=2.0).status_code
    except httpx.TransportError:
        return 0


def serving_start(folder: Path, setup: dict, repeats: int) -> dict:
    """Spawn the serving process as a deploy does, and time it to ``/health`` and to ``/ready``."""
    import httpx

    from benchmarks.harness import benchmark_settings
    from mlops_platform.resources import serving_target
    from mlops_platform.resources.serving import stop_server

    settings = benchmark_settings(folder, USECASE)
    target = serving_target(settings)
    stop_server(settings.serving_dir)
    runs = []
    for attempt in range(repeats):
        port = _free_port(target.host)
        base = f"http://{target.host}:{port}"
        command = target.model_copy(update={"port": port}).server_command()
        with open(folder / f"server-{attempt}.log", "wb") as log:
            started = time.perf_counter()
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            health = ready = None
            deadline = started + READY_TIMEOUT
            while ready is None and time.perf_counter() < deadline and process.poll() is None:
                if health is None and _get(f"{base}/health") == 200:
                    health = time.perf_counter() - started
                if health is not None and _get(f"{base}/ready") == 200:
                    ready = time.perf_counter() - started
                time.sleep(0.02)
            if ready is None:
                raise RuntimeError(f"the serving process did not get ready (log {folder}/server-{attempt}.log)")
            run = {"health_seconds": health, "ready_seconds": ready, "rss_ready_mb": memory_mb("VmRSS", process.pid)}
            if attempt == repeats - 1:
                url = f"{base}/serving-endpoints/{setup['staging_endpoint']}/invocations"
                body = {"dataframe_records": [setup["smoke_record"]]}
                latencies = []
                with httpx.Client(timeout=30.0) as client:
                    for index in range(REQUESTS):
                        clock = time.perf_counter()
                        answer = client.post(url, json=body, headers={"X-Request-Id": f"bench-{index}"})
                        latencies.append(time.perf_counter() - clock)
                        answer.raise_for_status()
                run["p50_ms"] = statistics.median(latencies) * 1000
                run["peak_rss_mb"] = memory_mb("VmHWM", process.pid)
            runs.append(run)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return {"health_seconds": statistics.median(r["health_seconds"] for r in runs),
            "ready_seconds": statistics.median(r["ready_seconds"] for r in runs),
            "rss_ready_mb": statistics.median(r["rss_ready_mb"] for r in runs),
            "peak_rss_after_requests_mb": runs[-1]["peak_rss_mb"], "requests": REQUESTS,
            "p50_ms": runs[-1]["p50_ms"], "runs": runs}


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------------------------------------ main

def usecase_config(folder: Path, count: int) -> Path:
    """A config folder whose local environment enables the first ``count`` shipped use cases, flights first."""
    import yaml

    from mlops_platform.settings import PROJECT_ROOT

    config = folder / f"config-{count}"
    shutil.copytree(PROJECT_ROOT / "config", config)
    environment = config / "environments" / "local.yaml"
    raw = yaml.safe_load(environment.read_text())
    shipped = [USECASE] + [name for name in raw["usecases"] if name != USECASE]
    if count > len(shipped):
        raise SystemExit(f"--usecases: {count} asked, {len(shipped)} shipped ({', '.join(shipped)})")
    environment.write_text(yaml.safe_dump({**raw, "usecases": shipped[:count]}, sort_keys=False))
    return config


def validate(folder: Path, env: dict[str, str], count: int, repeats: int) -> dict:
    command = [str(BIN / "dagster"), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")]
    runs = []
    for _ in range(repeats):
        run = timed_child(command, {**env, "MLOPS_CONFIG_DIR": str(usecase_config(folder / f"v{len(runs)}", count))})
        if run.returncode != 0:
            errors = [line for line in run.output.splitlines() if re.search(r"\w+Error: ", line)]
            reason = errors[-1] if errors else run.output[-300:]
            return {"usecases": count, "failed": reason.strip()}
        runs.append(run)
    return {"usecases": count, "seconds": statistics.median(r.seconds for r in runs),
            "peak_rss_mb": statistics.median(r.peak_rss_mb for r in runs), "repeats": repeats}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command that takes about a second")
    parser.add_argument("--heavy-repeats", type=int, default=2, help="runs of each command that takes longer")
    parser.add_argument("--usecases", default="1,3", help="use-case counts for `definitions validate`")
    parser.add_argument("--window-days", type=int, default=28, help="days before the first champion")
    parser.add_argument("--bootstrap-trials", type=int, default=2)
    parser.add_argument("--phase", choices=["setup"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def report(figures: dict) -> list[str]:
    base = figures["import_dagster"]
    lines = [(f"baselines: python -c pass {figures['interpreter']['seconds']:.2f} s; python -c 'import dagster' "
             f"{base['seconds']:.2f} s, {base['peak_rss_mb']:.0f} MB"),
             f"{'figure':44} {'seconds':>8} {'x import dagster':>17} {'peak MB':>8}"]

    def row(name: str, seconds: float, peak: float | None = None) -> None:
        peak_text = f"{peak:8.0f}" if peak is not None else f"{'-':>8}"
        lines.append(f"{name:44} {seconds:8.2f} {seconds / base['seconds']:17.2f} {peak_text}")

    row("mlops --help", figures["mlops_help"]["seconds"], figures["mlops_help"]["peak_rss_mb"])
    row("import mlops_platform.definitions", figures["import_code_location"]["seconds"],
        figures["import_code_location"]["peak_rss_mb"])
    for result in figures["validate"]:
        if "failed" in result:
            lines.append(f"{'definitions validate, ' + str(result['usecases']) + ' use case(s)':44} failed: "
                         f"{result['failed'][:120]}")
        else:
            row(f"definitions validate, {result['usecases']} use case(s)", result["seconds"], result["peak_rss_mb"])
    serving = figures["serving"]
    row("serving process: spawn -> /health", serving["health_seconds"])
    row("serving process: spawn -> /ready", serving["ready_seconds"], serving["peak_rss_after_requests_mb"])
    floor = figures["model_floor"]
    row("  floor: fresh process loads model, predicts", floor["seconds"], floor["peak_rss_mb"])
    lines.append(f"  serving ready = {serving['ready_seconds'] / floor['seconds']:.2f}x the model's floor; peak RSS "
                 f"{serving['peak_rss_after_requests_mb']:.0f} MB after {serving['requests']} requests "
                 f"({serving['peak_rss_after_requests_mb'] / floor['peak_rss_mb']:.2f}x the floor's), "
                 f"p50 {serving['p50_ms']:.1f} ms one record")
    row("mlops deploy, no serving process running", figures["deploy_cold"]["seconds"],
        figures["deploy_cold"]["peak_rss_mb"])
    row("mlops deploy, same versions already served", figures["deploy_warm"]["seconds"],
        figures["deploy_warm"]["peak_rss_mb"])
    setup = figures["setup"]
    lines.append(f"deploy in a warm process {setup['in_process_deploy_seconds']:.2f} s = "
                 f"{setup['in_process_deploy_seconds'] / setup['deploy_twin_seconds']:.1f}x its no-op twin "
                 f"({setup['deploy_steps']} steps, {setup['deploy_twin_seconds']:.2f} s)")
    return lines


def measure(folder: Path, settings, env: dict[str, str], args: argparse.Namespace, argv: list[str]) -> dict:
    from mlops_platform.resources.serving import stop_server

    python = sys.executable
    figures = {
        "interpreter": median_child([python, "-c", "pass"], args.repeats),
        "import_dagster": median_child([python, "-c", "import dagster"], args.repeats),
        "mlops_help": median_child([str(BIN / "mlops"), "--help"], args.repeats),
        "import_code_location": median_child([python, "-c", "import mlops_platform.definitions"],
                                             args.heavy_repeats),
        "validate": [validate(folder, env, int(count), args.heavy_repeats) for count in args.usecases.split(",")],
    }
    # Shown as soon as measured: the serving part below takes minutes and may fail on its own.
    print(json.dumps(figures, default=str), flush=True)
    command = [python, "-m", "benchmarks.bench_startup", *argv, "--phase", "setup", "--folder", str(folder)]
    if subprocess.run(command, check=False, cwd=ROOT).returncode != 0:
        raise RuntimeError("setup failed")
    setup = json.loads((folder / SETUP_FILE).read_text())
    figures["setup"] = setup
    figures["serving"] = serving_start(folder, setup, args.heavy_repeats)
    figures["model_floor"] = median_child(
        [python, "-c", MODEL_FLOOR, setup["tracking_uri"], setup["model_uri"]], args.heavy_repeats, env)
    deploy = [str(BIN / "mlops"), "deploy"]
    stop_server(settings.serving_dir)
    figures["deploy_cold"] = median_child(deploy, 1, env)
    figures["deploy_warm"] = median_child(deploy, args.heavy_repeats, env)
    return figures


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.phase:
        figures = phase_setup(args.folder, args)
        (args.folder / SETUP_FILE).write_text(json.dumps(figures, indent=2, default=str))
        sys.stdout.flush()
        # delta-rs' runtime threads can abort the interpreter's teardown (see mlops_platform.cli.run).
        os._exit(0)

    from benchmarks.harness import benchmark_settings
    from mlops_platform.resources.serving import stop_server

    folder = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    settings = benchmark_settings(folder, USECASE)
    env = dict(os.environ)
    try:
        with LoadRecorder() as load:
            figures = measure(folder, settings, env, args, argv)
    finally:
        stop_server(settings.serving_dir)
        shutil.rmtree(folder, ignore_errors=True)
    print("\n".join(report(figures)))
    print(f"machine load (1-minute average) during the run: {load.summary()}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(), "load": load.as_dict(),
                                   **figures}, indent=2, default=str))
    return figures


if __name__ == "__main__":
    main()
