"""A use case: its sources, tables, features, models, monitoring and endpoints, checked against each other."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, model_validator

from mlops_platform import names
from mlops_platform.settings.base import FieldError, _Strict
from mlops_platform.settings.features import FeatureTableConfig, TrainingSetConfig
from mlops_platform.settings.ml import ModelConfig
from mlops_platform.settings.monitoring import MonitoringConfig
from mlops_platform.settings.serving import ServingEndpointConfig
from mlops_platform.settings.sources import GoldConfig, ReplaceGuard, SourceConfig


class PartitionWindow(_Strict):
    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> PartitionWindow:
        if self.end <= self.start:
            raise FieldError("end", f"end {self.end} must be after start {self.start}", self.end)
        return self


class ReplayConfig(_Strict):
    """What ``mlops run`` replays when no window is given: ``days`` days from ``start``, and the first champion trained
    after ``bootstrap_days`` of them. Defaults: the use case's partition window (or a week of snapshots)."""

    start: dt.date | None = None
    days: int | None = Field(default=None, gt=0)
    bootstrap_days: int = Field(default=35, gt=0)


class UseCaseConfig(_Strict):
    """A use case: configuration plus, at most, a small module of its own logic. Its name is its namespace: the
    prefix of its asset keys, table schemas, jobs, sensors and registered models (``mlops_platform.names``)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    owners: list[str] = Field(min_length=1)
    module: str
    partitions: PartitionWindow | None = Field(default=None, description="the days of daily sources; none for a "
                                                                          "use case of snapshots only")
    freshness_hours: float = Field(default=36, gt=0)
    sources: dict[str, SourceConfig] = Field(min_length=1)
    gold: dict[str, GoldConfig] = {}
    features: dict[str, FeatureTableConfig] = {}
    training_set: TrainingSetConfig | None = None
    models: dict[str, ModelConfig] = {}
    monitoring: MonitoringConfig | None = None
    serving: dict[str, ServingEndpointConfig] = {}
    replay: ReplayConfig = ReplayConfig()
    replace_guard: ReplaceGuard = ReplaceGuard()

    @model_validator(mode="before")
    @classmethod
    def _registered_names(cls, data: object) -> object:
        if not (isinstance(data, dict) and isinstance(data.get("name"), str) and isinstance(data.get("models"), dict)):
            return data
        models = {}
        for key, model in data["models"].items():
            if isinstance(model, dict):
                if "registered_name" in model:
                    raise FieldError(("models", key, "registered_name"), "is derived from the use case and model "
                                     f"names ('{names.registered_model(data['name'], key)}'): remove it",
                                     model["registered_name"])
                model = {**model, "registered_name": names.registered_model(data["name"], key)}
            models[key] = model
        return {**data, "models": models}

    @model_validator(mode="after")
    def _tables_exist(self) -> UseCaseConfig:
        if self.partitions is None and (self.daily_sources or any(g.is_daily for g in self.gold.values())):
            raise FieldError("partitions", "daily sources and tables need a partitions window (start, end)")
        for table, spec in self.gold.items():
            for i, name in enumerate(spec.inputs):
                if name not in self.sources:
                    raise FieldError(("gold", table, "inputs", i), f"gold table '{table}' reads unknown source "
                                     f"'{name}' (sources: {sorted(self.sources)})", name)
            if spec.reconcile_with is not None and spec.reconcile_with not in spec.inputs:
                raise FieldError(("gold", table, "reconcile_with"), f"'{spec.reconcile_with}' is not among the "
                                 f"inputs {spec.inputs}", spec.reconcile_with)
            daily_inputs = [name for name in spec.inputs if self.sources[name].is_daily]
            if spec.is_daily != bool(daily_inputs):
                raise FieldError(("gold", table, "partition_column"),
                                 "a gold table is partitioned by day exactly when it reads a daily source "
                                 f"(daily inputs: {daily_inputs})", spec.partition_column)
        for name, feature in self.features.items():
            where = ("features", name)
            if not self.has_table(feature.layer, feature.source):
                raise FieldError((*where, "source"), f"feature table '{name}' reads unknown {feature.layer} table "
                                 f"'{feature.source}' ({feature.layer} tables: {self.tables_in(feature.layer)})",
                                 feature.source)
            if feature.kind == "rolling" and self.partition_column(feature.layer, feature.source) is None:
                raise FieldError((*where, "source"), f"a rolling feature table needs a daily table; "
                                 f"{feature.layer}.{feature.source} is not partitioned by day", feature.source)
        spec = self.training_set
        if spec is not None:
            if spec.source not in self.gold:
                raise FieldError(("training_set", "source"), f"unknown gold table '{spec.source}' (gold tables: "
                                 f"{sorted(self.gold)})", spec.source)
            for i, lookup in enumerate(spec.lookups):
                if lookup.table not in self.features:
                    raise FieldError(("training_set", "lookups", i, "table"), f"unknown feature table "
                                     f"'{lookup.table}' (feature tables: {sorted(self.features)})", lookup.table)
            if spec.split.by == "time" and not self.gold[spec.source].is_daily:
                raise FieldError(("training_set", "split", "by"), f"a time split needs a day-partitioned source; "
                                 f"gold.{spec.source} is a snapshot: split by random or hash", spec.split.by)
            if spec.split.stratify_by and spec.split.stratify_by not in spec.labels:
                raise FieldError(("training_set", "split", "stratify_by"), f"'{spec.split.stratify_by}' is not a "
                                 f"training_set label {spec.labels}", spec.split.stratify_by)
        for name, model in self.models.items():
            if spec is None:
                raise FieldError(("models", name), "models need a training_set to learn from")
            if model.label not in spec.labels:
                raise FieldError(("models", name, "label"), f"label '{model.label}' is not a training_set label "
                                 f"{spec.labels}", model.label)
        if self.monitoring and self.monitoring.model not in self.models:
            raise FieldError(("monitoring", "model"), f"monitoring watches unknown model '{self.monitoring.model}' "
                             f"(models: {sorted(self.models)})", self.monitoring.model)
        return self

    @model_validator(mode="after")
    def _serving_fits(self) -> UseCaseConfig:
        for name, endpoint in self.serving.items():
            where = ("serving", name)
            if endpoint.model not in self.models:
                raise FieldError((*where, "model"), f"serves unknown model '{endpoint.model}' (models: "
                                 f"{sorted(self.models)})", endpoint.model)
            assert self.training_set is not None  # models need one, checked above
            store = endpoint.online_store
            lookups = {lookup.table: lookup for lookup in self.training_set.lookups}
            for i, table in enumerate(store.tables):
                if table not in lookups:
                    raise FieldError((*where, "online_store", "tables", i), f"'{table}' is not a training_set "
                                     f"lookup {sorted(lookups)}", table)
                timestamp = self.features[table].timestamp_key
                needed = [column for column, key in lookups[table].keys.items() if key != timestamp]
                absent = [column for column in needed if column not in store.keys]
                if absent:
                    raise FieldError((*where, "online_store", "keys"), f"feature table '{table}' is looked up by "
                                     f"{needed}; online_store.keys {store.keys} lack {absent}", store.keys)
            source = store.key_source
            if source is not None and not self.has_table(source.layer, source.table):
                raise FieldError((*where, "online_store", "key_source", "table"), f"unknown {source.layer} table "
                                 f"'{source.table}'", source.table)
            carried = self.carried_columns(name)
            looked_up = [column for lookup in self.training_set.lookups
                         for column in self.features[lookup.table].columns]
            served = {column for table in store.tables for column in self.features[table].columns}
            uncovered = [column for column in looked_up if column not in carried and column not in served]
            if uncovered:
                raise FieldError((*where, "online_store", "tables"), f"model features {uncovered} are neither "
                                 f"request fields nor in online_store.tables {store.tables}", store.tables)
            stray = [column for column in endpoint.fallback if column not in served or column in carried]
            if stray:
                raise FieldError((*where, "fallback"), f"names {stray}, which are not online-store features",
                                 sorted(endpoint.fallback))
            for label, record in [("single", endpoint.smoke.single),
                                  *((f"batch.{i}", r) for i, r in enumerate(endpoint.smoke.batch))]:
                missing = [column for column in carried if column not in record]
                if missing:
                    raise FieldError((*where, "smoke", *label.split(".")), f"lacks {missing}; a request carries "
                                     f"{carried}", sorted(record))
        return self

    @property
    def daily_sources(self) -> dict[str, SourceConfig]:
        return {name: s for name, s in self.sources.items() if s.is_daily}

    @property
    def snapshot_sources(self) -> dict[str, SourceConfig]:
        return {name: s for name, s in self.sources.items() if not s.is_daily}

    @property
    def is_daily(self) -> bool:
        """Whether the use case has day partitions at all (a use case of snapshots only has none)."""
        return self.partitions is not None

    def tables_in(self, layer: str) -> list[str]:
        return sorted(self.gold if layer == "gold" else self.sources)

    def has_table(self, layer: str, table: str) -> bool:
        return table in (self.gold if layer == "gold" else self.sources)

    def partition_column(self, layer: str, table: str) -> str | None:
        """The day column of a silver or gold table, None when the table is a snapshot."""
        if layer == "gold":
            return self.gold[table].partition_column
        partition = self.sources[table].partition
        return partition.column if partition else None

    def carried_columns(self, endpoint: str) -> list[str]:
        """What a request to ``endpoint`` carries: the online store's keys and the training set's request fields."""
        assert self.training_set is not None
        keys = self.serving[endpoint].online_store.keys
        return list(dict.fromkeys([*keys, *self.training_set.request_fields]))

    def with_models_in(self, namespace: str) -> UseCaseConfig:
        """This use case with its models registered as ``<namespace>.<registered_name>`` (Unity Catalog names)."""
        models = {name: model.model_copy(update={"registered_name": f"{namespace}.{model.registered_name}"})
                  for name, model in self.models.items()}
        return self.model_copy(update={"models": models})
