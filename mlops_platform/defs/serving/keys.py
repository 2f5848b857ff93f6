"""Asset keys of the serving stage, apart from the assets so that the training job can select them."""

import dagster as dg

from mlops_platform.settings import UseCaseConfig

SERVING_SCHEMA = "serving"
STAGES = ("staging", "production")


def online_store_key(endpoint: str) -> dg.AssetKey:
    return dg.AssetKey([SERVING_SCHEMA, f"{endpoint}_online_store"])


def endpoint_key(endpoint: str, stage: str) -> dg.AssetKey:
    return dg.AssetKey([SERVING_SCHEMA, f"{endpoint}_{stage}"])


def serving_keys(usecase: UseCaseConfig, stages: tuple[str, ...] = STAGES) -> list[dg.AssetKey]:
    """Every endpoint's online store and its endpoint assets up to and including ``stages``."""
    return [key for endpoint in usecase.serving
            for key in (online_store_key(endpoint), *(endpoint_key(endpoint, stage) for stage in stages))]
