"""One reader for two tables: the local inference log and a Databricks AI Gateway inference table.

The Databricks table is written by hand with the AI Gateway columns only (ids, times, status, the request and
response JSON, the served entity's id), its requests in all three Databricks formats. The same requests go through
the local logger. Serving drift's records and ``mlops inference validate`` must read both the same way.
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from mlops_platform.defs.monitoring.inputs import served_records
from mlops_platform.monitoring.analysis import validate_inference_log
from mlops_platform.resources.warehouse import DeltaWarehouse
from mlops_platform.serving.inference_log import DeltaSink, InferenceLogger, Spool
from mlops_platform.serving.inference_table import (
    DATABRICKS_COLUMNS,
    InferenceRecord,
    json_objects,
    normalize,
)
from mlops_platform.storage.delta import DeltaTables

pytestmark = pytest.mark.timeout(120)

DAY = dt.date(2013, 6, 1)
FEATURES = ["carrier", "hour", "distance"]
# (databricks id, client id, served entity, status, body): a sticky client reusing its id, a retry of the same
# payload, a refused request, and the other served entity.
REQUESTS = [
    ("d1", "client-a", "champion", 200, {"dataframe_records": [{"carrier": "UA", "hour": 5, "distance": 1400.0}]}),
    ("d2", "client-a", "champion", 200, {"dataframe_split": {"columns": FEATURES, "data": [["AA", 9, 1089.0],
                                                                                         ["B6", 6, 1576.0]]}}),
    ("d3", "client-b", "champion", 200, {"inputs": {"carrier": ["DL"], "hour": [7], "distance": [762.0]}}),
    ("d4", "client-b", "champion", 200, {"inputs": {"carrier": ["DL"], "hour": [7], "distance": [762.0]}}),
    ("d5", None, "challenger", 200, {"inputs": [{"carrier": "WN", "hour": 12, "distance": 200.0}]}),
    ("d6", None, "champion", 400, {"dataframe_records": [{"carrier": 3}]}),
]
ENTITIES = {"champion": ("flights_delay", "4"), "challenger": ("flights_delay", "5")}


def noon(index: int) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time(12), dt.UTC) + dt.timedelta(seconds=index)


def databricks_table(requests=REQUESTS) -> pa.Table:
    """What an AI Gateway inference table holds for these requests (entity ids as Databricks' opaque ids)."""
    rows = [{
        "request_date": DAY, "databricks_request_id": rid, "client_request_id": client, "request_time": noon(i),
        "status_code": status, "sampling_fraction": 1.0, "execution_duration_ms": 3 + i, "request": json.dumps(body),
        "response": json.dumps({"predictions": [{"probability": 0.2, "label": 0}]}), "served_entity_id": f"id-{entity}",
        "logging_error_codes": [], "requester": "someone@example.com",
    } for i, (rid, client, entity, status, body) in enumerate(requests)]
    table = pa.Table.from_pylist(rows)
    assert tuple(table.column_names) == DATABRICKS_COLUMNS
    return table


def local_records(requests=REQUESTS) -> list[InferenceRecord]:
    """The same requests as the local server logs them (with the scored features: here the request's fields)."""
    from mlops_platform.serving.payload import parse_records

    records = []
    for i, (rid, client, entity, status, body) in enumerate(requests):
        answered = status == 200
        rows = [tuple(r[f] for f in FEATURES) for r in parse_records(json.dumps(body).encode())] if answered else None
        records.append(InferenceRecord(
            rid, client, int(noon(i).timestamp() * 1_000_000), status, 3.0 + i, json.dumps(body), "{}", entity,
            "127.0.0.1", "flights", "flights-delay", ENTITIES[entity][0], ENTITIES[entity][1],
            None if rows is None else json_objects(FEATURES, rows), 0))
    return records


@pytest.fixture
def warehouse(tmp_path) -> DeltaWarehouse:
    warehouse = DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="test")
    warehouse.append("serving", "flights_delay_payload", databricks_table())
    logger = InferenceLogger(Spool(tmp_path / "spool"), DeltaSink(DeltaTables(tmp_path / "warehouse", "test")))
    logger.start()
    for record in local_records():
        logger.log(record)
    logger.close()
    return warehouse


