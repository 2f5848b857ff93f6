"""The inference log: the spool the request path writes before answering, and its exactly-once shipping to Delta.

Crashes are simulated where they can happen: a process that stops without closing (its spool left behind), a
commit that lands but whose writer dies before noting it, a line cut off mid-write, a table that refuses commits.
Every case checks the real Delta table's rows and its app-transaction versions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from mlops_platform.polling import poll_until
from mlops_platform.serving.inference_log import DeltaSink, InferenceLogger, Spool, SpoolError, app_id
from mlops_platform.serving.inference_table import INFERENCE_TABLE_SCHEMA, InferenceRecord, json_objects
from mlops_platform.storage.delta import DeltaTables

pytestmark = pytest.mark.timeout(120)


def record(i: int, status: int = 200) -> InferenceRecord:
    ok = status == 200
    return InferenceRecord(
        databricks_request_id=f"r{i}", client_request_id=f"client-{i % 3}", request_time_us=1_700_000_000_250_000 + i,
        status_code=status, latency_ms=0.4, request='{"dataframe_records":[{"flight_id":1}]}',
        response='{"predictions":[{"probability":0.25,"label":0}]}' if ok else '{"error_code":"MISSING_FIELD"}',
        served_entity_id="champion", requester="127.0.0.1", usecase="flights", endpoint_name="flights-delay",
        served_model_name="flights_delay", served_model_version="3",
        features=json_objects(["temp", "origin"], [(50.5, "JFK")]) if ok else None, fallback_records=0,
    )


def logger_at(tmp_path: Path, **options) -> tuple[InferenceLogger, DeltaTables]:
    tables = DeltaTables(tmp_path / "warehouse", "test")
    return InferenceLogger(Spool(tmp_path / "spool"), DeltaSink(tables), **options), tables


def logged_ids(tables: DeltaTables) -> list[str]:
    return tables.read("monitoring", "inference_log", columns=["databricks_request_id"]).column(0).to_pylist()


def test_records_become_rows_of_the_ai_gateway_schema(tmp_path: Path) -> None:
    logger, tables = logger_at(tmp_path)
    logger.start()
    logger.log(record(1))
    logger.log(record(2, status=400))
    logger.close()

    table = tables.read("monitoring", "inference_log")
    assert table.schema.names == INFERENCE_TABLE_SCHEMA.names
    first, second = sorted(table.to_pylist(), key=lambda row: row["databricks_request_id"])
    assert (first["status_code"], second["status_code"]) == (200, 400)
    assert str(first["request_date"]) == "2023-11-14" and first["request_time"].microsecond == 250_001
    assert json.loads(first["features"]) == [{"temp": 50.5, "origin": "JFK"}]
    assert (first["sampling_fraction"], first["execution_duration_ms"], second["features"]) == (1.0, 1, None)
    assert not list((tmp_path / "spool").glob("*.jsonl")), "a clean close leaves nothing to ship"


def test_a_line_is_in_the_spool_as_soon_as_log_returns(tmp_path: Path) -> None:
    logger, _ = logger_at(tmp_path, flush_seconds=3600)
    logger.start()
    logger.log(record(7))

    (segment,) = (tmp_path / "spool").glob("*.jsonl")
    assert json.loads(segment.read_bytes().splitlines()[0])[0] == "r7"
    logger.close()


def test_segments_left_by_a_dead_process_are_shipped_once_by_the_next(tmp_path: Path) -> None:
    # A child process spools 50 requests and is killed without closing anything.
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from mlops_platform_tests.serving.test_inference_log import logger_at, record
from pathlib import Path
logger, _ = logger_at(Path({str(tmp_path)!r}), flush_seconds=3600)
logger.start()
for i in range(50):
    logger.log(record(i))
os.kill(os.getpid(), signal.SIGKILL)
"""
    killed = subprocess.run([sys.executable, "-c", script], check=False)
    assert killed.returncode == -9
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 1

    logger, tables = logger_at(tmp_path)
    logger.start()
    logger.flush()
    logger.close()

    assert sorted(logged_ids(tables)) == sorted(f"r{i}" for i in range(50))
    assert logger.stats()["recovered"] == 50 and not list((tmp_path / "spool").glob("*.jsonl"))


