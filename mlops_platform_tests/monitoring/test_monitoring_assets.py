"""Batch predictions and daily monitoring over real days, with a champion trained by the platform itself."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mlops_platform.cli import main
from mlops_platform.defs import build_definitions
from mlops_platform.landing import day_range, land_days
from mlops_platform.monitoring import tables
from mlops_platform.monitoring.decisions import FEATURE_DRIFT, QUALITY_DROP
from mlops_platform.monitoring.drift import WASSERSTEIN
from mlops_platform.monitoring.reference import forget_in_process
from mlops_platform.monitoring.tables import DATASET_ROW
from mlops_platform.settings import Debounce
from mlops_platform_tests.conftest import FIRST_DAY, QUIET, flights_key, flights_table

DAYS = day_range(FIRST_DAY, 24)
SCORED_DAY = DAYS[-1]


def small(settings):
    """The flights use case with short splits and a two-trial search, so a champion trains in seconds."""
    usecase = settings.usecases["flights"]
    models = {name: config.model_copy(update={"tuning": config.tuning.model_copy(update={
        "max_trials": 2, "space": {"learning_rate": (0.05, 0.2), "max_iter": (40, 60)}})})
        for name, config in usecase.models.items()}
    # A drifted day confirms drift at once, so one day of data shows both verdicts.
    monitoring = usecase.monitoring.model_copy(update={"debounce": Debounce(days=1, of_last=1)})
    usecase = usecase.model_copy(update={
        "monitoring": monitoring,
        "training_set": usecase.training_set.model_copy(update={"split": usecase.training_set.split.model_copy(
            update={"validation_days": 4, "test_days": 4})}),
        "models": models,
    })
    return settings.model_copy(update={"usecases": {"flights": usecase}})


@pytest.fixture
def scored(settings):
    settings = small(settings)
    definitions = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    land_days(settings.usecases["flights"], settings.landing_dir, DAYS)
    run = lambda job, **kw: definitions.resolve_job_def(job).execute_in_process(
        instance=instance, run_config=QUIET, **kw)
    assert run("flights_snapshot").success
    assert run("flights_daily", tags={"dagster/asset_partition_range_start": DAYS[0].isoformat(),
                                      "dagster/asset_partition_range_end": DAYS[-2].isoformat()}).success
    assert run("flights_training").success
    assert run("flights_daily", partition_key=SCORED_DAY.isoformat()).success
    result = dg.materialize(
        [definitions.get_assets_def(flights_key("predictions", "delay")),
         definitions.get_assets_def(flights_key("monitoring", "delay_drift"))],
        instance=instance, resources=definitions.resources, partition_key=SCORED_DAY.isoformat(),
        selection=[flights_key("predictions", "delay"), flights_key("monitoring", "delay_drift")],
    )
    return definitions, result, instance


def test_each_scored_row_names_the_champion_version_that_scored_it(scored):
    definitions, _, _ = scored
    warehouse = definitions.resources["warehouse"]
    predictions = pl.from_arrow(warehouse.read(*flights_table("predictions", "delay")))
    gold = pl.from_arrow(warehouse.read(*flights_table("gold", "flights"))).filter(pl.col("flight_date") == SCORED_DAY)

    champion = definitions.resources["mlflow"].client().get_model_version_by_alias("flights_delay", "champion")
    assert predictions.height == gold.height
    assert predictions["model_version"].unique().to_list() == [str(champion.version)]
    assert predictions["prediction"].is_between(0, 1).all()


def _monitor(definitions, instance):
    result = dg.materialize([definitions.get_assets_def(flights_key("monitoring", "delay_drift"))],
                            instance=instance, resources=definitions.resources, partition_key=SCORED_DAY.isoformat())
    metadata = result.asset_materializations_for_node("flights__monitoring__delay_drift")[0].metadata
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    drift = pl.from_arrow(definitions.resources["warehouse"].read(*flights_table("monitoring", "delay_drift_metrics")))
    return metadata, checks, drift.sort("scope", "column_name")


def _drift_the_scored_day(warehouse):
    """Move every numerical feature of the scored day's predictions by ten of its standard deviations."""
    table = flights_table("predictions", "delay")
    rows = pl.from_arrow(warehouse.read(*table))
    numerical = [c for c, kind in rows.schema.items() if kind.is_float() and c not in ("prediction", "arr_delay")]
    shifted = rows.with_columns(pl.col(c) + 10 * (pl.col(c).std().fill_null(1.0) + 1.0) for c in numerical)
    warehouse.overwrite(*table, shifted.to_arrow())


