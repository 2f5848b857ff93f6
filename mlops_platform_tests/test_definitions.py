"""The shape of the asset graph: keys, lineage, groups, checks and what the UI shows about each asset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import dagster as dg

from mlops_platform import names
from mlops_platform.defs import build_definitions
from mlops_platform.settings import DATA_DIR_ENV, PROJECT_ROOT, load_settings
from mlops_platform_tests.conftest import flights_key

SOURCES = {"flights", "weather", "planes", "airlines", "airports"}


def _graph(definitions: dg.Definitions):
    return definitions.resolve_asset_graph()


def test_every_layer_has_a_table_shaped_key_per_source(definitions):
    keys = {key.to_user_string() for key in _graph(definitions).get_all_asset_keys()}

    for layer in ("landing", "bronze", "silver"):
        assert {f"flights/{layer}/{source}" for source in SOURCES} <= keys
    assert {f"flights/silver/{source}_quarantine" for source in SOURCES} <= keys
    assert "flights/gold/flights" in keys
    # A use case is a namespace: every key starts with its name.
    assert {key.split("/")[0] for key in keys} == set(load_settings("local").usecases)


def test_lineage_runs_landing_to_bronze_to_silver_to_gold(definitions):
    graph = _graph(definitions)

    def parents(key: str) -> set[str]:
        return {p.to_user_string() for p in graph.get(dg.AssetKey(key.split("/"))).parent_keys}

    assert parents("flights/bronze/flights") == {"flights/landing/flights"}
    assert parents("flights/silver/flights") == {"flights/bronze/flights"}
    assert parents("flights/gold/flights") == {"flights/silver/flights", "flights/silver/weather",
                                               "flights/silver/planes", "flights/silver/airlines"}


def test_assets_carry_group_kinds_owner_and_a_description(definitions):
    graph = _graph(definitions)
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        usecase, stage, _ = key.path
        assert node.group_name == f"{usecase}_{stage}", key
        assert node.tags[names.STAGE_TAG] == stage and node.tags[names.USECASE_TAG] == usecase, key
        assert node.owners == load_settings("local").usecases[usecase].owners, key
        assert node.description and len(node.description) > 30, key
        assert node.kinds, key


def test_daily_sources_are_partitioned_and_snapshots_are_not(definitions):
    graph = _graph(definitions)
    assert graph.get(flights_key("silver", "flights")).partitions_def is not None
    assert graph.get(flights_key("gold", "flights")).partitions_def is not None
    assert graph.get(flights_key("silver", "planes")).partitions_def is None


def test_error_checks_block_downstream_and_warnings_do_not(definitions):
    graph = _graph(definitions)
    blocking = {
        (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key).blocking
        for key in graph.asset_check_keys
    }

    assert blocking[("flights/silver/flights", "keys_unique")]
    assert blocking[("flights/silver/flights", "rows_reconcile")]
    assert not blocking[("flights/silver/flights", "quarantine_share")]
    assert not blocking[("flights/silver/flights", "keys_consistent")]     # conflicts warn unless a source says otherwise
    assert blocking[("flights/gold/flights", "label_consistent")]
    assert not blocking[("flights/gold/flights", "weather_mostly_present")]
    assert not blocking[("flights/bronze/flights", "has_rows")]


def test_every_environment_builds_without_touching_the_network():
    for environment in ("local", "dev", "staging", "prod"):
        definitions = build_definitions(load_settings(environment))
        assert definitions.resolve_job_def("flights_daily")


def test_the_daily_job_holds_daily_tables_and_the_snapshot_job_the_snapshots(definitions):
    graph = _graph(definitions)

    def keys(job_name: str) -> set[str]:
        job = definitions.resolve_job_def(job_name)
        return {key.to_user_string() for key in job.asset_layer.selected_asset_keys}

    daily, reference = keys("flights_daily"), keys("flights_snapshot")
    assert {"flights/bronze/flights", "flights/silver/weather", "flights/gold/flights",
            "flights/features/carrier_delays", "flights/predictions/delay", "flights/monitoring/delay_drift"} <= daily
    assert {"flights/bronze/planes", "flights/silver/airlines", "flights/features/plane_attributes"} <= reference
    assert not daily & reference
    assert all(graph.get(dg.AssetKey(key.split("/"))).partitions_def is not None for key in daily)


def test_evidently_s_full_page_is_in_no_job_and_materializes_from_the_ui_by_day(definitions):
    # On demand only: downstream of monitoring, in its group, partitioned by day, and selected by no job.
    graph = _graph(definitions)
    page = flights_key("monitoring", "delay_drift_page")
    node = graph.get(page)
    assert {p.to_user_string() for p in node.parent_keys} == {"flights/monitoring/delay_drift"}
    assert node.partitions_def == graph.get(flights_key("monitoring", "delay_drift")).partitions_def is not None
    assert node.tags[names.ON_DEMAND_TAG] == "true"
    for job in definitions.resolve_all_job_defs():
        if job.name != "__ASSET_JOB":
            assert page not in job.asset_layer.selected_asset_keys, job.name


def test_the_daily_and_training_jobs_run_their_steps_in_one_process(definitions):
    """A process per step would import the platform and build the definitions again for every step."""
    for job_name in (names.daily_job("flights"), names.training_job("flights")):
        assert definitions.resolve_job_def(job_name).executor_def is dg.in_process_executor, job_name


def test_the_code_location_autoloads_the_defs_folder_and_finds_the_whole_graph(settings, definitions):
    # What `dagster dev -w workspace.yaml`, `dg list defs` and `dg check defs` load (mlops_platform.definitions).
    from mlops_platform.definitions import defs

    loaded = defs()

    def shape(found: dg.Definitions) -> dict[str, set[str]]:
        graph = found.resolve_asset_graph()
        return {
            "assets": {key.to_user_string() for key in graph.get_all_asset_keys()},
            "checks": {key.to_user_string() for key in graph.asset_check_keys},
            "jobs": {job.name for job in found.resolve_all_job_defs()} - {"__ASSET_JOB"},
            "schedules": {schedule.name for schedule in found.schedules or []},
            "sensors": {sensor.name for sensor in found.sensors or []},
            "resources": set(found.resources or {}),
        }

    assert shape(loaded) == shape(definitions)
    assert len(shape(loaded)["assets"]) > 50


def test_a_module_dropped_into_the_defs_folder_is_loaded_beside_the_use_cases(tmp_path):
    # What `dg scaffold defs dagster.asset <file>` creates, in a copy of the project so the package stays untouched.
    project = tmp_path / "project"
    for part in ("mlops_platform", "config"):
        shutil.copytree(PROJECT_ROOT / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project / "pyproject.toml")
    (project / "mlops_platform" / "defs" / "scaffolded.py").write_text(
        "import dagster as dg\n\n\n@dg.asset\ndef scaffolded_asset() -> None:\n    pass\n")
    script = ("from mlops_platform.definitions import defs\n"
              "print(sorted(k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys()))")
    done = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True, check=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(project),
                                            DATA_DIR_ENV: str(tmp_path / "data")})

    keys = done.stdout.splitlines()[-1]
    assert "'scaffolded_asset'" in keys and "'flights/gold/flights'" in keys
