"""The feature store: building feature tables and training sets from the warehouse, and the registry view.

Dagster assets call these; so do the CLI and the reproducibility path (a training set rebuilt from the table
versions an MLflow run recorded).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import narwhals as nw
import pyarrow as pa

from mlops_platform import names
from mlops_platform.settings import UseCaseConfig
from mlops_platform.storage.tables import DayRange, Filter, TableReader
from mlops_platform.transforms.engine import Engine
from mlops_platform.transforms.features import (
    SPLIT,
    assign_split,
    feature_columns,
    lookup_features,
    rolling_features,
    split_by_date,
    window_pairs,
    with_features,
)

__all__ = [
    "TrainingSetBuild", "build_feature_rows", "build_scoring_rows", "build_training_set", "feature_columns",
    "feature_registry", "input_tables", "lookup_bounds", "row_keys",
]


def build_feature_rows(usecase: UseCaseConfig, name: str, runner: Engine, warehouse: TableReader,
                       days: DayRange | None) -> pa.Table:
    """A feature table's rows for ``days`` (rolling and daily lookups) or all of it (snapshot lookups)."""
    spec = usecase.features[name]
    source_table = names.table(usecase.name, spec.layer, spec.source)
    date_column = usecase.partition_column(spec.layer, spec.source)
    if spec.kind == "lookup":
        source_days = DayRange(date_column, days.first, days.last) if days is not None and date_column else None
        return runner.to_arrow(lookup_features(runner.read(warehouse, *source_table, source_days), spec))
    assert days is not None and date_column is not None, "a rolling feature table is built for days of a daily table"
    longest = dt.timedelta(days=max(spec.windows_days))
    history = DayRange(date_column, days.first - longest, days.last - dt.timedelta(days=1))
    feature_dates = [days.first + dt.timedelta(days=i) for i in range((days.last - days.first).days + 1)]
    pairs = runner.from_arrow(window_pairs(feature_dates, spec.windows_days))
    # Only what the windows aggregate: the source is a wide gold table, and most of a read's time is its columns.
    used = list(dict.fromkeys([*spec.group_by, date_column, *spec.aggregations]))
    source = runner.read(warehouse, *source_table, history, columns=used)
    return runner.to_arrow(rolling_features(source, spec, date_column, pairs))


def input_tables(usecase: UseCaseConfig) -> dict[str, names.TableName]:
    """The training set's inputs, by the name their versions are recorded under (``"gold.flights"``)."""
    spec = usecase.training_set
    assert spec is not None
    tables = {f"{names.GOLD}.{spec.source}": names.table(usecase.name, names.GOLD, spec.source)}
    tables |= {f"{names.FEATURES}.{lookup.table}": names.table(usecase.name, names.FEATURES, lookup.table)
               for lookup in spec.lookups}
    return tables


def row_keys(usecase: UseCaseConfig) -> list[str]:
    """The training set's primary key (its source's day column and keys): the order rows are built and trained in,
    whatever order Delta returns them in."""
    assert usecase.training_set is not None
    gold = usecase.gold[usecase.training_set.source]
    return list(dict.fromkeys([*([gold.partition_column] if gold.partition_column else []), *gold.keys]))


@dataclass(frozen=True)
class TrainingSetBuild:
    rows: pa.Table
    input_versions: dict[str, int]
    split: dict[str, object]
    first_day: dt.date | None = None
    last_day: dt.date | None = None

    def describe(self) -> str:
        window = f"{self.first_day} .. {self.last_day}, " if self.first_day else ""
        return window + ", ".join(f"{name} {value}" for name, value in self.split.items())


