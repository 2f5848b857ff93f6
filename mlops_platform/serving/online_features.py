"""The rows of an endpoint's online store, built from the feature tables in the warehouse.

One row per key combination (``online_store.keys``) seen in the newest ``key_source.days`` of the key source table;
each feature table contributes its newest row (by its timestamp key) per lookup key, joined on the same columns the
training set joins it on. A key combination that a table has no row for gets nulls there, as a training row whose
lookup found nothing; those misses are counted per table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import polars as pl
import pyarrow as pa

from mlops_platform import names
from mlops_platform.settings import UseCaseConfig
from mlops_platform.transforms.features import feature_columns


class TableReader(Protocol):
    """What building a store reads: tables by ``schema.table`` and their versions (the warehouse resource is one)."""

    def read(self, schema: str, table: str, *, columns: Sequence[str] | None = None) -> pa.Table: ...

    def version(self, schema: str, table: str) -> int | None: ...


@dataclass(frozen=True)
class OnlineStoreBuild:
    table: pa.Table
    first_day: dt.date | None
    last_day: dt.date | None
    missing_keys: dict[str, int]
    table_versions: dict[str, int]


def carried_columns(usecase: UseCaseConfig, endpoint: str) -> list[str]:
    """What every request carries: the store keys, then the training set's request fields."""
    return usecase.carried_columns(endpoint)


def store_features(usecase: UseCaseConfig, endpoint: str) -> list[str]:
    """Model inputs the endpoint looks up in its online store, in the model's feature order."""
    carried = set(carried_columns(usecase, endpoint))
    return [column for column in feature_columns(usecase) if column not in carried]


def _key_spine(usecase: UseCaseConfig, endpoint: str, warehouse: TableReader
               ) -> tuple[pl.DataFrame, dt.date | None, dt.date | None]:
    spec = usecase.serving[endpoint].online_store
    source = spec.key_source
    if source is None:
        # No keys: the store is one row, the newest of each table, whatever a request carries.
        return pl.DataFrame({"_row": [0]}), None, None
    date_column = usecase.partition_column(source.layer, source.table)
    columns = [*spec.keys, *([date_column] if date_column else [])]
    frame = pl.from_arrow(warehouse.read(*names.table(usecase.name, source.layer, source.table), columns=columns))
    first = last = None
    if date_column and frame.height:
        last = frame[date_column].max()
        first = last - dt.timedelta(days=source.days - 1)
        frame = frame.filter(pl.col(date_column) >= first)
    return frame.select(spec.keys).drop_nulls().unique().sort(spec.keys), first, last


def build_online_store(usecase: UseCaseConfig, endpoint: str, warehouse: TableReader) -> OnlineStoreBuild:
    """The online store of ``endpoint``: keys, then every store feature, one row per key combination."""
    assert usecase.training_set is not None
    spec = usecase.serving[endpoint].online_store
    lookups = {lookup.table: lookup for lookup in usecase.training_set.lookups}
    store, first, last = _key_spine(usecase, endpoint, warehouse)
    missing, versions = {}, {}
    for table in spec.tables:
        feature_spec = usecase.features[table]
        to_row_names = {key: column for column, key in lookups[table].keys.items()
                        if key != feature_spec.timestamp_key}
        location = names.table(usecase.name, names.FEATURES, table)
        frame = pl.from_arrow(warehouse.read(*location))
        versions[table] = warehouse.version(*location)
        if feature_spec.timestamp_key:
            # The newest row per key is what a request made now would be scored with.
            frame = frame.sort(feature_spec.timestamp_key, descending=True)
        newest = ((frame.unique(subset=list(to_row_names), keep="first") if to_row_names else frame.head(1))
                  .rename(to_row_names)
                  .select(*to_row_names.values(), *feature_spec.columns)
                  .with_columns(pl.lit(True).alias("_found")))
        store = (store.join(newest, on=list(to_row_names.values()), how="left") if to_row_names
                 else store.join(newest.head(1), how="cross"))
        missing[table] = int(store["_found"].is_null().sum())
        store = store.drop("_found")
    columns = [*spec.keys, *store_features(usecase, endpoint)]
    return OnlineStoreBuild(store.select(columns).to_arrow(), first, last, missing, versions)
