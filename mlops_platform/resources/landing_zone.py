"""The landing zone as a resource: where bronze finds each day's files."""

from __future__ import annotations

from pathlib import Path

import dagster as dg


class LandingZone(dg.ConfigurableResource):
    """Root folder of the landing zone (``<root>/<usecase>/<source>/<source>_<day>.<ext>``)."""

    root: str

    @property
    def path(self) -> Path:
        return Path(self.root)