def build_training_set(usecase: UseCaseConfig, runner: Engine, warehouse: TableReader,
                       input_versions: dict[str, int] | None = None) -> TrainingSetBuild:
    """The training set from the given input versions (default: current), split as configured.

    Pinning every input to a version is what makes a model rebuildable: the same versions give the same rows and,
    the split being seeded or by date, the same splits.
    """
    spec = usecase.training_set
    assert spec is not None, f"use case '{usecase.name}' has no training_set"
    tables = input_tables(usecase)
    versions = input_versions or {name: warehouse.version(*location) for name, location in tables.items()}
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        raise FileNotFoundError(f"training set inputs {missing} do not exist yet: materialize them first")

    gold_table = tables[f"{names.GOLD}.{spec.source}"]
    gold_version = versions[f"{names.GOLD}.{spec.source}"]
    date_column = usecase.gold[spec.source].partition_column
    split = spec.split
    window = first_day = last_day = None
    if split.by == "time":
        assert date_column is not None
        dates = warehouse.read(*gold_table, columns=[date_column], version=gold_version).column(date_column)
        last_day = max(dates.to_pylist())
        first_day = last_day - dt.timedelta(days=split.window_days - 1)
        window = DayRange(date_column, first_day, last_day)
    labels = runner.from_arrow(warehouse.read(*gold_table, days=window, version=gold_version))
    features = {
        lookup.table: runner.from_arrow(warehouse.read(*tables[f"{names.FEATURES}.{lookup.table}"],
                                                      version=versions[f"{names.FEATURES}.{lookup.table}"]))
        for lookup in spec.lookups
    }
    keys = row_keys(usecase)
    joined = with_features(labels, features, usecase, keys)
    if split.by == "time":
        assert last_day is not None and date_column is not None
        test_start = last_day - dt.timedelta(days=split.test_days - 1)
        validation_start = test_start - dt.timedelta(days=split.validation_days)
        rows = runner.to_arrow(joined.with_columns(
            split_by_date(nw.col(date_column), validation_start, test_start).alias(SPLIT)).sort(*keys))
        described = {"by": "time", "validation_from": validation_start.isoformat(),
                     "test_from": test_start.isoformat()}
    else:
        rows = assign_split(runner.to_arrow(joined.sort(*keys)), split, split.hash_keys or keys)
        described = split.model_dump(include={"by", "seed", "validation_fraction", "test_fraction", "stratify_by"}
                                     | ({"hash_keys"} if split.by == "hash" else set()))
    return TrainingSetBuild(rows, dict(versions), described, first_day, last_day)


def build_scoring_rows(usecase: UseCaseConfig, runner: Engine, warehouse: TableReader, days: DayRange | None
                       ) -> pa.Table:
    """The gold rows of ``days`` (all of a snapshot table) with their features, joined as the training set joins
    them."""
    spec = usecase.training_set
    assert spec is not None, f"use case '{usecase.name}' has no training_set"
    rows = runner.read(warehouse, *names.table(usecase.name, names.GOLD, spec.source), days)
    bounds = lookup_bounds(usecase, runner, rows)
    features = {lookup.table: runner.read(warehouse, *names.table(usecase.name, names.FEATURES, lookup.table),
                                          filters=bounds.get(lookup.table, ()))
                for lookup in spec.lookups}
    keys = row_keys(usecase)
    return runner.to_arrow(with_features(rows, features, usecase, keys).sort(*keys))


def lookup_bounds(usecase: UseCaseConfig, runner: Engine, rows: nw.LazyFrame) -> dict[str, list[Filter]]:
    """For each lookup joined on its feature table's timestamp key: that key between the lowest and highest value
    ``rows`` join it on.

    A feature table gains rows every day while a day's rows join only that day's: read through these filters, a
    day's scoring reads the files of its own days instead of the whole history, and joins exactly the same rows
    (any feature row a row matches has its key within the bounds). Lookups without a timestamp key (snapshot
    tables), and rows with no value to bound by, read the whole table.
    """
    spec = usecase.training_set
    assert spec is not None
    joined_on = {}
    for lookup in spec.lookups:
        timestamp_key = usecase.features[lookup.table].timestamp_key
        row_column = next((row for row, feature in lookup.keys.items() if feature == timestamp_key), None)
        if row_column is not None:
            joined_on[lookup.table] = (row_column, timestamp_key)
    if not joined_on:
        return {}
    columns = sorted({row_column for row_column, _ in joined_on.values()})
    extremes = runner.to_arrow(rows.select(
        *(nw.col(column).min().alias(f"min {column}") for column in columns),
        *(nw.col(column).max().alias(f"max {column}") for column in columns),
    )).to_pylist()[0]
    bounds = {}
    for table, (row_column, timestamp_key) in joined_on.items():
        low, high = extremes[f"min {row_column}"], extremes[f"max {row_column}"]
        if low is not None:
            bounds[table] = [(timestamp_key, ">=", low), (timestamp_key, "<=", high)]
    return bounds


def feature_registry(usecase: UseCaseConfig, warehouse: TableReader) -> list[dict[str, object]]:
    """Every feature table: keys, freshness (last commit) and which models use it (feature -> model lineage)."""
    registered = sorted(model.registered_name for model in usecase.models.values())
    used_by = {lookup.table: registered for lookup in (usecase.training_set.lookups if usecase.training_set else [])}
    entries = []
    for name, spec in usecase.features.items():
        table = names.table(usecase.name, names.FEATURES, name)
        commit = warehouse.last_commit(*table)
        entries.append({
            "table": warehouse.full_name(*table),
            "kind": spec.kind,
            "keys": spec.keys,
            "timestamp_key": spec.timestamp_key,
            "features": list(spec.columns),
            "version": None if commit is None else commit.version,
            "rows": warehouse.row_count(*table),
            "last_updated": None if commit is None else commit.at.isoformat(timespec="seconds"),
            "used_by_models": used_by.get(name, []),
        })
    return entries
