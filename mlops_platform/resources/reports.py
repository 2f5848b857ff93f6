"""Where human-facing reports (HTML drift pages, plots) are kept; assets link them from their metadata."""

from __future__ import annotations

from pathlib import Path

import dagster as dg


class ReportStore(dg.ConfigurableResource):
    root: str

    def path(self, *parts: str) -> Path:
        path = Path(self.root).joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
