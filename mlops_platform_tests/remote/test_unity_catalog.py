"""Unity Catalog tables: the exact Spark calls a Databricks job makes, and the orchestrator's Statement Execution reads.

Unity Catalog cannot exist on this machine, so the Spark session is a fake that records every statement and every
Delta write and answers the catalog's questions (does the table exist, its history, its schema) from what it was
given. The Statement Execution path talks to a fake workspace client whose result chunks are real Arrow streams
served over HTTP from this process, as presigned links are.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from unittest.mock import MagicMock

import dagster as dg
import pyarrow as pa
import pytest
from databricks.sdk.service import sql as dbsql

from mlops_platform.defs.quality import freshness_checks
from mlops_platform.resources.databricks import DatabricksWorkspace
from mlops_platform.resources.spark import DatabricksRuntimeSpark
from mlops_platform.resources.unity_catalog import (
    SOURCE_VIEW,
    SparkSqlConnection,
    StatementConnection,
    UnityCatalogError,
    UnityCatalogWarehouse,
)
from mlops_platform.resources.warehouse import DayRange, SchemaEvolutionError
from mlops_platform.settings import load_settings

CATALOG = "mlops_prod"
DAYS = DayRange("day", dt.date(2013, 1, 2), dt.date(2013, 1, 3))
ROWS = pa.table({"day": pa.array([dt.date(2013, 1, 2), dt.date(2013, 1, 3)], pa.date32()),
                 "carrier": pa.array(["AA", "UA"], pa.large_string()), "delay": [1.5, -2.0]})
COMMITTED = dt.datetime(2013, 1, 4, 6, 30)
SILVER_FLIGHTS_EXISTS = ("SELECT 1 FROM `mlops_prod`.`information_schema`.`tables` WHERE table_schema = 'silver' "
                         "AND table_name = 'flights'")


@dataclass
class FakeSpark:
    """A Spark session of a Databricks cluster: records statements and writes; knows the tables it was given."""

    tables: dict[str, pa.Schema] = field(default_factory=dict)
    version: str = "4.0.0"
    history: dict[str, list[dict]] = field(default_factory=dict)
    calls: list[tuple] = field(default_factory=list)

    def sql(self, statement: str) -> MagicMock:
        self.calls.append(("sql", statement))
        result = MagicMock()
        result.toArrow.return_value = self._answer(statement)
        return result

    def _answer(self, statement: str) -> pa.Table:
        if "information_schema" in statement:
            known = any(f"table_schema = '{name.split('.')[1]}' AND table_name = '{name.split('.')[2]}'" in statement
                        for name in self.tables)
            return pa.table({"1": [1] if known else []}, schema=pa.schema([("1", pa.int32())]))
        if statement.startswith("DESCRIBE HISTORY"):
            name = statement.split()[2].replace("`", "")
            return pa.Table.from_pylist(self.history[name])
        if statement.endswith("LIMIT 0"):
            return self.tables[statement.split()[3].replace("`", "")].empty_table()
        return pa.table({"row_count": [7]}) if "COUNT(*)" in statement else pa.table({})

    def createDataFrame(self, data: pa.Table) -> MagicMock:
        frame = MagicMock()
        self.calls.append(("createDataFrame", data))

        def save(name: str) -> None:
            self.tables[name] = data.schema
            versions = self.history.setdefault(name, [])
            versions.insert(0, {"version": len(versions), "timestamp": COMMITTED, "userMetadata": None})

        writer = frame.write.format.return_value.mode.return_value.options.return_value
        writer.saveAsTable.side_effect = save
        frame.write.format.side_effect = lambda kind: (self.calls.append(("format", kind)),
                                                       frame.write.format.return_value)[1]
        frame.write.format.return_value.mode.side_effect = lambda mode: (
            self.calls.append(("mode", mode)), frame.write.format.return_value.mode.return_value)[1]
        frame.write.format.return_value.mode.return_value.options.side_effect = lambda **options: (
            self.calls.append(("options", options)), writer)[1]
        frame.createOrReplaceTempView.side_effect = lambda view: self.calls.append(("view", view))
        return frame

    def statements(self) -> list[str]:
        return [call[1] for call in self.calls if call[0] == "sql"]

    def writes(self) -> list[tuple]:
        return [call for call in self.calls if call[0] in ("format", "mode", "options")]


@pytest.fixture
def spark() -> FakeSpark:
    return FakeSpark()


@pytest.fixture
def warehouse(spark) -> UnityCatalogWarehouse:
    class OnCluster(UnityCatalogWarehouse):
        """The warehouse as a remote step sees it, with the fake cluster session in place of the real one."""

        def connection(self):
            return SparkSqlConnection(spark)

    return OnCluster(catalog=CATALOG, pyspark=DatabricksRuntimeSpark())


def test_a_daily_write_replaces_its_days_of_a_registered_delta_table(spark, warehouse):
    write = warehouse.replace_days("silver", "flights", ROWS, DAYS)

    assert spark.statements() == [
        SILVER_FLIGHTS_EXISTS,
        "CREATE SCHEMA IF NOT EXISTS `mlops_prod`.`silver`",
        SILVER_FLIGHTS_EXISTS,
        "DESCRIBE HISTORY `mlops_prod`.`silver`.`flights` LIMIT 1",
    ]
    assert spark.writes() == [
        ("format", "delta"), ("mode", "overwrite"),
        ("options", {"replaceWhere": "day >= DATE'2013-01-02' AND day <= DATE'2013-01-03'"}),
    ]
    assert (write.full_name, write.path, write.version, write.rows_written) == (
        "mlops_prod.silver.flights", "mlops_prod.silver.flights", 0, 2)

    warehouse.replace_days("silver", "flights", ROWS, DAYS)
    assert warehouse.version("silver", "flights") == 1


def test_rows_outside_the_days_and_schema_changes_are_refused_before_anything_is_written(spark, warehouse):
    with pytest.raises(ValueError, match=r"mlops_prod.silver.flights: 2 rows are outside the days"):
        warehouse.replace_days("silver", "flights", ROWS, DayRange("day", dt.date(2013, 2, 1), dt.date(2013, 2, 1)))

    spark.tables["mlops_prod.silver.flights"] = ROWS.schema
    changed = ROWS.append_column("extra", pa.array([1, 2]))
    with pytest.raises(SchemaEvolutionError, match="new column 'extra' \\(long\\)"):
        warehouse.replace_days("silver", "flights", changed, DAYS)
    assert spark.writes() == []

    warehouse.replace_days("silver", "flights", changed, DAYS, allow_evolution=True)
    assert spark.writes()[-1] == ("options", {"replaceWhere": DAYS.sql, "mergeSchema": "true"})


def test_commit_metadata_goes_into_the_delta_log_and_history_reads_it_back(spark, warehouse):
    warehouse.overwrite("training", "flights", ROWS, commit_metadata={"input_versions": '{"gold.flights": 3}'})
    assert spark.writes()[-1] == ("options", {"userMetadata": '{"input_versions": "{\\"gold.flights\\": 3}"}'})

    spark.history["mlops_prod.training.flights"][0]["userMetadata"] = spark.writes()[-1][1]["userMetadata"]
    (commit,) = warehouse.history("training", "flights")
    assert commit.version == 0
    assert commit.at == COMMITTED.replace(tzinfo=dt.UTC)
    assert json.loads(commit.metadata["input_versions"]) == {"gold.flights": 3}


def test_a_feature_table_upsert_is_one_merge_statement_on_its_keys(spark, warehouse):
    spark.tables["mlops_prod.features.carrier_delays"] = ROWS.schema
    spark.history["mlops_prod.features.carrier_delays"] = [{"version": 4, "timestamp": COMMITTED,
                                                            "userMetadata": None}]
    write = warehouse.merge("features", "carrier_delays", ROWS, ["carrier", "day"])

    assert ("view", SOURCE_VIEW) in spark.calls
    assert spark.statements()[-3] == (
        "MERGE INTO `mlops_prod`.`features`.`carrier_delays` AS target USING mlops_merge_source AS source "
        "ON target.`carrier` = source.`carrier` AND target.`day` = source.`day` "
        "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
    assert write.version == 4


def test_reads_are_select_statements_and_spark_steps_read_the_table_lazily(spark, warehouse):
    spark.tables["mlops_prod.serving.inference_log"] = ROWS.schema
    since = dt.datetime(2013, 1, 2, tzinfo=dt.UTC)
    warehouse.read("serving", "inference_log", columns=["day", "carrier"], version=3,
                   filters=[("timestamp", ">=", pa.scalar(since, pa.timestamp("us", tz="UTC"))),
                            ("carrier", "in", ["AA", "B'6"])])
    assert spark.statements()[-1] == (
        "SELECT `day`, `carrier` FROM `mlops_prod`.`serving`.`inference_log` VERSION AS OF 3 "
        "WHERE `timestamp` >= TIMESTAMP'2013-01-02 00:00:00.000000+00:00' AND `carrier` IN ('AA', 'B\\'6')")

    warehouse.spark_frame(spark, "silver", "flights", DAYS)
    assert spark.statements()[-1] == ("SELECT * FROM `mlops_prod`.`silver`.`flights` "
                                      "WHERE `day` >= DATE'2013-01-02' AND `day` <= DATE'2013-01-03'")
    with pytest.raises(FileNotFoundError, match="mlops_prod.gold.nowhere does not exist in Unity Catalog"):
        warehouse.read("gold", "nowhere")


# --- the orchestrator's reads: Statement Execution API --------------------------------------------------------------

def _arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.fixture
def presigned() -> Iterator[tuple[str, dict[str, bytes], list[dict[str, str]]]]:
    """A storage server for result chunks: path -> Arrow stream; records each request's headers."""
    bodies: dict[str, bytes] = {}
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            body = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies, seen
    server.shutdown()


