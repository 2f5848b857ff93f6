"""The asset graph, built from the environment and its use cases' configuration, one folder per stage.

Each use case is a namespace of its own (``mlops_platform.names``): its assets, jobs, sensors and schedules never
collide with another's, whatever its sources and tables are called.
"""

from __future__ import annotations

import dagster as dg

from mlops_platform import names
from mlops_platform.defs.bronze.assets import bronze_assets
from mlops_platform.defs.features.assets import feature_assets
from mlops_platform.defs.gold.assets import gold_assets
from mlops_platform.defs.inference.assets import inference_assets
from mlops_platform.defs.jobs import freshness_keys, schedules, usecase_jobs
from mlops_platform.defs.landing.assets import landing_specs
from mlops_platform.defs.landing.sensors import landing_sensor
from mlops_platform.defs.monitoring.assets import monitoring_assets
from mlops_platform.defs.monitoring.sensors import retraining_sensor
from mlops_platform.defs.quality import freshness_checks, freshness_sensor
from mlops_platform.defs.registry.assets import registry_assets
from mlops_platform.defs.remote import databricks_definitions
from mlops_platform.defs.serving.assets import serving_assets
from mlops_platform.defs.silver.assets import silver_assets
from mlops_platform.defs.training.assets import training_assets
from mlops_platform.resources import build_resources
from mlops_platform.settings import Settings, UseCaseConfig


def usecase_definitions(usecase: UseCaseConfig) -> dg.Definitions:
    built = [*bronze_assets(usecase), *silver_assets(usecase), *gold_assets(usecase), *feature_assets(usecase),
             *training_assets(usecase), *registry_assets(usecase), *inference_assets(usecase),
             *monitoring_assets(usecase), *serving_assets(usecase)]
    assets = [definition for definition in built if not isinstance(definition, dg.AssetChecksDefinition)]
    jobs = usecase_jobs(usecase, assets)
    training = jobs.get(names.training_job(usecase.name))
    return dg.Definitions(
        assets=[*landing_specs(usecase), *built],
        jobs=list(jobs.values()),
        asset_checks=freshness_checks(usecase, freshness_keys(usecase)),
        schedules=schedules(usecase, jobs),
        sensors=[landing_sensor(usecase, jobs),
                 *([freshness_sensor(usecase, freshness_keys(usecase))] if freshness_keys(usecase) else []),
                 *([retraining_sensor(usecase, training)] if training and usecase.monitoring else [])],
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    definitions = dg.Definitions.merge(
        *(usecase_definitions(usecase) for usecase in settings.usecases.values()),
        dg.Definitions(resources=build_resources(settings)),
    )
    # A Databricks environment runs the heavy assets as Databricks jobs (mlops_platform.defs.remote).
    return databricks_definitions(definitions, settings) if settings.environment.databricks else definitions
