"""The landing zone as a resource: where bronze finds each day's files, and what the landing sensor sees there.

Bronze reads the files by path: locally a folder, inside a Databricks job the environment's volume as the cluster
mounts it (``/Volumes/...``). The landing sensor runs in the orchestrator, which has no such mount in a Databricks
environment: there it lists the volume through the workspace's Files API.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from mlops_platform.resources.databricks import DatabricksWorkspace


@dataclass(frozen=True)
class LandedFile:
    name: str
    modified: int  # a modification stamp that changes when the file is landed again (ns locally, ms on a volume)


class LandingZone(dg.ConfigurableResource):
    """Root folder of the landing zone (``<root>/<usecase>/<source>/<source>_<day>.<ext>``)."""

    root: str
    workspace: DatabricksWorkspace | None = Field(
        default=None, description="lists a Unity Catalog volume root from outside Databricks, via the Files API")

    @property
    def path(self) -> Path:
        return Path(self.root)

    def files(self, usecase: str, source: str) -> list[LandedFile]:
        """The files landed for one source, by name; none when its folder does not exist yet."""
        folder = f"{self.root.rstrip('/')}/{usecase}/{source}"
        if self.workspace is not None:
            from databricks.sdk.errors import NotFound

            try:
                entries = list(self.workspace.workspace_client().files.list_directory_contents(folder))
            except NotFound:
                return []
            landed = [LandedFile(entry.name, entry.last_modified) for entry in entries if not entry.is_directory]
        else:
            local = Path(folder)
            landed = ([LandedFile(path.name, path.stat().st_mtime_ns) for path in local.iterdir() if path.is_file()]
                      if local.is_dir() else [])
        return sorted(landed, key=lambda file: file.name)