def _link(base: str, chunk: int, next_chunk: int | None) -> dbsql.ExternalLink:
    return dbsql.ExternalLink(external_link=f"{base}/chunk{chunk}", chunk_index=chunk, next_chunk_index=next_chunk,
                              http_headers={"x-ms-blob-type": "BlockBlob"})


def test_the_orchestrator_reads_through_the_sql_warehouse_as_arrow_chunks(presigned):
    base, bodies, seen = presigned
    first, second = ROWS.slice(0, 1), ROWS.slice(1, 1)
    bodies["/chunk0"], bodies["/chunk1"] = _arrow_stream(first), _arrow_stream(second)
    client = MagicMock()
    api = client.statement_execution
    api.execute_statement.return_value = dbsql.StatementResponse(
        statement_id="s-1", status=dbsql.StatementStatus(state=dbsql.StatementState.PENDING))
    api.get_statement.return_value = dbsql.StatementResponse(
        statement_id="s-1", status=dbsql.StatementStatus(state=dbsql.StatementState.SUCCEEDED),
        result=dbsql.ResultData(external_links=[_link(base, 0, 1)], next_chunk_index=1))
    api.get_statement_result_chunk_n.return_value = dbsql.ResultData(external_links=[_link(base, 1, None)])

    table = StatementConnection(client, "wh-42", poll_seconds=0).sql("SELECT * FROM `mlops_prod`.`silver`.`x`")

    assert table.equals(pa.concat_tables([first, second]))
    api.execute_statement.assert_called_once_with(
        statement="SELECT * FROM `mlops_prod`.`silver`.`x`", warehouse_id="wh-42", wait_timeout="30s",
        on_wait_timeout=dbsql.ExecuteStatementRequestOnWaitTimeout.CONTINUE,
        format=dbsql.Format.ARROW_STREAM, disposition=dbsql.Disposition.EXTERNAL_LINKS)
    api.get_statement.assert_called_once_with("s-1")
    api.get_statement_result_chunk_n.assert_called_once_with("s-1", 1)
    assert all(headers.get("x-ms-blob-type") == "BlockBlob" and "Authorization" not in headers for headers in seen)
    assert len(seen) == 2


