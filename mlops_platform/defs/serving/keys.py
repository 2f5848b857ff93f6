"""The serving stage's endpoint stages, and its asset keys in deployment order (what the training job selects)."""

import dagster as dg

from mlops_platform.defs.stages import endpoint_key, online_store_key
from mlops_platform.settings import UseCaseConfig

STAGES = ("staging", "production")


def serving_keys(usecase: UseCaseConfig, stages: tuple[str, ...] = STAGES) -> list[dg.AssetKey]:
    """Every endpoint's online store and its endpoint assets up to and including ``stages``."""
    return [key for endpoint in usecase.serving
            for key in (online_store_key(usecase, endpoint), *(endpoint_key(usecase, endpoint, stage)
                                                                for stage in stages))]
