"""The asset graph, built from the environment and its use cases' configuration, one folder per stage."""

from __future__ import annotations

import dagster as dg

from mlops_platform.defs.bronze.assets import bronze_assets
from mlops_platform.defs.features.assets import feature_assets
from mlops_platform.defs.gold.assets import gold_assets
from mlops_platform.defs.jobs import daily_job, reference_job
from mlops_platform.defs.landing.assets import landing_specs
from mlops_platform.defs.silver.assets import silver_assets
from mlops_platform.resources import build_resources
from mlops_platform.settings import Settings, UseCaseConfig


def usecase_definitions(usecase: UseCaseConfig) -> dg.Definitions:
    return dg.Definitions(
        assets=[*landing_specs(usecase), *bronze_assets(usecase), *silver_assets(usecase), *gold_assets(usecase),
                *feature_assets(usecase)],
        jobs=[daily_job(usecase), reference_job(usecase)],
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions.merge(
        *(usecase_definitions(usecase) for usecase in settings.usecases.values()),
        dg.Definitions(resources=build_resources(settings)),
    )
