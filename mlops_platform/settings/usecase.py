"""A use case: its sources, tables, features, models, monitoring and endpoints, checked against each other."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, model_validator

from mlops_platform.settings.base import _Strict
from mlops_platform.settings.features import FeatureTableConfig, TrainingSetConfig
from mlops_platform.settings.ml import ModelConfig
from mlops_platform.settings.monitoring import MonitoringConfig
from mlops_platform.settings.serving import ServingEndpointConfig
from mlops_platform.settings.sources import GoldConfig, SourceConfig


class PartitionWindow(_Strict):
    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> PartitionWindow:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self



class UseCaseConfig(_Strict):
    """A use case: configuration plus, at most, a small module of its own logic."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    owners: list[str] = Field(min_length=1)
    module: str
    partitions: PartitionWindow
    freshness_hours: float = Field(default=36, gt=0)
    sources: dict[str, SourceConfig] = Field(min_length=1)
    gold: dict[str, GoldConfig] = {}
    features: dict[str, FeatureTableConfig] = {}
    training_set: TrainingSetConfig | None = None
    models: dict[str, ModelConfig] = {}
    monitoring: MonitoringConfig | None = None
    serving: dict[str, ServingEndpointConfig] = {}

    @model_validator(mode="after")
    def _gold_inputs_exist(self) -> UseCaseConfig:
        for table, spec in self.gold.items():
            unknown = [name for name in [*spec.inputs, spec.reconcile_with] if name not in self.sources]
            if unknown:
                raise ValueError(f"gold table '{table}' reads unknown sources {unknown}")
        for name, feature in self.features.items():
            known = self.gold if feature.layer == "gold" else self.sources
            if feature.source not in known:
                raise ValueError(f"feature table '{name}' reads unknown {feature.layer} table '{feature.source}'")
        if self.training_set:
            unknown = [lookup.table for lookup in self.training_set.lookups if lookup.table not in self.features]
            if unknown or self.training_set.source not in self.gold:
                raise ValueError(f"training_set reads unknown tables {unknown or [self.training_set.source]}")
            for name, model in self.models.items():
                if model.label not in self.training_set.labels:
                    raise ValueError(f"model '{name}' label '{model.label}' is not a training_set label")
        if self.monitoring and self.monitoring.model not in self.models:
            raise ValueError(f"monitoring watches unknown model '{self.monitoring.model}'")
        return self

    @model_validator(mode="after")
    def _serving_fits(self) -> UseCaseConfig:
        for name, endpoint in self.serving.items():
            where = f"serving endpoint '{name}'"
            if endpoint.model not in self.models:
                raise ValueError(f"{where} serves unknown model '{endpoint.model}' (models: {sorted(self.models)})")
            if self.training_set is None:
                raise ValueError(f"{where}: serving needs a training_set (its request fields and lookups)")
            store = endpoint.online_store
            lookups = {lookup.table: lookup for lookup in self.training_set.lookups}
            unknown = [table for table in store.tables if table not in lookups]
            if unknown:
                raise ValueError(f"{where}: online_store.tables {unknown} are not training_set lookups "
                                 f"{sorted(lookups)}")
            for table in store.tables:
                timestamp = self.features[table].timestamp_key
                needed = [column for column, key in lookups[table].keys.items() if key != timestamp]
                absent = [column for column in needed if column not in store.keys]
                if absent:
                    raise ValueError(f"{where}: feature table '{table}' is looked up by {needed}; online_store.keys "
                                     f"{store.keys} lack {absent}")
            known = self.gold if store.key_source.layer == "gold" else self.sources
            if store.key_source.table not in known:
                raise ValueError(f"{where}: online_store.key_source reads unknown {store.key_source.layer} table "
                                 f"'{store.key_source.table}'")
            carried = [*store.keys, *self.training_set.request_fields]
            looked_up = [column for lookup in self.training_set.lookups
                         for column in self.features[lookup.table].columns]
            served = {column for table in store.tables for column in self.features[table].columns}
            uncovered = [column for column in looked_up if column not in carried and column not in served]
            if uncovered:
                raise ValueError(f"{where}: model features {uncovered} are neither request fields nor in "
                                 f"online_store.tables {store.tables}")
            stray = [column for column in endpoint.fallback if column not in served or column in carried]
            if stray:
                raise ValueError(f"{where}: fallback names {stray}, which are not online-store features")
            for label, record in [("single", endpoint.smoke.single),
                                  *((f"batch[{i}]", r) for i, r in enumerate(endpoint.smoke.batch))]:
                missing = [column for column in dict.fromkeys(carried) if column not in record]
                if missing:
                    raise ValueError(f"{where}: smoke.{label} lacks {missing}; a request carries {carried}")
        return self

    @property
    def daily_sources(self) -> dict[str, SourceConfig]:
        return {name: s for name, s in self.sources.items() if s.is_daily}

    @property
    def snapshot_sources(self) -> dict[str, SourceConfig]:
        return {name: s for name, s in self.sources.items() if not s.is_daily}

    def with_models_in(self, namespace: str) -> UseCaseConfig:
        """This use case with its models registered as ``<namespace>.<registered_name>`` (Unity Catalog names)."""
        models = {name: model.model_copy(update={"registered_name": f"{namespace}.{model.registered_name}"})
                  for name, model in self.models.items()}
        return self.model_copy(update={"models": models})
