"""The stages of a use case's graph, in one registry: each stage's asset keys, group, job and remote step kind.

The asset builders, the jobs and the Databricks twins all read this, so a stage is described once: where its assets
sit (``<usecase>/<stage>/<name>``, group ``<usecase>_<stage>``), which job runs them (the daily or snapshot job for
tables and scoring, the training job for training, registry and serving), and what compute a Databricks environment
runs them on (``None``: they stay in the orchestrator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import dagster as dg

from mlops_platform import names
from mlops_platform.settings import StepKind, UseCaseConfig

# The job a stage's assets belong to. ``tables`` and ``scoring`` run day by day (the daily job) or, unpartitioned,
# whenever a snapshot lands (the snapshot job); ``training`` is the training job.
JobRole = Literal["tables", "scoring", "training"]


@dataclass(frozen=True)
class Stage:
    name: str
    job: JobRole | None
    step_kind: StepKind | None


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage(names.LANDING, job=None, step_kind=None),
    Stage(names.BRONZE, job="tables", step_kind="tables"),
    Stage(names.SILVER, job="tables", step_kind="tables"),
    Stage(names.GOLD, job="tables", step_kind="tables"),
    Stage(names.FEATURES, job="tables", step_kind="tables"),
    Stage(names.TRAINING, job="training", step_kind="training"),
    Stage(names.MODELS, job="training", step_kind="training"),
    Stage(names.REGISTRY, job="training", step_kind=None),
    Stage(names.PREDICTIONS, job="scoring", step_kind="monitoring"),
    Stage(names.MONITORING, job="scoring", step_kind="monitoring"),
    Stage(names.SERVING, job="training", step_kind=None),
)}


def _name(usecase: UseCaseConfig | str) -> str:
    return usecase if isinstance(usecase, str) else usecase.name


def key(usecase: UseCaseConfig | str, stage: str, name: str) -> dg.AssetKey:
    assert stage in STAGES, f"unknown stage '{stage}'"
    return dg.AssetKey(names.asset_path(_name(usecase), stage, name))


def group(usecase: UseCaseConfig | str, stage: str) -> str:
    return f"{_name(usecase)}_{stage}"


def tags(usecase: UseCaseConfig | str, stage: str, **extra: str) -> dict[str, str]:
    return {names.USECASE_TAG: _name(usecase), names.STAGE_TAG: stage, **extra}


def placement(usecase: UseCaseConfig, stage: str, *, on_demand: bool = False) -> dict[str, object]:
    """The arguments every asset of ``stage`` shares: group, owners and the tags jobs and twins select by.

    An ``on_demand`` asset sits in its stage's group (and runs on its stage's compute) but in none of its jobs: a
    person materializes it for the partitions they want.
    """
    extra = {names.ON_DEMAND_TAG: "true"} if on_demand else {}
    return {"group_name": group(usecase, stage), "owners": usecase.owners, "tags": tags(usecase, stage, **extra)}


def stage_of(spec: dg.AssetSpec) -> Stage | None:
    stage = (spec.tags or {}).get(names.STAGE_TAG)
    return STAGES.get(stage) if stage else None


def is_on_demand(spec: dg.AssetSpec) -> bool:
    return (spec.tags or {}).get(names.ON_DEMAND_TAG) == "true"


def source_key(usecase: UseCaseConfig | str, layer: str, source: str) -> dg.AssetKey:
    """A landing, bronze or silver asset of a source."""
    return key(usecase, layer, source)


def quarantine_key(usecase: UseCaseConfig | str, source: str) -> dg.AssetKey:
    return key(usecase, names.SILVER, names.quarantine(source))


def table_key(usecase: UseCaseConfig | str, layer: str, table: str) -> dg.AssetKey:
    """The asset of a silver or gold table by its name (what feature tables and online stores read)."""
    return key(usecase, layer, table)


def feature_key(usecase: UseCaseConfig | str, table: str) -> dg.AssetKey:
    return key(usecase, names.FEATURES, table)


def training_set_key(usecase: UseCaseConfig | str) -> dg.AssetKey:
    return key(usecase, names.TRAINING, names.TRAINING_SET)


def model_key(usecase: UseCaseConfig | str, model: str) -> dg.AssetKey:
    return key(usecase, names.MODELS, model)


def champion_key(usecase: UseCaseConfig | str, model: str) -> dg.AssetKey:
    return key(usecase, names.REGISTRY, names.champion_asset(model))


def predictions_key(usecase: UseCaseConfig | str, model: str) -> dg.AssetKey:
    return key(usecase, names.PREDICTIONS, model)


def monitoring_key(usecase: UseCaseConfig | str, model: str) -> dg.AssetKey:
    return key(usecase, names.MONITORING, names.monitoring_asset(model))


def drift_page_key(usecase: UseCaseConfig | str, model: str) -> dg.AssetKey:
    return key(usecase, names.MONITORING, names.drift_page_asset(model))


def online_store_key(usecase: UseCaseConfig | str, endpoint: str) -> dg.AssetKey:
    return key(usecase, names.SERVING, names.online_store_asset(endpoint))


def endpoint_key(usecase: UseCaseConfig | str, endpoint: str, stage: str) -> dg.AssetKey:
    return key(usecase, names.SERVING, names.endpoint_asset(endpoint, stage))
