"""The persistent local Dagster instance: ``.dagster_home`` in the project, configured by the top-level dagster.yaml."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from mlops_platform.settings import PROJECT_ROOT

DEFAULT_HOME = PROJECT_ROOT / ".dagster_home"


def ensure_home(home: Path | None = None) -> Path:
    """Create the instance folder with dagster.yaml linked in, and point ``DAGSTER_HOME`` at it."""
    home = Path(os.environ.get("DAGSTER_HOME") or home or DEFAULT_HOME)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.symlink_to(PROJECT_ROOT / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def persistent_instance() -> dg.DagsterInstance:
    ensure_home()
    return dg.DagsterInstance.get()
