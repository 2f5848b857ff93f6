"""The shipped use cases of other shapes, end to end, and two use cases with the same names side by side.

- ``penguins``: snapshots without dates, a string label, no feature tables, a random stratified split, a logistic
  regression; each landed snapshot runs the whole flow.
- ``seattle_weather``: one row a day, partitioned by its own date column, a rolling feature table without groups,
  a linear regression, monitored over a four-week window.

Each goes from landing files to a served champion answering over HTTP, then monitors a later day.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import httpx
import polars as pl
import pytest

from mlops_platform import names
from mlops_platform.defs import build_definitions
from mlops_platform.landing import day_range, land_days
from mlops_platform.ml.gate import CHAMPION
from mlops_platform.monitoring import tables
from mlops_platform.replay import failure_messages
from mlops_platform.resources.serving import stop_server
from mlops_platform.settings import (
    CONFIG_DIR_ENV,
    DATA_DIR_ENV,
    PROJECT_ROOT,
    SERVING_PORT_ENV,
    Settings,
    load_settings,
)
from mlops_platform_tests.conftest import QUIET, check_results

pytestmark = [pytest.mark.timeout(900), pytest.mark.xdist_group("usecases")]

SNAPSHOT_DAYS = [dt.date(2024, 4, 1), dt.date(2024, 4, 2)]
SEATTLE_DAYS = day_range(dt.date(2012, 1, 1), 178)


class Flow:
    """One use case's jobs on one instance, failing the test with the steps' own messages."""

    def __init__(self, settings: Settings, usecase: str) -> None:
        self.settings, self.usecase = settings, settings.usecases[usecase]
        self.definitions = build_definitions(settings)
        self.instance = dg.DagsterInstance.ephemeral()
        self.warehouse = self.definitions.resources["warehouse"]

    def run(self, job: str, warnings: tuple[str, ...] = (), **kwargs) -> dg.ExecuteInProcessResult:
        """Run ``job``; it must succeed with every check passing but the ``warnings`` named."""
        result = self.definitions.resolve_job_def(job).execute_in_process(
            instance=self.instance, raise_on_error=False, run_config=QUIET, **kwargs)
        assert result.success, failure_messages(result)
        failed = {check for (_, check), evaluation in check_results(result).items() if not evaluation.passed}
        assert failed <= set(warnings), failed
        return result

    def rows(self, layer: str, table: str) -> pl.DataFrame:
        return pl.from_arrow(self.warehouse.read(*names.table(self.usecase.name, layer, table)))

    def metadata(self, result: dg.ExecuteInProcessResult, layer: str, name: str) -> dict:
        key = dg.AssetKey(names.asset_path(self.usecase.name, layer, name))
        event = next(e for e in result.get_asset_materialization_events() if e.asset_key == key)
        return {name: value.value for name, value in event.materialization.metadata.items()}

    def invoke(self, result: dg.ExecuteInProcessResult, endpoint: str, records: list[dict]) -> httpx.Response:
        url = self.metadata(result, names.SERVING, names.endpoint_asset(endpoint, "production"))["endpoint_url"]
        return httpx.post(url, json={"dataframe_records": records}, timeout=30)


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(SERVING_PORT_ENV, "0")
    settings = load_settings("local")
    yield settings
    stop_server(settings.serving_dir)


def test_penguins_goes_from_snapshots_to_a_served_champion_and_monitored_snapshots(local):
    flow = Flow(local, "penguins")
    land_days(flow.usecase, local.landing_dir, SNAPSHOT_DAYS[:1])
    flow.run(names.snapshot_job("penguins"), tags={names.SNAPSHOT_DAY_TAG: SNAPSHOT_DAYS[0].isoformat()})
    assert flow.rows(names.GOLD, "penguins").height == 344

    trained = flow.run(names.training_job("penguins"))

    training_set = flow.rows(names.TRAINING, names.TRAINING_SET)
    labelled = training_set.filter(pl.col("sex").is_not_null())
    shares = labelled.group_by("split").agg((pl.col("sex") == "female").mean().alias("female"), pl.len())
    # Stratified: each split holds the same share of females as the whole (within one penguin's rounding).
    overall = (labelled["sex"] == "female").mean()
    assert all(abs(share - overall) < 0.02 for share in shares["female"])
    assert dict(shares.select("split", "len").iter_rows()) == {"train": 199, "validation": 67, "test": 67}
    registered = flow.usecase.models["sex"].registered_name
    assert registered == "penguins_sex"
    assert flow.definitions.resources["mlflow"].alias_version(registered, CHAMPION) == "1"

    answer = flow.invoke(trained, "sex", [
        {"species": "Gentoo", "island": "Biscoe", "bill_length_mm": 46.1, "bill_depth_mm": 13.2,
         "flipper_length_mm": 211.0, "body_mass_g": 4500.0},
        {"species": "Gentoo", "island": "Biscoe", "bill_length_mm": 50.0, "bill_depth_mm": 16.3,
         "flipper_length_mm": 230.0, "body_mass_g": 5700.0}])
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 2

    land_days(flow.usecase, local.landing_dir, SNAPSHOT_DAYS[1:])
    monitored = flow.run(names.snapshot_job("penguins"), tags={names.SNAPSHOT_DAY_TAG: SNAPSHOT_DAYS[1].isoformat()})

    metadata = flow.metadata(monitored, names.MONITORING, names.monitoring_asset("sex"))
    assert metadata["day"] == SNAPSHOT_DAYS[1].isoformat()
    assert metadata["roc_auc"] > 0.9
    quality = pl.from_arrow(flow.warehouse.read(*tables.table("penguins", "sex", tables.QUALITY_METRICS))).with_columns(tables.monitored_day())
    # The whole snapshot is judged: every labelled penguin.
    assert quality.select("day", "usecase", "model", "rows").rows() == [
        (SNAPSHOT_DAYS[1], "penguins", "penguins_sex", 344)]

    # Evidently's page of a snapshot use case, on demand from the UI: the newest monitored snapshot's.
    assert "for partition" not in Path(metadata["report"]).read_text()    # a snapshot's page asset has none
    page_key = dg.AssetKey(names.asset_path("penguins", names.MONITORING, names.drift_page_asset("sex")))
    page = dg.materialize([flow.definitions.get_assets_def(page_key)], instance=flow.instance,
                          resources=flow.definitions.resources)
    page_metadata = page.asset_materializations_for_node(page_key.to_python_identifier())[0].metadata
    assert page_metadata["days"].value == SNAPSHOT_DAYS[1].isoformat()
    assert Path(page_metadata["page"].value).name == f"drift_{SNAPSHOT_DAYS[1]}_full.html"
    assert Path(page_metadata["page"].value).stat().st_size == page_metadata["page_bytes"].value > 100_000


def test_seattle_weather_goes_from_daily_rows_to_a_served_champion_monitored_over_a_window(local):
    flow = Flow(local, "seattle_weather")
    land_days(flow.usecase, local.landing_dir, SEATTLE_DAYS)
    history, scored = SEATTLE_DAYS[:150], SEATTLE_DAYS[150:]
    flow.run(names.daily_job("seattle_weather"), tags={"dagster/asset_partition_range_start": history[0].isoformat(),
                                                      "dagster/asset_partition_range_end": history[-1].isoformat()})
    features = flow.rows(names.FEATURES, "recent_weather").sort("date")
    # A row per day that has days before it; no groups, so the day is the whole key.
    assert features["date"].to_list() == history[1:]
    last = features.row(-1, named=True)
    # The three days before 2012-05-29 in the vega_datasets file: highest 22.2, 17.2, 16.7 C; lowest 8.9, 11.7,
    # 10.0 C; no rain.
    assert last["date"] == dt.date(2012, 5, 29) and last["recent_rows_3d"] == 3
    assert last["recent_temp_max_mean_3d"] == pytest.approx((22.2 + 17.2 + 16.7) / 3)
    assert last["recent_temp_min_mean_3d"] == pytest.approx((8.9 + 11.7 + 10.0) / 3)
    assert last["recent_precipitation_sum_3d"] == 0.0

    trained = flow.run(names.training_job("seattle_weather"))

    answer = flow.invoke(trained, "temp_max", [{"month": 6, "day_of_year": 152}])
    assert answer.status_code == 200, answer.text
    # Early June in Seattle, from the newest days on record: a plausible highest temperature.
    assert 10.0 < answer.json()["predictions"][0] < 35.0

    # June against a winter-and-spring reference: the features and predictions (warmer days) drift on day after
    # day, and the checks that start a retraining say so.
    monitored = flow.run(names.daily_job("seattle_weather"), warnings=("prediction_drift", "feature_drift"),
                         tags={"dagster/asset_partition_range_start": scored[0].isoformat(),
                               "dagster/asset_partition_range_end": scored[-1].isoformat()})

    quality = pl.from_arrow(flow.warehouse.read(*tables.table("seattle_weather", "temp_max",
                                                               tables.QUALITY_METRICS))).with_columns(tables.monitored_day()).sort("day")
    # One row a day, each day judged on the scored days of the four weeks ending with it.
    assert quality.select("day", "rows").rows() == [(day, i + 1) for i, day in enumerate(scored)]
    metadata = flow.metadata(monitored, names.MONITORING, names.monitoring_asset("temp_max"))
    assert 0 < metadata["root_mean_squared_error"] < 10


def _twin_config(tmp_path: Path) -> Path:
    """The project's config with a second penguins use case whose sources, tables and model have the same names."""
    config = Path(shutil.copytree(PROJECT_ROOT / "config", tmp_path / "config"))
    original = (config / "usecases" / "penguins.yaml").read_text()
    twin = original.replace("name: penguins\n", "name: penguins_twin\n").replace("penguins-sex", "twin-sex")
    (config / "usecases" / "penguins_twin.yaml").write_text(twin)
    environment = config / "environments" / "local.yaml"
    text = environment.read_text()
    start = text.index("usecases: [")
    environment.write_text(text[:start] + "usecases: [penguins, penguins_twin]\n")
    return config