DATABRICKS = {"schema": "serving", "table": "flights_delay_payload", "endpoint": "flights-delay",
              "served_entities": {f"id-{name}": version for name, version in ENTITIES.items()}}


def test_both_tables_normalize_to_the_same_requests(warehouse: DeltaWarehouse) -> None:
    local = normalize(warehouse.read("monitoring", "inference_log"))
    remote = normalize(warehouse.read("serving", "flights_delay_payload"), endpoint="flights-delay",
                       served_entities=DATABRICKS["served_entities"])
    columns = ["request_id", "client_request_id", "request_time", "day", "status_code", "endpoint", "model_name",
               "model_version", "request"]

    assert local.sort("request_id").select(columns).to_dicts() == remote.sort("request_id").select(columns).to_dicts()
    assert remote["latency_ms"].to_list() == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]


def test_serving_drift_reads_the_same_records_from_either_table(warehouse: DeltaWarehouse) -> None:
    local = served_records(warehouse, "flights_delay", DAY, DAY, FEATURES)
    remote = served_records(warehouse, "flights_delay", DAY, DAY, FEATURES, **DATABRICKS)

    expected = [("UA", 5, 1400.0, "4"), ("AA", 9, 1089.0, "4"), ("B6", 6, 1576.0, "4"), ("DL", 7, 762.0, "4"),
                ("DL", 7, 762.0, "4"), ("WN", 12, 200.0, "5")]
    for frame in (local, remote):
        assert list(frame.columns) == ["day", "served_model_version", *FEATURES]
        got = sorted(zip(frame["carrier"], frame["hour"], frame["distance"], frame["served_model_version"],
                         strict=True))
        assert got == sorted(expected), "the refused request has no records"
        assert set(frame["day"]) == {DAY}
    assert served_records(warehouse, "flights_delay", DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=1),
                          FEATURES).empty


def test_validation_reports_reused_ids_as_information_on_either_table(warehouse: DeltaWarehouse) -> None:
    for report in (validate_inference_log(warehouse), validate_inference_log(warehouse, **DATABRICKS)):
        assert report.valid, report.problems
        assert (report.rows, report.failed_requests, report.duplicate_rows) == (6, 1, 0)
        # client-a twice with different payloads (sticky A/B), client-b twice with the same one (a retry).
        assert (report.repeated_client_request_ids, report.repeated_requests) == (2, 1)
        assert {(g["model_version"], g["rows"]) for g in report.by_endpoint_version} == {("4", 5), ("5", 1)}


def test_a_request_logged_twice_fails_validation_on_either_table(tmp_path) -> None:
    warehouse = DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="test")
    twice = [*REQUESTS, REQUESTS[2]]
    warehouse.append("serving", "flights_delay_payload", databricks_table(twice))
    tables = DeltaTables(tmp_path / "warehouse", "test")
    DeltaSink(tables).prepare()
    records = local_records(twice)
    records[-1] = records[2]
    from mlops_platform.serving.inference_table import to_table
    tables.append("monitoring", "inference_log", to_table(records))

    for report in (validate_inference_log(warehouse), validate_inference_log(warehouse, **DATABRICKS)):
        assert not report.valid
        assert report.duplicate_rows == 1
        assert report.problems == ["1 row(s) log a request already logged (same databricks_request_id)"]


def test_a_table_of_another_shape_is_named_and_refused(tmp_path) -> None:
    warehouse = DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="test")
    warehouse.append("serving", "odd", pa.table({"request_id": ["x"], "timestamp": [noon(0)]}))

    report = validate_inference_log(warehouse, schema="serving", table="odd")

    assert not report.valid
    assert "not an inference table" in report.problems[0] and "databricks_request_id" in report.problems[0]
