"""Data-profiling monitors on Unity Catalog tables through Databricks' data-quality API.

The data-quality API (``/api/data-quality/v1/monitors``) replaces the deprecated ``quality_monitors`` API of
Lakehouse Monitoring. databricks-sdk exposes it as ``WorkspaceClient.data_quality`` from 0.68 on; the project's
pin (below 0.61, set by dagster-databricks) predates that, so the same requests go through the SDK's own
``ApiClient`` (its authentication, retries and error types), with the bodies the newer SDK's ``Monitor`` and
``DataProfilingConfig`` serialise to. A monitor is addressed by its table's id, not its name.

Creating one is idempotent: a monitor already holding the wanted configuration is left alone (reads only), one
holding another is patched with exactly the fields that differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound

MONITORS_PATH = "/api/data-quality/v1/monitors"
TABLE = "table"
GRANULARITIES = {
    "5 minutes": "AGGREGATION_GRANULARITY_5_MINUTES", "30 minutes": "AGGREGATION_GRANULARITY_30_MINUTES",
    "1 hour": "AGGREGATION_GRANULARITY_1_HOUR", "1 day": "AGGREGATION_GRANULARITY_1_DAY",
    "1 week": "AGGREGATION_GRANULARITY_1_WEEK", "2 weeks": "AGGREGATION_GRANULARITY_2_WEEKS",
    "3 weeks": "AGGREGATION_GRANULARITY_3_WEEKS", "4 weeks": "AGGREGATION_GRANULARITY_4_WEEKS",
    "1 month": "AGGREGATION_GRANULARITY_1_MONTH", "1 year": "AGGREGATION_GRANULARITY_1_YEAR",
}
_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


class DataQualityError(RuntimeError):
    """A monitor could not be created or updated; the message names the table."""


@dataclass(frozen=True)
class TimeSeriesProfile:
    """A time-series profile of ``table`` on ``timestamp_column``, its metric tables in ``output_schema``."""

    table: str
    output_schema: str
    timestamp_column: str
    granularities: tuple[str, ...]
    slicing_exprs: tuple[str, ...] = ()
    assets_dir: str | None = None

    def profiling_config(self, output_schema_id: str) -> dict[str, Any]:
        unknown = sorted(set(self.granularities) - set(GRANULARITIES))
        if unknown:
            raise DataQualityError(f"monitor of {self.table}: unknown granularities {unknown}; known: "
                                   f"{list(GRANULARITIES)}")
        config: dict[str, Any] = {
            "output_schema_id": output_schema_id,
            "time_series": {"timestamp_column": self.timestamp_column,
                            "granularities": [GRANULARITIES[g] for g in self.granularities]},
        }
        if self.slicing_exprs:
            config["slicing_exprs"] = list(self.slicing_exprs)
        if self.assets_dir:
            config["assets_dir"] = self.assets_dir
        return config


@dataclass(frozen=True)
class MonitorOutcome:
    """``action``: created, updated, unchanged, or waiting_for_table (the table does not exist yet)."""

    action: str
    table: str
    table_id: str | None = None
    changed_fields: tuple[str, ...] = ()


def _differences(wanted: dict[str, Any], current: dict[str, Any]) -> list[str]:
    def normalised(key: str, value: Any) -> Any:
        # The service returns granularities and slices in its own order.
        if key == "slicing_exprs":
            return sorted(value or [])
        if key == "time_series" and isinstance(value, dict):
            return {**value, "granularities": sorted(value.get("granularities") or [])}
        return value

    return [key for key, value in wanted.items() if normalised(key, value) != normalised(key, current.get(key))]


class DataQualityMonitors:
    """The data-quality API of one workspace."""

    def __init__(self, client: WorkspaceClient) -> None:
        self.client = client

    def _do(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.client.api_client.do(method, path, headers=_HEADERS, **kwargs) or {}

    def get_monitor(self, object_type: str, object_id: str) -> dict[str, Any] | None:
        try:
            return self._do("GET", f"{MONITORS_PATH}/{object_type}/{object_id}")
        except NotFound:
            return None

    def ensure_profile(self, profile: TimeSeriesProfile) -> MonitorOutcome:
        """Create the monitor of ``profile.table``, or bring an existing one to ``profile``."""
        try:
            table_id = self.client.tables.get(profile.table).table_id
        except NotFound:
            return MonitorOutcome("waiting_for_table", profile.table)
        try:
            schema_id = self.client.schemas.get(profile.output_schema).schema_id
        except NotFound as error:
            raise DataQualityError(f"monitor of {profile.table}: its output schema {profile.output_schema} does not "
                                   f"exist ({error}); create it, or set data_profiling.output_schema") from error
        wanted = profile.profiling_config(schema_id)
        monitor = {"object_type": TABLE, "object_id": table_id, "data_profiling_config": wanted}
        current = self.get_monitor(TABLE, table_id)
        if current is None:
            self._do("POST", MONITORS_PATH, body=monitor)
            return MonitorOutcome("created", profile.table, table_id)
        changed = _differences(wanted, current.get("data_profiling_config") or {})
        if not changed:
            return MonitorOutcome("unchanged", profile.table, table_id)
        mask = ",".join(f"data_profiling_config.{field}" for field in changed)
        self._do("PATCH", f"{MONITORS_PATH}/{TABLE}/{table_id}", query={"update_mask": mask}, body=monitor)
        return MonitorOutcome("updated", profile.table, table_id, tuple(changed))
