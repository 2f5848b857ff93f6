"""Where human-facing reports (HTML drift pages, plots) are kept; assets link them from their metadata."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

# Beside the reports, not among them: the cached reference baselines are data for monitoring, not pages to read.
REFERENCE_CACHE = "monitoring_reference_cache"


class ReportStore(dg.ConfigurableResource):
    root: str

    def path(self, *parts: str) -> Path:
        path = Path(self.root).joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def reference_cache(self, *parts: str) -> Path:
        """The folder of a model's cached reference baselines (``monitoring.reference.ReferenceCache``)."""
        return Path(self.root).resolve().parent.joinpath(REFERENCE_CACHE, *parts)
