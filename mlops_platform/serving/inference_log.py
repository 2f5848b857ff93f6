"""The inference log: every request appended to a local spool before it is answered, then shipped to Delta.

The request path writes one JSON line per request to the current spool segment (one ``write(2)`` into the page
cache, a few microseconds) and only then answers: a process killed with ``kill -9`` a moment later has already
handed every answered request to the kernel. A writer thread tails the spool and appends what is new to the Delta
inference table in batches (every ``flush_seconds``, or as soon as ``batch_rows`` lines wait), each commit tagged
with a Delta app transaction ``(spool-<segment>, last line number)``. A process that starts on a spool holding
segments of a process that died ships those first, skipping every line the table's transaction version says was
committed: nothing is lost and nothing is written twice, even when the crash fell between a commit and anything
the writer would have noted afterwards. A segment whose lines are all committed is deleted.

A commit that fails is retried at the next flush; the lines wait in the spool meanwhile, not in memory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa

from mlops_platform.serving.inference_table import (
    INFERENCE_SCHEMA,
    INFERENCE_TABLE,
    INFERENCE_TABLE_SCHEMA,
    InferenceRecord,
    to_table,
)
from mlops_platform.storage.delta import DeltaTables

logger = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"
LOCK_FILE = ".lock"


class SpoolError(RuntimeError):
    """The spool cannot be used: its folder is held by another process, or a line cannot be written."""


class InferenceSink(Protocol):
    """Where shipped lines land: an append tagged with an app transaction, and the last version committed."""

    target: str

    def prepare(self) -> None: ...

    def append(self, data: pa.Table, app_id: str, version: int) -> None: ...

    def committed(self, app_id: str) -> int | None: ...


@dataclass(frozen=True)
class DeltaSink:
    """The inference table ``schema.table`` of a Delta folder tree."""

    tables: DeltaTables
    schema: str = INFERENCE_SCHEMA
    table: str = INFERENCE_TABLE

    @property
    def target(self) -> str:
        return self.tables.full_name(self.schema, self.table)

    def prepare(self) -> None:
        self.tables.create(self.schema, self.table, INFERENCE_TABLE_SCHEMA)
        current = self.tables.schema_of(self.schema, self.table)
        if current is not None and current.names != INFERENCE_TABLE_SCHEMA.names:
            raise SpoolError(f"{self.target} at {self.tables.path(self.schema, self.table)} has columns "
                             f"{current.names}, not the inference table's {INFERENCE_TABLE_SCHEMA.names}: move it "
                             "aside (a log written by an older version) and start again")

    def append(self, data: pa.Table, app_id: str, version: int) -> None:
        self.tables.append(self.schema, self.table, data, app_id=app_id, app_version=version)

    def committed(self, app_id: str) -> int | None:
        return self.tables.transaction_version(self.schema, self.table, app_id)


class Spool:
    """Append-only segment files of JSON lines in ``folder``, held by one process at a time."""

    def __init__(self, folder: str | Path, *, max_segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.folder = Path(folder)
        self.max_segment_bytes = max_segment_bytes
        self.current: Path | None = None
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._size = 0
        self.lines = 0
        # Segments this process wrote; the others were left by a process that stopped before shipping them.
        self.own: set[str] = set()

    def open(self) -> Spool:
        self.folder.mkdir(parents=True, exist_ok=True)
        lock_path = self.folder / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise SpoolError(f"the inference spool {self.folder} is in use by pid {holder}: one serving process "
                             "per serving folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        self._rotate()
        return self

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        # Names sort in creation order, so segments ship oldest first.
        self.current = self.folder / f"{time.time_ns():020d}-{os.getpid()}{SEGMENT_SUFFIX}"
        self._fd = os.open(self.current, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.own.add(self.current.name)
        self._size = 0

    def append(self, line: bytes) -> None:
        """Write one line (ending in a newline) to the current segment before the request is answered."""
        if self._fd is None:
            raise SpoolError("the inference spool is not open")
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(line)
        self.lines += 1
        if self._size >= self.max_segment_bytes:
            self._rotate()

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def segments(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{SEGMENT_SUFFIX}"))

    def close_segment(self) -> None:
        """Stop appending: the current segment becomes an ordinary finished one."""
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        self.current = None

    def close(self) -> None:
        self.close_segment()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def app_id(segment: Path) -> str:
    return f"spool-{segment.stem}"


@dataclass
class _Cursor:
    """How far a segment is shipped: the byte offset and line number read so far, the last line committed."""

    offset: int = 0
    next_line: int = 0
    committed: int = -1


class InferenceLogger:
    """The spool the request path appends to, and the thread that ships it to the inference table."""

    def __init__(self, spool: Spool, sink: InferenceSink, *, batch_rows: int = 1_000, flush_seconds: float = 1.0,
                 max_batch_rows: int = 20_000) -> None:
        self.spool = spool
        self.sink = sink
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_batch_rows = max_batch_rows
        self._cursors: dict[str, _Cursor] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ship_lock = threading.Lock()
        self._unshipped_since_wake = 0
        self._closed = False
        self.written = 0
        self.commits = 0
        self.recovered = 0
        self.write_failures = 0
        self.torn_lines = 0
        self.last_error: str | None = None

    @classmethod
    def to_delta(cls, warehouse_root: str | Path, catalog: str, spool_dir: str | Path, *,
                 schema: str = INFERENCE_SCHEMA, table: str = INFERENCE_TABLE, **options: Any) -> InferenceLogger:
        return cls(Spool(spool_dir), DeltaSink(DeltaTables(warehouse_root, catalog), schema, table), **options)

    @property
    def target(self) -> str:
        return self.sink.target

    def start(self) -> InferenceLogger:
        """Create the table if needed, take the spool and start the writer, which first ships any segments a
        previous process left. Done before the first request: an unwritable warehouse or a spool held by another
        process fails the start-up, not a request."""
        if self._thread is None:
            to_table([])  # pyarrow's first conversion costs a second; paid here, not by a request
            self.sink.prepare()
            self.spool.open()
            self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
            self._thread.start()
        return self

    def log(self, record: InferenceRecord) -> None:
        """Append ``record`` to the spool; raises OSError when it cannot be written (the request must not be
        answered as if it were logged)."""
        self.spool.append(orjson.dumps(tuple(record)) + b"\n")
        self._unshipped_since_wake += 1
        if self._unshipped_since_wake >= self.batch_rows:
            self._unshipped_since_wake = 0
            self._wake.set()

    def flush(self) -> None:
        """Ship everything spooled so far, now (raises when the table refuses it)."""
        self._ship()

    def close(self, timeout: float = 60.0) -> None:
        """Ship everything spooled, stop the writer and release the spool. Lines the table refused stay in the
        spool for the next start. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("inference log: writer still busy after %.0f s; the spool keeps the rest", timeout)
        self.spool.close_segment()
        try:
            self._ship()
        except Exception as error:  # noqa: BLE001 - kept in the spool for the next start; reported
            self._failed(error)
        self.spool.close()

    def stats(self) -> dict[str, Any]:
        segments = self.spool.segments() if self.spool.folder.is_dir() else []
        return {
            "table": self.target,
            "spool": str(self.spool.folder),
            "spooled": self.spool.lines,
            "written": self.written,
            "recovered": self.recovered,
            "commits": self.commits,
            "segments": len(segments),
            "backlog_bytes": sum(s.stat().st_size for s in segments if s.exists()) - sum(
                c.offset for name, c in self._cursors.items() if (self.spool.folder / name).exists()),
            "write_failures": self.write_failures,
            "torn_lines": self.torn_lines,
            "last_error": self.last_error,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._ship()
            except Exception as error:  # noqa: BLE001 - retried at the next flush, never lost: the spool keeps it
                self._failed(error)
            self._wake.wait(self.flush_seconds)
            self._wake.clear()

    def _failed(self, error: BaseException) -> None:
        self.write_failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        logger.error("inference log: shipping to %s failed: %s", self.target, self.last_error)

    def _ship(self) -> None:
        with self._ship_lock:
            self.spool.sync()
            for segment in self.spool.segments():
                live = segment == self.spool.current
                if self._ship_segment(segment, live=live):
                    segment.unlink(missing_ok=True)
                    self._cursors.pop(segment.name, None)

    def _ship_segment(self, segment: Path, *, live: bool) -> bool:
        """Commit the lines of ``segment`` the table does not hold yet; True once a finished segment is all in.

        The live segment (still appended to) may end in a line being written; a finished one that does was cut
        off by a crash before its request was answered."""
        cursor = self._cursors.get(segment.name)
        if cursor is None:
            committed = self.sink.committed(app_id(segment))
            cursor = self._cursors[segment.name] = _Cursor(committed=-1 if committed is None else committed)
        with segment.open("rb") as handle:
            handle.seek(cursor.offset)
            data = handle.read()
        complete = data.rfind(b"\n") + 1
        pending: list[tuple[int, list[Any]]] = []
        line_number = cursor.next_line
        for line in data[:complete].splitlines():
            if line_number > cursor.committed:
                pending.append((line_number, orjson.loads(line)))
            line_number += 1
        for start in range(0, len(pending), self.max_batch_rows):
            chunk = pending[start:start + self.max_batch_rows]
            self.sink.append(to_table([record for _, record in chunk]), app_id(segment), chunk[-1][0])
            cursor.committed = chunk[-1][0]
            self.commits += 1
            if segment.name in self.spool.own:
                self.written += len(chunk)
            else:
                self.recovered += len(chunk)
        cursor.offset += complete
        cursor.next_line = line_number
        if live:
            return False
        if complete < len(data):
            self.torn_lines += 1
            logger.warning("inference log: %s ends in a partial line (%d bytes), not shipped", segment,
                           len(data) - complete)
        return True
