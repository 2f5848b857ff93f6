"""Feature tables published to Databricks' Online Feature Store (Lakebase), for Model Serving's lookups by key.

This is what ``databricks-feature-engineering`` (0.13 and later) does in ``create_online_store`` and
``publish_table``: both are the Feature Store REST API (``/api/2.0/feature-store/online-stores``,
``/api/2.0/feature-store/tables/{name}/publish``), which databricks-sdk 0.60 already has as
``WorkspaceClient.feature_store``. The package itself does not install beside the project's pins (its Lakebase
releases need databricks-sdk 0.62 or later, and Flask below 3), so the same calls are made here.

A table must be a feature table to be published: a primary key (its timestamp key marked ``TIMESERIES``, so the
online table keeps the newest row per key) on non-null columns, and its change data feed on, which every publish
mode syncs from. Whatever of that is missing is added with ``ALTER TABLE`` statements; a table already prepared
gets none. A model logged with its feature lookups (``mlops_platform.ml.feature_lookups``) then has its features
joined by key at serving time, from ``<feature table>_online``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound
from databricks.sdk.service.catalog import TableInfo
from databricks.sdk.service.ml import OnlineStore, OnlineStoreState, PublishSpec, PublishSpecPublishMode

from mlops_platform.polling import poll_until
from mlops_platform.resources.unity_catalog import quote_name

ONLINE_TABLE_SUFFIX = "_online"
CHANGE_DATA_FEED = "delta.enableChangeDataFeed"
PRIMARY_KEY_SUFFIX = "_pk"


class OnlineStoreError(RuntimeError):
    """The online store is unusable or a feature table cannot be published; the message names which."""


def online_table_name(feature_table: str) -> str:
    """The online table a feature table (``catalog.schema.table``) is published as."""
    return f"{feature_table}{ONLINE_TABLE_SUFFIX}"


@dataclass(frozen=True)
class FeatureTableSpec:
    """A feature table by full name, its primary-key columns and its timestamp key (part of the key), if any."""

    full_name: str
    primary_keys: tuple[str, ...]
    timestamp_key: str | None = None

    @property
    def key_columns(self) -> tuple[str, ...]:
        return (*self.primary_keys, *([self.timestamp_key] if self.timestamp_key else []))


@dataclass(frozen=True)
class PublishedTable:
    source: str
    online_table: str
    pipeline_id: str | None
    prepared: tuple[str, ...] = ()


@dataclass(frozen=True)
class OnlinePublish:
    store: str
    store_created: bool
    tables: list[PublishedTable] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "online_store": self.store,
            "online_store_created": self.store_created,
            "online_tables": {t.source: t.online_table for t in self.tables},
            "sync_pipelines": {t.source: t.pipeline_id for t in self.tables},
            "feature_table_changes": {t.source: list(t.prepared) for t in self.tables if t.prepared},
        }


def feature_table_statements(spec: FeatureTableSpec, table: TableInfo) -> list[str]:
    """The ``ALTER TABLE`` statements that make ``table`` a publishable feature table (none when it is one)."""
    name = quote_name(*spec.full_name.split("."))
    columns = {column.name: column for column in table.columns or []}
    missing = [c for c in spec.key_columns if c not in columns]
    if missing:
        raise OnlineStoreError(f"feature table {spec.full_name} has no key column(s) {missing}; it has "
                               f"{sorted(columns)}")
    statements = [f"ALTER TABLE {name} ALTER COLUMN {quote_name(c)} SET NOT NULL"
                  for c in spec.key_columns if columns[c].nullable is not False]
    primary = [c.primary_key_constraint for c in table.table_constraints or [] if c.primary_key_constraint]
    if not primary:
        keys = [quote_name(c) + (" TIMESERIES" if c == spec.timestamp_key else "") for c in spec.key_columns]
        constraint = quote_name(spec.full_name.split(".")[-1] + PRIMARY_KEY_SUFFIX)
        statements.append(f"ALTER TABLE {name} ADD CONSTRAINT {constraint} PRIMARY KEY ({', '.join(keys)})")
    else:
        (existing,) = primary
        timeseries = list(existing.timeseries_columns or [])
        if list(existing.child_columns) != list(spec.key_columns) or timeseries != (
                [spec.timestamp_key] if spec.timestamp_key else []):
            raise OnlineStoreError(
                f"feature table {spec.full_name} has primary key {existing.name} on {existing.child_columns} "
                f"(timeseries {timeseries}), the use case declares keys {list(spec.key_columns)} with timestamp key "
                f"{spec.timestamp_key}: drop the constraint or fix the use case")
    if (table.properties or {}).get(CHANGE_DATA_FEED, "").lower() != "true":
        statements.append(f"ALTER TABLE {name} SET TBLPROPERTIES ({CHANGE_DATA_FEED} = true)")
    return statements


class OnlineFeatureStore:
    """One Lakebase online store of a workspace, created on first use."""

    def __init__(self, client: WorkspaceClient, name: str, capacity: str, publish_mode: str, *,
                 available_timeout_seconds: float, poll_seconds: float = 10.0) -> None:
        self.client = client
        self.name = name
        self.capacity = capacity
        self.publish_mode = PublishSpecPublishMode(publish_mode)
        self.available_timeout_seconds = available_timeout_seconds
        self.poll_seconds = poll_seconds

    def ensure_available(self) -> bool:
        """Wait until the store is AVAILABLE, creating it when it does not exist; True when it was created."""
        store_api = self.client.feature_store
        created = False
        try:
            store = store_api.get_online_store(self.name)
        except NotFound:
            store = store_api.create_online_store(OnlineStore(name=self.name, capacity=self.capacity))
            created = True
        stuck = (OnlineStoreState.STOPPED, OnlineStoreState.DELETING)
        # The state in hand first, then the workspace's every poll_seconds: it sends no notice of a change.
        states = itertools.chain([store.state], iter(lambda: store_api.get_online_store(self.name).state, None))
        state = store.state

        def settled() -> bool:
            nonlocal state
            state = next(states)
            return state == OnlineStoreState.AVAILABLE or state in stuck

        poll_until(settled, self.available_timeout_seconds, interval=self.poll_seconds)
        if state in stuck:
            raise OnlineStoreError(f"online store {self.name} is {state.value}: start it (or pick another "
                                   "name) before publishing features to it")
        if state != OnlineStoreState.AVAILABLE:
            raise OnlineStoreError(f"online store {self.name} was not AVAILABLE after "
                                   f"{self.available_timeout_seconds:g} s (state {state})")
        return created

    def publish(self, tables: Sequence[FeatureTableSpec], statement: Callable[[str], Any]) -> OnlinePublish:
        """Publish ``tables``, each prepared as a feature table first with ``statement`` (a SQL runner)."""
        created = self.ensure_available()
        published = []
        for spec in tables:
            try:
                info = self.client.tables.get(spec.full_name)
            except NotFound as error:
                raise OnlineStoreError(f"feature table {spec.full_name} does not exist: materialize it before "
                                       "publishing it") from error
            prepared = feature_table_statements(spec, info)
            for sql in prepared:
                statement(sql)
            response = self.client.feature_store.publish_table(
                source_table_name=spec.full_name,
                publish_spec=PublishSpec(online_store=self.name, online_table_name=online_table_name(spec.full_name),
                                         publish_mode=self.publish_mode))
            published.append(PublishedTable(spec.full_name, response.online_table_name
                                            or online_table_name(spec.full_name), response.pipeline_id,
                                            tuple(prepared)))
        return OnlinePublish(self.name, created, published)
