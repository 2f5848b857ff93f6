"""The landing sensor: a landed day is requested once per set of files, and never after gold has it."""

from __future__ import annotations

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import dagster as dg

from mlops_platform.defs import build_definitions
from mlops_platform.landing import landing_file
from mlops_platform.resources.databricks import DatabricksWorkspace
from mlops_platform.resources.landing_zone import LandingZone
from mlops_platform.settings import load_settings
from mlops_platform_tests.conftest import LANDED_DAYS, run_day


def evaluate(definitions, instance) -> list[dg.RunRequest]:
    sensor = definitions.resolve_sensor_def("flights_landing_sensor")
    with dg.build_sensor_context(instance=instance, resources={"landing": definitions.resources["landing"]}) as context:
        return list(sensor(context))


def test_each_landed_day_is_requested_and_the_snapshots_once(landed_settings, definitions):
    requests = evaluate(definitions, dg.DagsterInstance.ephemeral())

    daily = [r for r in requests if r.job_name == "flights_daily"]
    assert [r.partition_key for r in daily] == [day.isoformat() for day in LANDED_DAYS]
    assert [r.job_name for r in requests if r.partition_key is None] == ["flights_snapshot"]


def test_a_day_gold_already_has_is_not_requested_again(landed_settings, definitions):
    instance = dg.DagsterInstance.ephemeral()
    assert run_day(definitions, LANDED_DAYS[0], instance).success

    daily = [r.partition_key for r in evaluate(definitions, instance) if r.job_name == "flights_daily"]

    assert daily == [day.isoformat() for day in LANDED_DAYS[1:]]


def test_run_keys_are_stable_until_a_day_is_landed_again(landed_settings, definitions, flights):
    instance = dg.DagsterInstance.ephemeral()
    first = {r.partition_key: r.run_key for r in evaluate(definitions, instance)}
    assert {r.partition_key: r.run_key for r in evaluate(definitions, instance)} == first

    path = landing_file(landed_settings.landing_dir, "flights", "weather", flights.sources["weather"], LANDED_DAYS[1])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    again = {r.partition_key: r.run_key for r in evaluate(definitions, instance)}

    changed = {key for key in first if first[key] != again[key]}
    assert changed == {LANDED_DAYS[1].isoformat()}


VOLUME = "/Volumes/mlops_prod/platform/data/landing"


class FilesApi(BaseHTTPRequestHandler):
    """The workspace Files API over a local folder standing in for the volume; records the listed directories."""

    folder: ClassVar[Path]
    listed: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path).removeprefix("/api/2.0/fs/directories")
        self.listed.append(path)
        local = self.folder / path.removeprefix(VOLUME).lstrip("/")
        if local.is_dir():
            status, answer = 200, {"contents": [
                {"path": f"{path}/{entry.name}", "name": entry.name, "is_directory": entry.is_dir(),
                 "file_size": entry.stat().st_size, "last_modified": entry.stat().st_mtime_ns // 1_000_000}
                for entry in sorted(local.iterdir())]}
        else:
            status, answer = 404, {"error_code": "NOT_FOUND", "message": f"The directory {path} does not exist."}
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def test_outside_databricks_the_sensor_lists_the_volume_through_the_files_api(landed_settings, definitions):
    prod_landing = build_definitions(load_settings("prod")).resources["landing"]
    assert prod_landing.workspace is not None
    FilesApi.folder, FilesApi.listed = landed_settings.landing_dir, []
    shutil.rmtree(landed_settings.landing_dir / "flights" / "planes")     # a source with nothing landed yet
    server = ThreadingHTTPServer(("127.0.0.1", 0), FilesApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        volume = LandingZone(root=VOLUME, workspace=DatabricksWorkspace(
            host=f"http://127.0.0.1:{server.server_address[1]}", token="dapi-orchestrator"))
        sensor = definitions.resolve_sensor_def("flights_landing_sensor")
        with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(),
                                     resources={"landing": volume}) as context:
            requests = list(sensor(context))
    finally:
        server.shutdown()

    usecase = landed_settings.usecases["flights"]
    assert sorted(FilesApi.listed) == sorted({f"{VOLUME}/flights/{name}" for name in usecase.sources})
    # Every landed day is requested; the reference job waits for the planes snapshot that has not landed.
    assert [(r.job_name, r.partition_key) for r in requests] == [
        ("flights_daily", day.isoformat()) for day in LANDED_DAYS]


def test_files_that_break_the_naming_convention_are_logged_and_never_make_a_day(landed_settings, definitions, flights,
                                                                                 caplog):
    instance = dg.DagsterInstance.ephemeral()
    before = {(r.job_name, r.partition_key): r.run_key for r in evaluate(definitions, instance)}
    weather = landing_file(landed_settings.landing_dir, "flights", "weather", flights.sources["weather"],
                           LANDED_DAYS[1])
    stale = weather.with_name(f"weather_{LANDED_DAYS[1].isoformat()}_old.jsonl")
    weather.rename(stale)                                  # the day's weather now only under a stale name
    planes = landing_file(landed_settings.landing_dir, "flights", "planes", flights.sources["planes"], LANDED_DAYS[2])
    shutil.copy(planes, planes.with_name(f"planes_{LANDED_DAYS[2].isoformat()}_copy.csv"))

    sensor = definitions.resolve_sensor_def("flights_landing_sensor")
    with dg.build_sensor_context(instance=instance, resources={"landing": definitions.resources["landing"]}) as context:
        context.log.addHandler(caplog.handler)
        after = {(r.job_name, r.partition_key): r.run_key for r in sensor(context)}

    expected = {key: run_key for key, run_key in before.items() if key != ("flights_daily", LANDED_DAYS[1].isoformat())}
    assert after == expected                               # the stray planes copy changes no run key either
    assert f"weather: ['{stale.name}'] not read" in caplog.text
    assert f"planes: ['planes_{LANDED_DAYS[2].isoformat()}_copy.csv'] not read" in caplog.text