def test_monitoring_judges_a_quiet_and_a_drifted_day_with_cached_baselines_and_compact_reports(scored):
    definitions, result, instance = scored
    warehouse = definitions.resources["warehouse"]
    drift = pl.from_arrow(warehouse.read(*flights_table("monitoring", "delay_drift_metrics")))
    quality = pl.from_arrow(warehouse.read(*flights_table("monitoring", "delay_quality_metrics")))
    profile = pl.from_arrow(warehouse.read(*flights_table("monitoring", "delay_profile_metrics")))

    # Shaped like data profiling's tables: the day's window, a row per column, its statistic where its method has one.
    features = drift.filter((pl.col("scope") == "features") & (pl.col("column_name") != DATASET_ROW))
    assert features.height > 20
    assert set(features.select("window_start", "window_end", "granularity", "drift_type").rows()) == {
        (SCORED_DAY, SCORED_DAY + dt.timedelta(days=1), "1 day", "BASELINE")}
    assert features["slice_key"].null_count() == features.height
    wasserstein = features.filter(pl.col("method") == WASSERSTEIN)
    assert wasserstein.height and (wasserstein["wasserstein_distance"] == wasserstein["score"]).all()
    assert drift.filter(pl.col("column_name") == DATASET_ROW).height == 2
    assert 0.5 < quality["value"][0] < 1.0
    distance = profile.filter(pl.col("column_name") == "distance").row(0, named=True)
    assert distance["count"] > 100 and distance["min"] <= distance["avg"] <= distance["max"]

    # A quiet day passes, with a compact page and no Evidently page. The daily job already monitored this day in this
    # process and built the champion's baseline; this run took it from memory.
    metadata = result.asset_materializations_for_node("flights__monitoring__delay_drift")[0].metadata
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks[FEATURE_DRIFT] and checks[QUALITY_DROP]
    compact = Path(metadata["report"].value)
    assert compact.name == f"drift_{SCORED_DAY}.html" and compact.stat().st_size < 60_000
    assert "full_report" not in metadata and not list(compact.parent.glob("*_full.html"))
    assert metadata["reference_baseline"].value == "memory"
    quiet_page = compact.read_text()
    assert "<svg" in quiet_page and "<script" not in quiet_page and "This day's features drifted" not in quiet_page
    assert f"mlops report --usecase flights --day {SCORED_DAY}" in quiet_page and PAGE_KEY in quiet_page

    # On demand, the quiet day's full page too; a day without predictions has none.
    assert main(["report", "--usecase", "flights", "--day", SCORED_DAY.isoformat()]) == 0
    on_demand = compact.parent / f"drift_{SCORED_DAY}_full.html"
    assert on_demand.stat().st_size > 100_000 and on_demand.name in compact.read_text()
    on_demand.unlink()
    assert main(["report", "--usecase", "flights", "--day", DAYS[0].isoformat()]) == 1

    # Again from this process's baseline, then from the disk copy: the same rows and verdicts.
    again, again_checks, again_drift = _monitor(definitions, instance)
    forget_in_process()
    from_disk, disk_checks, disk_drift = _monitor(definitions, instance)
    assert (again["reference_baseline"].value, from_disk["reference_baseline"].value) == ("memory", "disk")
    assert again_checks == disk_checks == checks
    assert again_drift.equals(disk_drift) and again_drift.height == drift.height

    # A drifted day fails feature_drift with the metadata a quiet day has, and no Evidently page: its compact page
    # says prominently how to render one, and charts the drifted columns red.
    _drift_the_scored_day(warehouse)
    drifted, drifted_checks, _ = _monitor(definitions, instance)
    assert not drifted_checks[FEATURE_DRIFT] and drifted["drift_share"].value >= 0.3
    assert set(drifted) == set(metadata) and not list(compact.parent.glob("*_full.html"))
    failing_page = Path(drifted["report"].value).read_text()
    assert "This day's features drifted or its quality dropped" in failing_page
    assert f"drift_{SCORED_DAY}_full.html" in failing_page and PAGE_KEY in failing_page
    assert failing_page.count('fill="#b00020"') == len(drifted["drifted_columns"].value)

    # On demand from the UI: the page asset renders the day's page and leaves every monitoring table as it was.
    monitoring_tables = [tables.table("flights", "delay", name) for name in tables.SCHEMAS]
    versions = [warehouse.version(*table) for table in monitoring_tables]
    page = _materialize_page(definitions, instance, SCORED_DAY)
    full = Path(page["page"].value)
    assert full.name == f"drift_{SCORED_DAY}_full.html" and full.parent == compact.parent
    assert page["page_bytes"].value == full.stat().st_size > 100_000
    assert [warehouse.version(*table) for table in monitoring_tables] == versions

    # A day without predictions has no page, and the error names it.
    with pytest.raises(ValueError, match=f"scored nothing on {DAYS[0]}"):
        _materialize_page(definitions, instance, DAYS[0])
    assert not (compact.parent / f"drift_{DAYS[0]}_full.html").exists()


PAGE_KEY = "flights/monitoring/delay_drift_page"


def _materialize_page(definitions, instance, day: dt.date):
    key = dg.AssetKey(PAGE_KEY.split("/"))
    result = dg.materialize([definitions.get_assets_def(key)], instance=instance, resources=definitions.resources,
                            partition_key=day.isoformat())
    return result.asset_materializations_for_node(key.to_python_identifier())[0].metadata
