"""Jobs a person or schedule launches by name."""

from __future__ import annotations

import dagster as dg

from mlops_platform.defs.tables import daily_partitions
from mlops_platform.settings import UseCaseConfig

MEDALLION_GROUPS = ("bronze", "silver", "gold")


def medallion_job_name(usecase: UseCaseConfig) -> str:
    return f"{usecase.name}_medallion"


def medallion_job(usecase: UseCaseConfig) -> dg.UnresolvedAssetJobDefinition:
    """Bronze -> silver -> gold for a day, with every check; reference snapshots are refreshed alongside."""
    selection = dg.AssetSelection.groups(*MEDALLION_GROUPS) & dg.AssetSelection.tag("usecase", usecase.name)
    return dg.define_asset_job(
        medallion_job_name(usecase),
        selection=selection,
        partitions_def=daily_partitions(usecase),
        description=f"Land-to-gold for one day of the {usecase.name} use case, guarded by its checks.",
    )