def test_a_commit_that_landed_before_a_crash_is_not_written_again(tmp_path: Path) -> None:
    tables = DeltaTables(tmp_path / "warehouse", "test")
    sink = DeltaSink(tables)
    spool = Spool(tmp_path / "spool").open()
    first = InferenceLogger(spool, sink, flush_seconds=3600)
    sink.prepare()
    for i in range(10):
        first.log(record(i))
    first.flush()  # committed with its transaction version ...
    for i in range(10, 15):
        first.log(record(i))
    segment = spool.current
    spool.close()  # ... then the process dies: the next one finds the whole segment and the table's version.
    assert tables.transaction_version("monitoring", "inference_log", app_id(segment)) == 9

    second, _ = logger_at(tmp_path)
    second.start()
    second.close()

    ids = logged_ids(tables)
    assert sorted(ids) == sorted(f"r{i}" for i in range(15)) and len(ids) == len(set(ids))


def test_a_line_cut_off_mid_write_is_not_shipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool").open()
    spool.append(json.dumps(list(record(1))).encode() + b"\n")
    os.write(spool._fd, b'["r2", "client')  # the crash came mid-write; that request was never answered
    spool.close()

    logger, tables = logger_at(tmp_path)
    logger.start()
    logger.close()

    assert logged_ids(tables) == ["r1"]
    assert logger.stats()["torn_lines"] == 1


class FailingSink(DeltaSink):
    failures = 2

    def append(self, data: pa.Table, app_id: str, version: int) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        super().append(data, app_id, version)


def test_a_refused_commit_is_retried_and_nothing_waits_in_memory(tmp_path: Path) -> None:
    tables = DeltaTables(tmp_path / "warehouse", "test")
    logger = InferenceLogger(Spool(tmp_path / "spool"), FailingSink(tables), flush_seconds=0.05)
    logger.start()
    for i in range(20):
        logger.log(record(i))
    poll_until(lambda: logger.stats()["written"] >= 20, 30, interval=0.05)
    logger.close()

    assert sorted(logged_ids(tables)) == sorted(f"r{i}" for i in range(20))
    assert logger.stats()["write_failures"] == 2 and "disk full" in logger.stats()["last_error"]


def test_a_table_that_never_accepts_keeps_the_spool_for_the_next_start(tmp_path: Path) -> None:
    class Refusing(DeltaSink):
        def append(self, data: pa.Table, app_id: str, version: int) -> None:
            raise OSError("warehouse unreachable")

    tables = DeltaTables(tmp_path / "warehouse", "test")
    logger = InferenceLogger(Spool(tmp_path / "spool"), Refusing(tables), flush_seconds=3600)
    logger.start()
    logger.log(record(1))
    logger.close()
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 1

    again, _ = logger_at(tmp_path)
    again.start()
    again.close()
    assert logged_ids(tables) == ["r1"]


def test_a_full_batch_ships_without_waiting_for_the_interval(tmp_path: Path) -> None:
    logger, tables = logger_at(tmp_path, batch_rows=100, flush_seconds=3600)
    logger.start()
    for i in range(100):
        logger.log(record(i))
    poll_until(lambda: logger.stats()["written"] >= 100, 30, interval=0.02)
    assert logger.stats()["written"] == 100 and len(logged_ids(tables)) == 100
    logger.close()


def test_one_process_at_a_time_holds_a_spool(tmp_path: Path) -> None:
    holder = Spool(tmp_path / "spool").open()
    try:
        with pytest.raises(SpoolError, match=f"in use by pid {os.getpid()}"):
            Spool(tmp_path / "spool").open()
    finally:
        holder.close()


def test_segments_rotate_and_finished_ones_are_deleted_once_shipped(tmp_path: Path) -> None:
    tables = DeltaTables(tmp_path / "warehouse", "test")
    logger = InferenceLogger(Spool(tmp_path / "spool", max_segment_bytes=2_000), DeltaSink(tables),
                             flush_seconds=3600)
    logger.start()
    for i in range(30):
        logger.log(record(i))
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) > 3
    logger.flush()

    assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 1, "only the live segment stays"
    logger.close()
    assert sorted(logged_ids(tables)) == sorted(f"r{i}" for i in range(30))
