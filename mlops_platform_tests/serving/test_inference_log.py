"""The inference log writer: batching, a full queue, failing commits, and the flush at close."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from mlops_platform.serving.inference_log import (
    INFERENCE_LOG_SCHEMA,
    InferenceLogger,
    InferenceRecord,
    json_objects,
)

pytestmark = pytest.mark.timeout(60)


def record(i: int, status: int = 200) -> InferenceRecord:
    ok = status == 200
    return InferenceRecord(
        request_id=f"r{i}", timestamp=1_700_000_000.25 + i, endpoint="flights", served_model="champion",
        model_name="flights_delay", model_version="3", status_code=status,
        error_code=None if ok else "MISSING_FIELD", latency_ms=0.4, n_records=1 if ok else 0, n_fallbacks=0,
        keys=json_objects(["flight_id"], [(i,)]) if ok else None,
        features=json_objects(["temp", "origin"], [(50.5, "JFK")]) if ok else None,
        predictions=b"[[0.25,0.75]]" if ok else None,
    )


class Sink:
    """Collects written tables; can be told to fail or to stall, like a Delta commit under trouble."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.failures_left = 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self, table: pa.Table) -> None:
        self.release.wait(30)
        if self.failures_left:
            self.failures_left -= 1
            raise OSError("disk full")
        self.tables.append(table)

    @property
    def ids(self) -> list[str]:
        return [rid for table in self.tables for rid in table.column("request_id").to_pylist()]


def test_records_become_rows_of_the_inference_schema() -> None:
    sink = Sink()
    logger = InferenceLogger(sink)
    logger.log(record(1))
    logger.log(record(2, status=400))
    logger.close()
    (table,) = sink.tables
    assert table.schema == INFERENCE_LOG_SCHEMA
    first, second = table.to_pylist()
    assert json.loads(first["features"]) == [{"temp": 50.5, "origin": "JFK"}]
    assert json.loads(first["keys"]) == [{"flight_id": 1}]
    assert json.loads(first["predictions"]) == [[0.25, 0.75]]
    assert (first["n_records"], second["n_records"]) == (1, 0)
    assert first["timestamp"] == dt.datetime(2023, 11, 14, 22, 13, 21, 250000, tzinfo=dt.UTC)
    assert (second["status_code"], second["error_code"], second["features"]) == (400, "MISSING_FIELD", None)


def test_a_full_batch_is_written_without_waiting_for_the_interval() -> None:
    sink = Sink()
    logger = InferenceLogger(sink, batch_rows=100, flush_seconds=60).start()
    for i in range(100):
        logger.log(record(i))
    deadline = time.monotonic() + 10
    while not sink.tables and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.ids == [f"r{i}" for i in range(100)]
    logger.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    sink = Sink()
    sink.release.clear()
    logger = InferenceLogger(sink, max_queue=50, batch_rows=10, flush_seconds=0.01).start()
    for i in range(10):
        logger.log(record(i))
    time.sleep(0.2)  # the writer now holds the first 10 in a stalled commit
    started = time.perf_counter()
    for i in range(10, 110):
        logger.log(record(i))
    assert time.perf_counter() - started < 0.5
    assert logger.stats()["dropped"] == 50
    sink.release.set()
    logger.close()
    assert len(sink.ids) == 60 and logger.stats()["written"] == 60


def test_a_failed_commit_is_retried_and_close_writes_the_rest() -> None:
    sink = Sink()
    sink.failures_left = 2
    logger = InferenceLogger(sink, flush_seconds=0.05).start()
    for i in range(30):
        logger.log(record(i))
    time.sleep(0.3)
    for i in range(30, 40):
        logger.log(record(i))
    logger.close()
    assert sorted(sink.ids, key=lambda rid: int(rid[1:])) == [f"r{i}" for i in range(40)]
    stats = logger.stats()
    assert stats["write_failures"] == 2 and "disk full" in stats["last_error"]
    assert stats["queued"] == 0 and stats["dropped"] == 0


def test_delta_target_appends_to_the_warehouse_table(tmp_path: Path) -> None:
    from mlops_platform.resources.warehouse import DeltaWarehouse

    logger = InferenceLogger.to_delta(str(tmp_path), "dev", table="inference_log_test").start()
    for i in range(5):
        logger.log(record(i))
    logger.close()
    table = DeltaWarehouse(root=str(tmp_path), catalog="dev").read("monitoring", "inference_log_test")
    assert sorted(table.column("request_id").to_pylist()) == [f"r{i}" for i in range(5)]
    assert logger.stats()["table"] == "dev.monitoring.inference_log_test"
