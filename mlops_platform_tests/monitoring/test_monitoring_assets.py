"""Batch predictions and daily monitoring over real days, with a champion trained by the platform itself."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mlops_platform.defs import build_definitions
from mlops_platform.landing import day_range, land_days
from mlops_platform.monitoring.decisions import FEATURE_DRIFT, QUALITY_DROP
from mlops_platform.monitoring.tables import DATASET_ROW
from mlops_platform_tests.conftest import FIRST_DAY, QUIET, flights_key, flights_table

DAYS = day_range(FIRST_DAY, 24)
SCORED_DAY = DAYS[-1]


def small(settings):
    """The flights use case with short splits and a two-trial search, so a champion trains in seconds."""
    usecase = settings.usecases["flights"]
    models = {name: config.model_copy(update={"tuning": config.tuning.model_copy(update={
        "max_trials": 2, "space": {"learning_rate": (0.05, 0.2), "max_iter": (40, 60)}})})
        for name, config in usecase.models.items()}
    usecase = usecase.model_copy(update={
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
    return definitions, result


def test_each_scored_row_names_the_champion_version_that_scored_it(scored):
    definitions, _ = scored
    warehouse = definitions.resources["warehouse"]
    predictions = pl.from_arrow(warehouse.read(*flights_table("predictions", "delay")))
    gold = pl.from_arrow(warehouse.read(*flights_table("gold", "flights"))).filter(pl.col("flight_date") == SCORED_DAY)

    champion = definitions.resources["mlflow"].client().get_model_version_by_alias("flights_delay", "champion")
    assert predictions.height == gold.height
    assert predictions["model_version"].unique().to_list() == [str(champion.version)]
    assert predictions["prediction"].is_between(0, 1).all()


def test_monitoring_writes_metrics_per_column_a_report_and_check_results(scored):
    definitions, result = scored
    warehouse = definitions.resources["warehouse"]
    drift = pl.from_arrow(warehouse.read(*flights_table("monitoring", "delay_drift_metrics")))
    quality = pl.from_arrow(warehouse.read(*flights_table("monitoring", "delay_quality_metrics")))

    features = drift.filter((pl.col("scope") == "features") & (pl.col("column") != DATASET_ROW))
    assert features.height > 20 and set(features["day"].to_list()) == {SCORED_DAY}
    assert drift.filter(pl.col("column") == DATASET_ROW).height == 2
    assert 0.5 < quality["value"][0] < 1.0
    metadata = result.asset_materializations_for_node("flights__monitoring__delay_drift")[0].metadata
    assert Path(metadata["report"].value).stat().st_size > 100_000
    checks = {e.check_name for e in result.get_asset_check_evaluations()}
    assert {FEATURE_DRIFT, QUALITY_DROP} <= checks
