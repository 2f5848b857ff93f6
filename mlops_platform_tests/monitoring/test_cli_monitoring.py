"""The monitoring commands of `mlops` on small real tables in a temporary data folder."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pyarrow as pa
import pytest
import yaml
from mlflow import MlflowClient

from mlops_platform.cli import main
from mlops_platform.ml.gate import CHALLENGER, CHAMPION
from mlops_platform.monitoring.tables import DATASET_ROW, DRIFT_SCHEMA, QUALITY_SCHEMA
from mlops_platform.resources import build_resources
from mlops_platform.serving.inference_table import (
    INFERENCE_SCHEMA,
    INFERENCE_TABLE,
    InferenceRecord,
    to_table,
)
from mlops_platform.settings import CONFIG_DIR_ENV, PROJECT_ROOT, load_settings
from mlops_platform_tests.conftest import flights_table
from mlops_platform_tests.monitoring.servers import smtp_server, webhook_server

DAY1, DAY2 = dt.date(2013, 3, 1), dt.date(2013, 3, 2)
MODEL = "flights_delay"


def window(day):
    return {"window_start": day, "window_end": day + dt.timedelta(days=1), "granularity": "1 day",
            "usecase": "flights", "model": MODEL}


def drift_row(day, scope, column, score, drifted, version="3"):
    return {**window(day), "model_version": version, "drift_type": "BASELINE", "scope": scope, "column_name": column,
            "data_type": "numerical", "method": "Wasserstein distance (normed)", "wasserstein_distance": score,
            "score": score, "threshold": 0.1, "drifted": drifted}


@pytest.fixture
def monitored(settings):
    warehouse = build_resources(settings)["warehouse"]
    rows = [drift_row(DAY1, "features", "dep_hour", 0.02, False), drift_row(DAY1, "features", "temp", 0.03, False),
            drift_row(DAY1, "features", DATASET_ROW, 0.0, False), drift_row(DAY1, "prediction", DATASET_ROW, 0.01, False),
            drift_row(DAY2, "features", "dep_hour", 0.4, True), drift_row(DAY2, "features", "temp", 0.3, True),
            drift_row(DAY2, "features", DATASET_ROW, 1.0, True), drift_row(DAY2, "prediction", DATASET_ROW, 0.2, True),
            drift_row(DAY2, "serving", DATASET_ROW, 0.5, True)]
    warehouse.append(*flights_table("monitoring", "delay_drift_metrics"), pa.Table.from_pylist(rows, DRIFT_SCHEMA))
    quality = [{**window(day), "model_version": "3", "metric": "roc_auc", "value": value, "champion_value": 0.7,
                "rows": 800} for day, value in ((DAY1, 0.69), (DAY2, 0.6))]
    warehouse.append(*flights_table("monitoring", "delay_quality_metrics"), pa.Table.from_pylist(quality, QUALITY_SCHEMA))
    return warehouse


def test_drift_reports_each_day_of_the_range_as_json(monitored, capsys):
    assert main(["drift", "--start", "2013-03-01", "--end", "2013-03-05", "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["model"] == MODEL
    assert report["days"] == [
        {"day": "2013-03-01", "model_version": "3", "drift_share": 0.0, "dataset_drifted": False,
         "drifted_columns": [], "prediction_drift_score": 0.01, "prediction_drifted": False,
         "serving_drift_share": None, "quality_metric": "roc_auc", "quality": 0.69, "champion_quality": 0.7,
         "rows": 800},
        {"day": "2013-03-02", "model_version": "3", "drift_share": 1.0, "dataset_drifted": True,
         "drifted_columns": ["dep_hour", "temp"], "prediction_drift_score": 0.2, "prediction_drifted": True,
         "serving_drift_share": 0.5, "quality_metric": "roc_auc", "quality": 0.6, "champion_quality": 0.7,
         "rows": 800},
    ]


def test_drift_as_text_and_for_a_range_without_monitoring(monitored, capsys):
    assert main(["drift", "--start", "2013-03-02", "--end", "2013-03-02"]) == 0
    out = capsys.readouterr().out
    assert "flights_delay: drift from 2013-03-02 to 2013-03-02 (1 monitored day(s))" in out
    assert "2013-03-02        3  1.000   0.500  0.200    0.600  dep_hour, temp" in out

    assert main(["drift", "--start", "2013-04-01", "--end", "2013-04-02", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["days"] == []
    assert main(["drift", "--start", "2013-04-02", "--end", "2013-04-01"]) == 2


def test_drift_without_monitoring_tables_fails_naming_the_table(settings, capsys):
    assert main(["drift", "--start", "2013-03-01", "--end", "2013-03-02"]) == 1
    assert "local.flights_monitoring.delay_drift_metrics does not exist" in capsys.readouterr().err


def test_status_lists_champion_challenger_and_latest_drift_day(monitored, settings, capsys):
    client = build_resources(settings)["mlflow"].client()
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source=str(settings.data_dir))
    client.set_registered_model_alias(MODEL, CHAMPION, "1")
    client.set_registered_model_alias(MODEL, CHALLENGER, "2")

    assert main(["status"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[lines.index(next(line for line in lines if line.startswith("model"))) + 1].split() == [
        MODEL, "1", "2", "2013-03-02"]
    assert next(line for line in lines if line.startswith("flights_arrival_delay")).split() == [
        "flights_arrival_delay", "-", "-", "-"]


def log_requests(settings, ids: list[str], clients: list[str | None] | None = None) -> None:
    records = [InferenceRecord(request_id, (clients or [None] * len(ids))[i], 1_700_000_000_000_000 + i,
                               200 if i != 1 else 503, float(i + 1), '{"inputs": []}', "{}", "champion", None,
                               "flights", "flights-delay" if i % 3 else "flights-arrival", MODEL,
                               "4" if i % 2 else "5", None, 0)
               for i, request_id in enumerate(ids)]
    build_resources(settings)["warehouse"].append(INFERENCE_SCHEMA, INFERENCE_TABLE, to_table(records))


def test_inference_validate_counts_rows_per_endpoint_and_version_and_latency(settings, capsys):
    log_requests(settings, [f"r{i}" for i in range(6)])

    assert main(["inference", "validate", "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["rows"] == 6 and report["failed_requests"] == 1
    assert report["by_endpoint_version"] == [
        {"endpoint": "flights-arrival", "model_version": "4", "rows": 1, "failed": 0},
        {"endpoint": "flights-arrival", "model_version": "5", "rows": 1, "failed": 0},
        {"endpoint": "flights-delay", "model_version": "4", "rows": 2, "failed": 1},
        {"endpoint": "flights-delay", "model_version": "5", "rows": 2, "failed": 0},
    ]
    assert report["latency_ms"] == {"p50": 3.5, "p95": 5.75, "p99": 5.95}


def test_inference_validate_tells_reused_client_ids_from_requests_logged_twice(settings, capsys):
    assert main(["inference", "validate"]) == 1
    assert "local.monitoring.inference_log does not exist" in capsys.readouterr().err

    # Clients reuse ids on purpose (sticky A/B, retries): information, not a fault.
    log_requests(settings, ["a", "b", "c", "d"], clients=["smoke", "smoke", "x", None])
    assert main(["inference", "validate"]) == 0
    assert "client request ids used more than once: 1" in capsys.readouterr().out

    log_requests(settings, ["a", "e"])
    assert main(["inference", "validate"]) == 1
    captured = capsys.readouterr()
    assert "invalid: 1 row(s) log a request already logged (same databricks_request_id)" in captured.err
    assert "6 rows, 2 failed requests, 0 null request ids, 1 requests logged twice" in captured.out


@pytest.fixture
def receivers(settings, tmp_path, monkeypatch):
    """Real webhook and SMTP servers, with the use case's email sink pointed at the SMTP server's port."""
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    usecase = config / "usecases" / "flights.yaml"
    raw = yaml.safe_load(usecase.read_text())
    with webhook_server() as webhook, smtp_server() as (port, mails):
        raw["monitoring"]["alerts"]["email"]["port"] = port
        usecase.write_text(yaml.safe_dump(raw))
        monkeypatch.setenv(CONFIG_DIR_ENV, str(config))
        monkeypatch.setenv(load_settings().usecases["flights"].monitoring.alerts.webhook.url_env, webhook.url)
        yield webhook, mails


def test_alerts_test_sends_through_every_configured_sink(receivers, capsys):
    webhook, mails = receivers

    assert main(["alerts", "test"]) == 0

    assert "sent to webhook, email" in capsys.readouterr().out
    [post] = webhook.posts
    assert post["kind"] == "test" and post["title"] == "flights: test alert"
    [mail] = mails
    assert mail.message["Subject"] == "[mlops info] flights: test alert"
    assert mail.rcpt_tos == ["flight-ops@localhost"]


def test_alerts_test_fails_naming_the_sink_that_failed(settings, monkeypatch, capsys):
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/unreachable")

    assert main(["alerts", "test"]) == 1

    err = capsys.readouterr().err
    assert "webhook FAILED (ConnectError" in err


def test_promote_and_rollback_send_alerts_once(receivers, settings, capsys):
    webhook, mails = receivers
    client: MlflowClient = build_resources(settings)["mlflow"].client()
    client.create_registered_model(MODEL)
    for version in ("1", "2"):
        client.create_model_version(MODEL, source=str(settings.data_dir))
        client.set_registered_model_alias(MODEL, CHALLENGER, version)
        assert main(["promote", "--model", "delay"]) == 0

    assert main(["rollback", "--model", "delay"]) == 0
    assert main(["rollback", "--model", "delay"]) == 1

    assert [post["cause"] for post in webhook.posts] == [
        "promotion:flights_delay:vnone->v1", "promotion:flights_delay:v1->v2", "rollback:flights_delay:v2->v1"]
    assert webhook.posts[-1]["title"] == "flights_delay: champion rolled back v2 -> v1"
    assert [mail.message["Subject"] for mail in mails][-1] == (
        "[mlops warning] flights_delay: champion rolled back v2 -> v1")
    assert "has no earlier champion" in capsys.readouterr().err


def test_monitoring_refresh_is_one_run_over_the_range_on_the_persistent_instance(settings, tmp_path, monkeypatch,
                                                                                 capsys):
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))

    # No champion yet: scoring (and monitoring after it) has nothing to do, and the run still covers the range.
    assert main(["monitoring", "refresh", "--start", "2013-01-01", "--end", "2013-01-03"]) == 0

    assert "flights: predictions and monitoring from 2013-01-01 to 2013-01-03 in run" in capsys.readouterr().out
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        [run] = instance.get_runs()
        assert run.tags["dagster/asset_partition_range_start"] == "2013-01-01"
        assert run.tags["dagster/asset_partition_range_end"] == "2013-01-03"
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        assert set(plan.step_keys_to_execute) == {"flights__predictions__delay", "flights__monitoring__delay_drift"}
