"""One-record scoring latency and throughput: in-process, our serving process and ``mlflow models serve``.

Registers one model (a ColumnTransformer with a scaler and two one-hot encoders, then a logistic regression
that answers delay probabilities; the same shape as the flights use case) in a temporary MLflow registry,
publishes an online store of 10,000 flights and deploys an endpoint on it. Then, in one run:

- in-process floors: the MLflow pyfunc ``predict`` and the pipeline's ``predict_proba`` on a one-row DataFrame
  (what a user calls), and the compiled scorer our server uses (its own floor);
- our server (``python -m mlops_platform.serving``: online lookup, traffic routing, inference log to Delta all
  on), and the same server with ``--no-compile`` (the pipeline on a DataFrame per request);
- ``mlflow models serve -m models:/... --env-manager local`` (uvicorn, one worker), which gets every feature
  in the request since it has no online store.

Each server gets the same number of single-record requests at concurrency 1, 8 and 32 from an asyncio client
with keep-alive connections; client time is in every figure alike. Targets take turns in several rounds, so a
busy spell of the machine falls on all of them alike. The load average is printed too: on a shared 2-core
machine, quote the ratios, not the absolute times.

    .venv/bin/python benchmarks/bench_serving.py
    .venv/bin/python benchmarks/bench_serving.py --requests 500 --concurrency 1 8 --skip-dataframe
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import pandas as pd

MODEL = "bench_flights_delay"
FEATURES = ["distance", "dep_hour", "carrier", "origin", "temp", "wind_speed"]
REQUEST_FIELDS = ["distance", "dep_hour", "carrier"]
STORE_FEATURES = ["origin", "temp", "wind_speed"]
FALLBACK = {"origin": "EWR", "temp": 55.0, "wind_speed": 10.0}
CARRIERS = ["AA", "B6", "DL", "UA", "WN", "EV"]
ORIGINS = ["EWR", "JFK", "LGA"]
ROOT = Path(__file__).resolve().parent.parent
FLOORS = ("in-process sklearn (DataFrame)", "in-process pyfunc.predict", "in-process compiled scorer")


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


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    path: str
    ready_path: str
    log: Path
    bodies: list[bytes]


def flights(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "flight_id": np.arange(1, rows + 1),
        "distance": rng.uniform(100, 2500, rows).round(1),
        "dep_hour": rng.integers(5, 23, rows),
        "carrier": rng.choice(CARRIERS, rows),
        "origin": rng.choice(ORIGINS, rows),
        "temp": rng.normal(55, 15, rows).round(1),
        "wind_speed": rng.uniform(0, 25, rows).round(1),
    })


def register_model(workdir: Path) -> str:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    train = flights(5_000, seed=0)
    rng = np.random.default_rng(1)
    logit = 0.15 * (train.dep_hour - 14) + 0.08 * (train.wind_speed - 12) - 0.03 * (train.temp - 55) \
        + rng.normal(0, 1, len(train))
    pipeline = Pipeline([
        ("columns", ColumnTransformer([
            ("numeric", StandardScaler(), ["distance", "dep_hour", "temp", "wind_speed"]),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["carrier", "origin"]),
        ])),
        ("classifier", LogisticRegression(max_iter=500)),
    ]).fit(train[FEATURES], (logit > 0).astype(int))
    experiment = mlflow.create_experiment("bench-serving", artifact_location=(workdir / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        mlflow.sklearn.log_model(
            pipeline, name="model", registered_model_name=MODEL, pyfunc_predict_fn="predict_proba",
            signature=mlflow.models.infer_signature(train[FEATURES].head(20)),
            # Named requirements skip their inference, a subprocess that reloads the model.
            pip_requirements=["scikit-learn"],
        )
    MlflowClient().set_registered_model_alias(MODEL, "champion", "1")
    return tracking_uri


def deploy(workdir: Path, store: pd.DataFrame, tracking_uri: str) -> Any:
    import pyarrow as pa

    from mlops_platform.serving import (
        EndpointConfig,
        ServedModel,
        deploy_endpoint_config,
        publish_online_store,
    )

    serving_dir = workdir / "serving"
    snapshot = pa.Table.from_pandas(store[["flight_id", *STORE_FEATURES]], preserve_index=False)
    store_path = publish_online_store(serving_dir / "stores" / "flights.arrow", snapshot)
    return deploy_endpoint_config(serving_dir, EndpointConfig(
        name="flights",
        served_models=[ServedModel(name="champion", model_uri=f"models:/{MODEL}@champion",
                                   traffic_percent=100)],
        keys=["flight_id"],
        online_store_path=str(store_path),
        feature_columns=FEATURES,
        request_fields=REQUEST_FIELDS,
        fallback=FALLBACK,
        max_records=100,
    ), tracking_uri=tracking_uri)


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **env}, cwd=ROOT)


def wait_until_up(process: subprocess.Popen, port: int, path: str, log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {process.returncode}:\n"
                             f"{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} not up after {timeout} s:\n{log.read_text()[-3000:]}")


def post(port: int, path: str, body: bytes) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = json.loads(response.read())
    if response.status != 200:
        raise SystemExit(f"POST {path} on port {port} answered {response.status}: {payload}")
    return payload


async def load(port: int, path: str, bodies: list[bytes], concurrency: int,
               count: int) -> tuple[list[float], float, int]:
    """Send ``count`` requests over ``concurrency`` keep-alive connections; per-request latency in seconds."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: "
    requests = [head.encode() + str(len(b)).encode() + b"\r\n\r\n" + b for b in bodies]
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (i := next(counter)) < count:
                t0 = time.perf_counter()
                writer.write(requests[i % len(requests)])
                header = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in header.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if not header.startswith(b"HTTP/1.1 200"):
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, errors


