"""Landing files as external assets: they arrive from outside (``mlops land``), Dagster only shows their lineage."""


import dagster as dg

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.tables import daily_partitions
from mlops_platform.settings import UseCaseConfig


def landing_specs(usecase: UseCaseConfig) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            key=stages.source_key(usecase, names.LANDING, name),
            description=f"{spec.description} Raw {spec.format} exports, "
            + ("one file per day." if spec.is_daily else "a full snapshot per delivery."),
            kinds={spec.format},
            partitions_def=daily_partitions(usecase) if spec.is_daily else None,
            **stages.placement(usecase, names.LANDING),
        )
        for name, spec in usecase.sources.items()
    ]
