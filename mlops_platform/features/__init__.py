"""The feature store: building feature tables and training sets from the warehouse, and the registry view.

Dagster assets call these; so do the CLI and the reproducibility path (a training set rebuilt from the table
versions an MLflow run recorded).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from mlops_platform.resources.engine import Engine
from mlops_platform.resources.warehouse import DayRange, Warehouse
from mlops_platform.settings import UseCaseConfig
from mlops_platform.transforms.features import (
    feature_columns,
    lookup_features,
    rolling_features,
    training_set,
    window_pairs,
    with_features,
)

__all__ = [
    "TrainingSetBuild", "build_feature_rows", "build_scoring_rows", "build_training_set", "feature_columns",
    "feature_registry", "input_tables",
]


def build_feature_rows(usecase: UseCaseConfig, name: str, runner: Engine, warehouse: Warehouse,
                       days: DayRange | None) -> pa.Table:
    """A feature table's rows for ``days`` (rolling and daily lookups) or all of it (snapshot lookups)."""
    spec = usecase.features[name]
    if spec.kind == "lookup":
        source = usecase.sources[spec.source]
        source_days = (DayRange(source.partition.column, days.first, days.last)
                       if days is not None and source.partition else None)
        return runner.to_arrow(lookup_features(runner.read(warehouse, spec.layer, spec.source, source_days), spec))
    date_column = usecase.gold[spec.source].partition_column
    longest = dt.timedelta(days=max(spec.windows_days))
    history = DayRange(date_column, days.first - longest, days.last - dt.timedelta(days=1))
    feature_dates = [days.first + dt.timedelta(days=i) for i in range((days.last - days.first).days + 1)]
    pairs = runner.from_arrow(window_pairs(feature_dates, spec.windows_days))
    source = runner.read(warehouse, spec.layer, spec.source, history)
    return runner.to_arrow(rolling_features(source, spec, date_column, pairs))


def input_tables(usecase: UseCaseConfig) -> dict[str, tuple[str, str]]:
    """The training set's inputs as ``"schema.table" -> (schema, table)``."""
    spec = usecase.training_set
    assert spec is not None
    tables = {f"gold.{spec.source}": ("gold", spec.source)}
    tables |= {f"features.{lookup.table}": ("features", lookup.table) for lookup in spec.lookups}
    return tables


@dataclass(frozen=True)
class TrainingSetBuild:
    rows: pa.Table
    input_versions: dict[str, int]
    first_day: dt.date
    validation_start: dt.date
    test_start: dt.date
    last_day: dt.date


def build_training_set(usecase: UseCaseConfig, runner: Engine, warehouse: Warehouse,
                       input_versions: dict[str, int] | None = None) -> TrainingSetBuild:
    """The training set over the newest ``window_days`` of labels, from the given input versions (default: current).

    Pinning every input to a version is what makes a model rebuildable: the same versions give the same rows.
    """
    spec = usecase.training_set
    assert spec is not None, f"use case '{usecase.name}' has no training_set"
    tables = input_tables(usecase)
    versions = input_versions or {name: warehouse.version(*location) for name, location in tables.items()}
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        raise FileNotFoundError(f"training set inputs {missing} do not exist yet: materialize them first")

    gold_spec = usecase.gold[spec.source]
    date_column = gold_spec.partition_column
    gold_version = versions[f"gold.{spec.source}"]
    dates = warehouse.read("gold", spec.source, columns=[date_column], version=gold_version).column(date_column)
    last_day = max(dates.to_pylist())
    first_day = last_day - dt.timedelta(days=spec.window_days - 1)
    test_start = last_day - dt.timedelta(days=spec.test_days - 1)
    validation_start = test_start - dt.timedelta(days=spec.validation_days)

    window = DayRange(date_column, first_day, last_day)
    labels = runner.from_arrow(warehouse.read("gold", spec.source, days=window, version=gold_version))
    features = {
        lookup.table: runner.from_arrow(warehouse.read("features", lookup.table,
                                                      version=versions[f"features.{lookup.table}"]))
        for lookup in spec.lookups
    }
    rows = runner.to_arrow(
        training_set(labels, features, usecase, date_column=date_column,
                     keys=[date_column, *gold_spec.keys], validation_start=validation_start, test_start=test_start)
        .sort(*dict.fromkeys([date_column, *gold_spec.keys]))
    )
    return TrainingSetBuild(rows, dict(versions), first_day, validation_start, test_start, last_day)



def build_scoring_rows(usecase: UseCaseConfig, runner: Engine, warehouse: Warehouse, days: DayRange
                       ) -> pa.Table:
    """The gold rows of ``days`` with their features, joined exactly as the training set joins them."""
    spec = usecase.training_set
    assert spec is not None, f"use case '{usecase.name}' has no training_set"
    gold = usecase.gold[spec.source]
    rows = runner.read(warehouse, "gold", spec.source, days)
    features = {lookup.table: runner.read(warehouse, "features", lookup.table) for lookup in spec.lookups}
    keys = list(dict.fromkeys([gold.partition_column, *gold.keys]))
    return runner.to_arrow(with_features(rows, features, usecase, keys).sort(*keys))


def feature_registry(usecase: UseCaseConfig, warehouse: Warehouse) -> list[dict[str, object]]:
    """Every feature table: keys, freshness (last commit) and which models use it (feature -> model lineage)."""
    used_by = {lookup.table: sorted(usecase.models) for lookup in (usecase.training_set.lookups
                                                                   if usecase.training_set else [])}
    entries = []
    for name, spec in usecase.features.items():
        commit = warehouse.last_commit("features", name)
        entries.append({
            "table": warehouse.full_name("features", name),
            "kind": spec.kind,
            "keys": spec.keys,
            "timestamp_key": spec.timestamp_key,
            "features": list(spec.columns),
            "version": None if commit is None else commit.version,
            "rows": warehouse.row_count("features", name),
            "last_updated": None if commit is None else commit.at.isoformat(timespec="seconds"),
            "used_by_models": used_by.get(name, []),
        })
    return entries