def test_two_use_cases_with_the_same_source_table_and_model_names_never_touch_each_other(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_DIR_ENV, str(_twin_config(tmp_path)))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(SERVING_PORT_ENV, "0")
    settings = load_settings("local")
    try:
        first, twin = Flow(settings, "penguins"), Flow(settings, "penguins_twin")
        keys = {key.to_user_string() for key in first.definitions.resolve_asset_graph().get_all_asset_keys()}
        assert {"penguins/gold/penguins", "penguins_twin/gold/penguins"} <= keys
        for flow in (first, twin):
            land_days(flow.usecase, settings.landing_dir, SNAPSHOT_DAYS)
            for day in SNAPSHOT_DAYS:
                flow.run(names.snapshot_job(flow.usecase.name), tags={names.SNAPSHOT_DAY_TAG: day.isoformat()})
                if day == SNAPSHOT_DAYS[0]:
                    flow.run(names.training_job(flow.usecase.name))
        owned = [names.table("penguins_twin", layer, table) for layer, table in (
            (names.BRONZE, "penguins"), (names.SILVER, "penguins"), (names.GOLD, "penguins"),
            (names.TRAINING, names.TRAINING_SET), (names.PREDICTIONS, "sex"))]
        owned += [tables.table("penguins_twin", "sex", metrics) for metrics in tables.SCHEMAS]
        before = {table: twin.warehouse.version(*table) for table in owned}
        assert None not in before.values()

        # Everything penguins does again for the same day: tables, scoring and monitoring, replacing that day's
        # metrics.
        first.run(names.snapshot_job("penguins"), tags={names.SNAPSHOT_DAY_TAG: SNAPSHOT_DAYS[1].isoformat()})

        assert {table: twin.warehouse.version(*table) for table in owned} == before
        for usecase in ("penguins", "penguins_twin"):
            quality = pl.from_arrow(first.warehouse.read(*tables.table(usecase, "sex", tables.QUALITY_METRICS))).with_columns(tables.monitored_day())
            assert quality.select("day", "usecase", "model").rows() == [(SNAPSHOT_DAYS[1], usecase, f"{usecase}_sex")]
        registry = first.definitions.resources["mlflow"]
        assert registry.alias_version("penguins_sex", CHAMPION) == registry.alias_version("penguins_twin_sex",
                                                                                          CHAMPION) == "1"
        assert (settings.landing_dir / "penguins_twin" / "penguins").is_dir()
    finally:
        stop_server(settings.serving_dir)