def measure(servers: dict[str, Server], floors: dict[str, tuple[Any, list[Any]]], levels: list[int],
            count: int, rounds: int) -> dict[tuple[str, int], Result]:
    """Every target at every level, in ``rounds`` interleaved slices so that a busy spell of the machine
    falls on all of them alike rather than on whichever ran then."""
    results: dict[tuple[str, int], Result] = {}
    for server in servers.values():
        # Warm-up: connections, caches, lazy imports.
        asyncio.run(load(server.port, server.path, server.bodies, 4, 300))
    share = max(1, count // rounds)
    for round_ in range(rounds):
        for concurrency in levels:
            if concurrency == 1:
                for label, (call, inputs) in floors.items():
                    # The DataFrame floors take milliseconds a call: a tenth as many calls estimate them well.
                    calls = share if label == FLOORS[2] else max(1, share // 10)
                    results.setdefault((label, 1), Result(label, 1)).add(*time_calls(call, inputs, calls))
            for label, server in servers.items():
                outcome = asyncio.run(load(server.port, server.path, server.bodies, concurrency, share))
                results.setdefault((label, concurrency), Result(label, concurrency)).add(*outcome)
        print(f"  round {round_ + 1}/{rounds} done", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000,
                        help="requests per server and concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved slices per target, to spread the machine's busy spells evenly")
    parser.add_argument("--store-rows", type=int, default=10_000)
    parser.add_argument("--skip-dataframe", action="store_true", help="skip our server with --no-compile")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    processes: list[subprocess.Popen] = []
    try:
        print(f"workdir {workdir}", flush=True)
        tracking_uri = register_model(workdir)
        store = flights(args.store_rows, seed=2)
        config = deploy(workdir, store, tracking_uri)
        model_path = config.served_models[0].model_path

        # Requests: random flights, 2% of them unknown to the store (they take the fallback path).
        rng = np.random.default_rng(3)
        asked = flights(args.store_rows, seed=4).sample(2000, random_state=5).reset_index(drop=True)
        asked["flight_id"] = rng.integers(1, args.store_rows + 1, len(asked))
        asked.loc[rng.random(len(asked)) < 0.02, "flight_id"] = args.store_rows + 1_000_000
        looked_up = asked[["flight_id", *REQUEST_FIELDS]].merge(store[["flight_id", *STORE_FEATURES]],
                                                                on="flight_id", how="left")
        looked_up = looked_up.fillna(FALLBACK)
        ours_bodies = [json.dumps({"dataframe_records": [r]}).encode()
                       for r in asked[["flight_id", *REQUEST_FIELDS]].to_dict(orient="records")]
        full_bodies = [json.dumps({"dataframe_records": [r]}).encode()
                       for r in looked_up[FEATURES].to_dict(orient="records")]

        print("starting servers", flush=True)
        # mlflow models serve runs `uvicorn` from PATH: put this interpreter's scripts first.
        serve_env = {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri,
                     "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        servers: dict[str, Server] = {}
        variants = [("ours", [])]
        if not args.skip_dataframe:
            variants.append(("ours, --no-compile", ["--no-compile"]))
        for label, extra in variants:
            port = free_port()
            log = workdir / f"ours-{port}.log"
            processes.append(start([sys.executable, "-m", "mlops_platform.serving", "--serving-dir",
                                    str(workdir / "serving"), "--host", "127.0.0.1", "--port", str(port),
                                    "--warehouse-root", str(workdir / f"warehouse-{port}"),
                                    "--catalog", "bench", "--log-level", "warning", *extra], log, {}))
            servers[label] = Server(processes[-1], port, "/serving-endpoints/flights/invocations", "/ready",
                                    log, ours_bodies)
        port = free_port()
        log = workdir / f"mlflow-{port}.log"
        processes.append(start([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                                f"models:/{MODEL}/1", "--env-manager", "local", "-h", "127.0.0.1",
                                "-p", str(port)], log, serve_env))
        servers["mlflow models serve"] = Server(processes[-1], port, "/invocations", "/ping", log,
                                                full_bodies)

        for server in servers.values():
            wait_until_up(server.process, server.port, server.ready_path, server.log)
        # Floors are timed once the servers idle, so that their start-up does not slow the floors down.
        import mlflow.pyfunc
        import mlflow.sklearn

        from mlops_platform.serving.scoring import load_scorer

        pyfunc = mlflow.pyfunc.load_model(model_path)
        sklearn_model = mlflow.sklearn.load_model(model_path)
        scorer = load_scorer(model_path, FEATURES)
        frames = [looked_up.iloc[[i]][FEATURES] for i in range(200)]
        rows = [tuple(r) for r in looked_up[FEATURES].astype(object).itertuples(index=False)]
        floors = {
            FLOORS[0]: (sklearn_model.predict_proba, frames),
            FLOORS[1]: (pyfunc.predict, frames),
            FLOORS[2]: (lambda row: scorer([row]), rows),
        }

        # The answers must agree before their speed is worth comparing.
        expected = sklearn_model.predict_proba(looked_up[FEATURES].head(20))
        for label, server in servers.items():
            got = [post(server.port, server.path, server.bodies[i])["predictions"][0] for i in range(20)]
            difference = float(np.abs(np.asarray(got) - expected).max())
            print(f"  {label:<28} max |prediction - in-process| over 20 requests: {difference:.2e}")
            if difference > 1e-9:
                raise SystemExit(f"{label} disagrees with the in-process model")

        print(f"measuring {args.rounds} rounds", flush=True)
        results = measure(servers, floors, args.concurrency, args.requests, args.rounds)
        connection = http.client.HTTPConnection("127.0.0.1", servers["ours"].port, timeout=10)
        connection.request("GET", "/serving-endpoints/flights")
        logged = json.loads(connection.getresponse().read())["inference_log"]
        # What our process itself spends per request (parse, lookup, score, encode), from its inference table:
        # the rest of the client-side figure is HTTP, the client, and waiting for a CPU.
        from mlops_platform.resources.warehouse import DeltaWarehouse

        deadline = time.monotonic() + 10
        while logged["queued"] and time.monotonic() < deadline:
            time.sleep(0.5)
            connection.request("GET", "/serving-endpoints/flights")
            logged = json.loads(connection.getresponse().read())["inference_log"]
        warehouse = DeltaWarehouse(root=str(workdir / f"warehouse-{servers['ours'].port}"), catalog="bench")
        in_server = warehouse.read("monitoring", "inference_log", columns=["latency_ms"]).column(0).to_numpy()

        print()
        print(f"{'target':<32}{'conc':>5}{'n':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>9}"
              f"{'errors':>8}")
        order = list(dict.fromkeys(target for target, _ in results))
        for r in sorted(results.values(), key=lambda r: (order.index(r.target), r.concurrency)):
            print(f"{r.target:<32}{r.concurrency:>5}{len(r.latencies):>7}{r.percentile(50):>9.3f}"
                  f"{r.percentile(95):>9.3f}{r.percentile(99):>9.3f}{r.throughput:>9.0f}{r.errors:>8}")

        def pick(target: str, concurrency: int = 1) -> Result:
            return results[(target, concurrency)]

        ours, theirs = pick("ours"), pick("mlflow models serve")
        print()
        ratio = theirs.percentile(50) / ours.percentile(50)
        print(f"p50 mlflow models serve / ours at c=1:          {ratio:6.1f}x  (target >= 4x)")
        for floor in FLOORS:
            overhead = ours.percentile(99) - pick(floor).percentile(99)
            print(f"p99 ours - {floor + ' p99':<37} {overhead:+7.3f} ms"
                  + ("  (target < 1 ms)" if floor == FLOORS[0] else ""))
        for level in args.concurrency[1:]:
            print(f"throughput ours / mlflow at c={level:<3}                  "
                  f"{pick('ours', level).throughput / pick('mlflow models serve', level).throughput:6.1f}x")
        print(f"inside our server, all requests: p50 {np.percentile(in_server, 50):.3f} ms, "
              f"p99 {np.percentile(in_server, 99):.3f} ms")
        print(f"inference log of ours: written {logged['written']}, queued {logged['queued']}, "
              f"dropped {logged['dropped']}, write failures {logged['write_failures']}")
        print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (2 cores)")
    finally:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
