"""Landing files as external assets: they arrive from outside (``mlops land``), Dagster only shows their lineage."""


import dagster as dg

from mlops_platform.defs.tables import daily_partitions
from mlops_platform.settings import UseCaseConfig


def landing_specs(usecase: UseCaseConfig) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            key=["landing", name],
            description=f"{spec.description} Raw {spec.format} exports, "
            + ("one file per day." if spec.is_daily else "a full snapshot per delivery."),
            group_name="landing",
            kinds={spec.format},
            owners=usecase.owners,
            partitions_def=daily_partitions(usecase) if spec.is_daily else None,
            tags={"usecase": usecase.name},
        )
        for name, spec in usecase.sources.items()
    ]
