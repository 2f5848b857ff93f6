"""The Databricks workspace the heavy steps of a Databricks environment are submitted to, through Dagster Pipes.

Credentials come from environment variables through ``dg.EnvVar``: building the definitions reads nothing, and
an unset variable fails only the step that needs the workspace, naming the variable. The ``WorkspaceClient`` is
created per step for the same reason (it raises at construction without credentials).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from mlops_platform.settings import DatabricksConfig

if TYPE_CHECKING:
    from dagster_databricks import PipesDatabricksClient
    from dagster_databricks.pipes import PipesDatabricksServerlessClient
    from databricks.sdk import WorkspaceClient


class DatabricksWorkspace(dg.ConfigurableResource):
    """A Databricks workspace reached with a personal access token or a service principal's token."""

    host: str = Field(description="workspace URL, e.g. https://dbc-1234.cloud.databricks.com")
    token: str = Field(description="access token of the identity the job runs as")
    poll_interval_seconds: float = Field(default=10, description="how often the run's state is polled")

    def workspace_client(self) -> WorkspaceClient:
        # Imported here: the SDK costs seconds at start-up and only a Databricks environment uses it.
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient(host=self.host, token=self.token)

    def pipes_client(self) -> PipesDatabricksClient:
        # Only the orchestrator submits jobs, and only it has dagster-databricks: its dependency on pyspark from
        # PyPI must not reach a Databricks runtime (see mlops_platform.resources.spark).
        from dagster_databricks import PipesDatabricksClient

        # The client's defaults carry the Pipes context and messages through DBFS temporary files, which the
        # remote entry point reads and writes with the matching DBFS loader and writer.
        return PipesDatabricksClient(client=self.workspace_client(), poll_interval_seconds=self.poll_interval_seconds)

    def serverless_pipes_client(self, volume_path: str) -> PipesDatabricksServerlessClient:
        from dagster_databricks.pipes import PipesDatabricksServerlessClient

        # Serverless tasks see no DBFS: context and messages go through temporary files under ``volume_path``,
        # which the remote entry point reads and writes with the matching Unity Catalog volume loader and writer.
        return PipesDatabricksServerlessClient(client=self.workspace_client(), volume_path=volume_path,
                                               poll_interval_seconds=self.poll_interval_seconds)


def databricks_workspace(config: DatabricksConfig) -> DatabricksWorkspace:
    return DatabricksWorkspace(host=dg.EnvVar(config.host_env), token=dg.EnvVar(config.token_env),
                               poll_interval_seconds=config.poll_interval_seconds)