def test_a_statement_still_running_at_the_timeout_is_cancelled_and_named():
    client = MagicMock()
    api = client.statement_execution
    running = dbsql.StatementResponse(statement_id="s-2", status=dbsql.StatementStatus(state=dbsql.StatementState.RUNNING))
    api.execute_statement.return_value = api.get_statement.return_value = running

    with pytest.raises(UnityCatalogError, match="still running after 0.2 s: SELECT 1"):
        StatementConnection(client, "wh-42", poll_seconds=0.05, timeout_seconds=0.2).sql("SELECT 1")

    api.cancel_execution.assert_called_once_with("s-2")
    assert api.get_statement.call_count >= 1


def test_a_failed_statement_and_an_orchestrator_write_fail_with_what_went_wrong():
    client = MagicMock()
    client.statement_execution.execute_statement.return_value = dbsql.StatementResponse(
        statement_id="s-2", status=dbsql.StatementStatus(
            state=dbsql.StatementState.FAILED,
            error=dbsql.ServiceError(message="[TABLE_OR_VIEW_NOT_FOUND] mlops_prod.gold.x")))
    connection = StatementConnection(client, "wh-42")
    with pytest.raises(UnityCatalogError, match=r"FAILED: \[TABLE_OR_VIEW_NOT_FOUND\] mlops_prod.gold.x: SELECT 1"):
        connection.sql("SELECT 1")
    with pytest.raises(UnityCatalogError, match="not writing mlops_prod.gold.x from the orchestrator"):
        connection.write(ROWS, "mlops_prod.gold.x", "append", {})


