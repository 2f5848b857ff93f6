"""The data-profiling monitor beside ours: off unless configured, and its failure paths, on the fake workspace.

The created/unchanged/patched/waiting paths are in ``serving/test_databricks_serving.py``; these cover the switch
(an environment without ``data_profiling`` sends nothing to the data-quality API), a missing output schema, a
refused create, and that only the data-quality API is ever called, never the deprecated quality-monitors one.
"""

from __future__ import annotations

import pytest

from mlops_platform.resources.data_quality import DataQualityError
from mlops_platform.resources.serving import ServingError
from mlops_platform.settings import load_settings
from mlops_platform_tests.remote.fake_workspace import fake_workspace
from mlops_platform_tests.serving.test_databricks_serving import PROFILING, deployment, target

PAYLOAD = "mlops_dev.monitoring.flights_delay_payload"
MONITORS = ("POST", "/api/data-quality/v1/monitors")


def test_without_data_profiling_in_config_no_monitor_is_requested() -> None:
    assert load_settings("dev").environment.databricks.serving.data_profiling is None
    with fake_workspace() as workspace:
        workspace.add_table(PAYLOAD, {"request_time": True})
        workspace.add_schema("mlops_dev.monitoring")
        outcome = target(workspace.host).deploy(deployment(), tracking_uri="databricks-uc")
    assert "data_profiling" not in outcome.detail
    assert not [path for path in workspace.paths() if "data-quality" in path or "quality-monitors" in path]


def test_a_missing_output_schema_fails_naming_the_setting() -> None:
    with fake_workspace() as workspace:
        workspace.add_table(PAYLOAD, {"request_time": True})
        with pytest.raises(DataQualityError, match=r"flights_delay_payload: its output schema mlops_dev.monitoring "
                                                   r"does not exist .*data_profiling.output_schema"):
            target(workspace.host, profiling=PROFILING).deploy(deployment(), tracking_uri="databricks-uc")
        assert not [r for r in workspace.writes() if r.path.startswith("/api/data-quality")]


def test_a_refused_monitor_create_fails_the_deploy() -> None:
    with fake_workspace() as workspace:
        workspace.add_table(PAYLOAD, {"request_time": True})
        workspace.add_schema("mlops_dev.monitoring")
        workspace.refuse[MONITORS] = (403, "PERMISSION_DENIED", "User cannot create monitors on this table")
        with pytest.raises(ServingError, match="refused a request: PermissionDenied: User cannot create monitors"):
            target(workspace.host, profiling=PROFILING).deploy(deployment(), tracking_uri="databricks-uc")
    assert "quality-monitors" not in str(workspace.paths())
