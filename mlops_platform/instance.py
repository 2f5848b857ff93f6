"""The persistent local Dagster instance: ``.dagster_home`` in the project, configured by the top-level dagster.yaml."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import dagster as dg
from sqlalchemy import event
from sqlalchemy.engine import Engine

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


def persistent_instance(*, durable: bool = True) -> dg.DagsterInstance:
    """The instance under ``DAGSTER_HOME``; ``durable=False`` trades crash safety of its SQLite files for speed.

    A replayed day writes about 90 events through some 450 SQLite commits and connection closes, each waiting
    for an fsync: on a virtual disk (2.7 ms per fsync here) that was a quarter of the day's run. Without it, a
    power cut could lose or corrupt run history, which a replay can rebuild; the production profile is PostgreSQL.
    """
    ensure_home()
    if not durable:
        _skip_sqlite_fsync()
    return dg.DagsterInstance.get()


def _no_fsync(connection, _record) -> None:
    if isinstance(connection, sqlite3.Connection):
        connection.execute("PRAGMA synchronous=OFF")


def _skip_sqlite_fsync() -> None:
    if not event.contains(Engine, "connect", _no_fsync):
        event.listen(Engine, "connect", _no_fsync)