def test_the_freshness_check_in_prod_reads_the_last_commit_through_the_sql_warehouse(monkeypatch):
    """An orchestrator-side check of a prod table: the statements reach the named SQL warehouse."""
    statements: list[tuple[str, str]] = []
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def execute(statement: str, warehouse_id: str, **_: object) -> dbsql.StatementResponse:
        statements.append((warehouse_id, statement))
        rows = ([{"version": 9, "timestamp": now, "userMetadata": None}] if "HISTORY" in statement
                else [{"1": 1}])
        links = [dbsql.ExternalLink(external_link=f"mem://{len(statements)}")]
        payloads[links[0].external_link] = _arrow_stream(pa.Table.from_pylist(rows))
        return dbsql.StatementResponse(statement_id="s", status=dbsql.StatementStatus(
            state=dbsql.StatementState.SUCCEEDED), result=dbsql.ResultData(external_links=links))

    payloads: dict[str, bytes] = {}
    monkeypatch.setattr("mlops_platform.resources.unity_catalog.httpx.get",
                        lambda url, **_: MagicMock(content=payloads[url]))
    client = MagicMock()
    client.statement_execution.execute_statement.side_effect = execute

    class FakeWorkspace(DatabricksWorkspace):
        def workspace_client(self):
            return client

    usecase = load_settings("prod").usecases["flights"]
    key = dg.AssetKey(["flights", "silver", "flights"])
    (check,) = freshness_checks(usecase, [key])
    warehouse = UnityCatalogWarehouse(catalog=CATALOG, pyspark=DatabricksRuntimeSpark(), sql_warehouse_id="wh-42",
                                      workspace=FakeWorkspace(host="https://dbc-fake.cloud.databricks.com",
                                                              token="t"))
    result = dg.materialize([check, dg.AssetSpec(key)], selection=dg.AssetSelection.checks(check),
                            resources={"warehouse": warehouse})

    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed
    assert evaluation.metadata["last_commit"].value == now.isoformat(timespec="seconds")
    assert statements == [
        ("wh-42", SILVER_FLIGHTS_EXISTS.replace("'silver'", "'flights_silver'")),
        ("wh-42", "DESCRIBE HISTORY `mlops_prod`.`flights_silver`.`flights` LIMIT 1"),
    ]
