"""Jobs a person or schedule launches by name."""

from __future__ import annotations

import dagster as dg

from mlops_platform.defs.tables import daily_partitions
from mlops_platform.settings import UseCaseConfig

DAILY_GROUPS = ("bronze", "silver", "gold", "features")


def daily_job_name(usecase: UseCaseConfig) -> str:
    return f"{usecase.name}_daily"


def daily_job(usecase: UseCaseConfig) -> dg.UnresolvedAssetJobDefinition:
    """A day's work: bronze -> silver -> gold -> feature tables, with every check; snapshots refreshed alongside."""
    selection = dg.AssetSelection.groups(*DAILY_GROUPS) & dg.AssetSelection.tag("usecase", usecase.name)
    return dg.define_asset_job(
        daily_job_name(usecase),
        selection=selection,
        partitions_def=daily_partitions(usecase),
        description=f"One day of the {usecase.name} use case, landing files to feature tables, guarded by checks.",
    )
