"""The reference baseline of a model version, built once and kept: in this process, and on disk for the others.

Building a baseline reads the training set, types its features and scores them with the model: a fifth of a
monitored day when it was done daily. A model version never changes what it was trained on, so the baseline is
keyed by the version's MLflow run id (unique across registries, unlike a version number) and reused for every day
that version scores. The process keeps the few most recent versions; the disk copy serves the next process (a
daemon's run, a replay's worker) and is written atomically, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_platform.monitoring.day import Reference

SCORES = "__reference_score__"
_METADATA = b"mlops.reference"
# A range run or a replay sees a champion and a challenger at most at a time; more would only hold memory.
KEEP_IN_PROCESS = 2
# On disk, per model: the newest few versions (a champion, its challenger, the one before for a rollback). An older
# version that scores again is rebuilt, with the same result.
KEEP_ON_DISK = 3

_memory: OrderedDict[tuple[str, str], Reference] = OrderedDict()
_lock = threading.Lock()


def cache_key(registered_name: str, version: str, run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{registered_name}-v{version}-{run_id}")


class ReferenceCache:
    """Baselines by key (:func:`cache_key`); ``directory`` None keeps them in this process only."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def get(self, key: str, build: Callable[[], Reference]) -> tuple[Reference, str]:
        """The baseline of ``key`` and where it came from: ``memory``, ``disk`` or ``built``."""
        slot = (str(self.directory), key)
        with _lock:
            if slot in _memory:
                _memory.move_to_end(slot)
                return _memory[slot], "memory"
        reference, source = self._load(key), "disk"
        if reference is None:
            reference, source = build(), "built"
            self._save(key, reference)
        with _lock:
            _memory[slot] = reference
            while len(_memory) > KEEP_IN_PROCESS:
                _memory.popitem(last=False)
        return reference, source

    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{key}.parquet"

    def _load(self, key: str) -> Reference | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[_METADATA])
        frame = table.drop_columns([SCORES]).to_pandas()
        # Parquet gives back a missing category as None; the typed reference holds NaN, as feature_frame makes it.
        for column in frame.columns[frame.dtypes == object]:
            frame[column] = frame[column].where(frame[column].notna(), np.nan)
        return Reference(meta["model_version"], frame, table[SCORES].to_numpy(), meta["champion_quality"])

    def _save(self, key: str, reference: Reference) -> None:
        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(reference.features, preserve_index=False).append_column(
            SCORES, pa.array(np.asarray(reference.scores, dtype="float64")))
        meta = {"model_version": reference.model_version, "champion_quality": reference.champion_quality}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _METADATA: json.dumps(meta)})
        partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
        pq.write_table(table, partial)
        partial.replace(path)
        kept = sorted(self.directory.glob("*.parquet"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEEP_ON_DISK:]:
            old.unlink(missing_ok=True)


def forget_in_process() -> None:
    """Drop the baselines this process holds (tests use it to show the disk copy gives the same verdicts)."""
    with _lock:
        _memory.clear()
