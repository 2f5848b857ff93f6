"""The closed loop under a real Dagster daemon: drifting days land, the sensors run them, drift retrains the model.

A champion is trained on January in-process on the test's own instance, and the tables of the months up to the
end of June are built in one backfill run. Then the real `dagster-daemon` starts on that instance and the last
days of June land: the landing sensor runs each day (tables, features, the champion's predictions, monitoring),
summer weather fails `feature_drift` against the January reference, the retraining sensor launches the training
run, and the gate decides whether `champion` moves.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_platform import names
from mlops_platform.defs import build_definitions
from mlops_platform.defs.monitoring.assets import FEATURE_DRIFT, QUALITY_DROP
from mlops_platform.defs.monitoring.sensors import TRIGGER_TAG
from mlops_platform.defs.registry.assets import BEATS_CHAMPION
from mlops_platform.defs.stages import champion_key, model_key, monitoring_key
from mlops_platform.landing import day_range, land_days
from mlops_platform.ml.gate import CHAMPION
from mlops_platform.polling import poll_until
from mlops_platform.resources.serving import stop_server
from mlops_platform.settings import (
    CONFIG_DIR_ENV,
    DATA_DIR_ENV,
    PROJECT_ROOT,
    SERVING_PORT_ENV,
    load_settings,
)
from mlops_platform_tests.conftest import QUIET

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("daemon"), pytest.mark.timeout(1500)]

JANUARY = day_range(dt.date(2013, 1, 1), 24)
LANDED_LIVE = day_range(dt.date(2013, 6, 29), 2)
# The tables the retraining reads: its 28-day window and the 28 days the window's features look back on.
SPRING = day_range(LANDED_LIVE[0] - dt.timedelta(days=56), 56)
DEADLINE_SECONDS = 900
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
INSTANCE_YAML = """
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 1     # days run in the order they landed, as the debounce rule expects
"""


def _small_config(target: Path) -> Path:
    """The project's configuration with a two-trial search and a 28-day training window split 20/4/4, so each model
    trains in seconds (the daemon's retraining on the default 120 days took 8.5 minutes of this test under load)."""
    shutil.copytree(PROJECT_ROOT / "config", target)
    path = target / "usecases" / "flights.yaml"
    usecase = yaml.safe_load(path.read_text())
    for model in usecase["models"].values():
        model["tuning"].update(max_trials=2, space={"learning_rate": [0.05, 0.2], "max_iter": [40, 60]})
    usecase["training_set"]["split"].update(window_days=28, validation_days=4, test_days=4)
    usecase["monitoring"].pop("alerts", None)
    path.write_text(yaml.safe_dump(usecase, sort_keys=False))
    return target


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "mlops_platform.definitions", "working_directory": str(PROJECT_ROOT)}}]}))
    variables = {
        "DAGSTER_HOME": str(home),
        DATA_DIR_ENV: str(tmp_path / "data"),
        CONFIG_DIR_ENV: str(_small_config(tmp_path / "config")),
        SERVING_PORT_ENV: "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def _daemon(tmp_path: Path, environment: dict[str, str]) -> subprocess.Popen:
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - handed to the process, closed with it
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(tmp_path / "workspace.yaml")],
        env={**os.environ, **environment}, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )


def _retraining_run(instance: dg.DagsterInstance, training_job: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(job_name=training_job,
                                           tags={"dagster/sensor_name": "flights_retraining_sensor"}))
    return runs[-1] if runs else None


def test_drift_under_the_daemon_retrains_and_the_gate_decides_the_champion(tmp_path, environment):
    settings = load_settings("local")
    usecase = settings.usecases["flights"]
    definitions = build_definitions(settings)
    instance = dg.DagsterInstance.get()
    land_days(usecase, settings.landing_dir, [*JANUARY, *SPRING])

    def run(job: str, days: list[dt.date] | None = None, **kwargs) -> None:
        tags = ({"dagster/asset_partition_range_start": days[0].isoformat(),
                 "dagster/asset_partition_range_end": days[-1].isoformat()} if days else {})
        result = definitions.resolve_job_def(job).execute_in_process(
            instance=instance, run_config=QUIET, tags=tags, raise_on_error=False, **kwargs)
        assert result.success, job

    run("flights_snapshot")
    run(names.daily_job(usecase.name), JANUARY)
    run(names.training_job(usecase.name))
    client = definitions.resources["mlflow"]
    registered = usecase.models["delay"].registered_name
    first_champion = client.alias_version(registered, CHAMPION)
    assert first_champion is not None
    tables_only = [key for key in definitions.resolve_job_def(names.daily_job(usecase.name)).asset_layer.selected_asset_keys
                   if key.path[1] not in (names.PREDICTIONS, names.MONITORING)]
    run(names.daily_job(usecase.name), SPRING, asset_selection=tables_only)

    daemon = _daemon(tmp_path, environment)
    try:
        land_days(usecase, settings.landing_dir, LANDED_LIVE)
        retraining = None

        def retraining_finished() -> bool:
            # The daemon's runs show only in the instance's storage, which sends no notice: it is asked again.
            nonlocal retraining
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            retraining = _retraining_run(instance, names.training_job(usecase.name))
            return retraining is not None and instance.get_run_by_id(retraining.run_id).status in FINISHED

        poll_until(retraining_finished, DEADLINE_SECONDS, interval=3)
        assert retraining is not None, f"no retraining run within {DEADLINE_SECONDS} s"
        retraining = instance.get_run_by_id(retraining.run_id)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        stop_server(settings.serving_dir)

    # Each live day ran through the landing sensor, and the drift that triggered retraining is one of them.
    live_runs = instance.get_runs(dg.RunsFilter(job_name=names.daily_job(usecase.name), tags={
        "dagster/sensor_name": "flights_landing_sensor"}))
    assert {r.tags["dagster/partition"] for r in live_runs} == {day.isoformat() for day in LANDED_LIVE}
    assert retraining.tags["mlops/trigger_day"] in {day.isoformat() for day in LANDED_LIVE}
    watched = {dg.AssetCheckKey(monitoring_key(usecase, "delay"), name).to_user_string()
               for name in (FEATURE_DRIFT, QUALITY_DROP)}
    assert retraining.tags[TRIGGER_TAG] in watched

    # Whatever the gate decides, the retraining run succeeds: losing to the champion is an outcome, not a failure.
    failed_steps = {event.step_key for event in instance.all_logs(retraining.run_id)
                    if event.dagster_event and event.dagster_event.event_type_value == "STEP_FAILURE"}
    assert not failed_steps
    assert retraining.status == dg.DagsterRunStatus.SUCCESS

    gate = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(model_key(usecase, "delay"), BEATS_CHAMPION))
    assert gate is not None and gate.run_id == retraining.run_id
    candidate = str(gate.evaluation.metadata["candidate_version"].value)
    champion = client.alias_version(registered, CHAMPION)
    assert candidate != first_champion
    # The promotion asset reads the verdict right: it moved the alias, or it recorded that the champion stays.
    promotion = instance.get_latest_materialization_event(champion_key(usecase, "delay"))
    assert promotion is not None and promotion.run_id == retraining.run_id
    outcome = promotion.asset_materialization.metadata["outcome"].value
    assert outcome == ("promoted" if gate.evaluation.passed else "champion stays")
    assert str(promotion.asset_materialization.metadata["champion_version"].value) == champion
    assert champion == (candidate if gate.evaluation.passed else first_champion)
