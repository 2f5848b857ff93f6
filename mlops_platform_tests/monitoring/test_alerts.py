"""Alerts delivered to real loopback servers (HTTP webhook, SMTP), at most once per cause and sink."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import polars as pl
import pytest

from mlops_platform import names
from mlops_platform.monitoring.alerts import (
    GATE_LOST,
    PROMOTION,
    champion_moved_alert,
    drift_alert,
    gate_lost_alert,
)
from mlops_platform.resources import build_resources
from mlops_platform.resources.alerts import (
    EMAIL,
    FAILED,
    SENT,
    WEBHOOK,
    AlertDeliveryError,
    AlertRoute,
    AlertSinks,
    EmailRoute,
    WebhookRoute,
)
from mlops_platform.resources.warehouse import DeltaWarehouse
from mlops_platform_tests.monitoring.servers import free_port, smtp_server, webhook_server

URL_ENV = "MLOPS_TEST_ALERT_WEBHOOK_URL"
RECIPIENTS = ["flight-ops@localhost", "oncall@localhost"]
DAY = dt.date(2013, 4, 12)


def sinks(warehouse: DeltaWarehouse, smtp_port: int) -> AlertSinks:
    return AlertSinks(warehouse=warehouse, timeout_seconds=5, routes={"flights": AlertRoute(
        webhook=WebhookRoute(url_env=URL_ENV),
        email=EmailRoute(host="127.0.0.1", port=smtp_port, sender="mlops@localhost", recipients=RECIPIENTS),
    )})


def drift(day: dt.date = DAY):
    return drift_alert("flights", "flights_delay", "3", day, 0.6, ["dep_hour", "temp"], "/reports/drift.html", 2)


@pytest.fixture
def warehouse(tmp_path) -> DeltaWarehouse:
    return DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="local")


@pytest.fixture
def receivers(monkeypatch):
    with webhook_server() as webhook, smtp_server() as (port, mails):
        monkeypatch.setenv(URL_ENV, webhook.url)
        yield webhook, port, mails


def recorded(warehouse: DeltaWarehouse) -> pl.DataFrame:
    return pl.from_arrow(warehouse.read(*names.alerts_table("flights"))).sort("sink")


def test_the_webhook_gets_the_alert_as_json_and_the_recipients_get_an_email(warehouse, receivers):
    webhook, port, mails = receivers

    delivery = sinks(warehouse, port).send(drift())

    assert delivery.sent == (WEBHOOK, EMAIL) and not delivery.failed
    assert webhook.posts == [{
        "cause": "feature_drift:flights_delay:2013-04-12",
        "kind": "feature_drift",
        "severity": "warning",
        "usecase": "flights",
        "title": "flights_delay: feature drift on 2013-04-12",
        "text": "60% of the features of flights_delay v3 drifted on 2013-04-12 (2 recent day(s) drifted): "
                "dep_hour, temp. Report: /reports/drift.html",
        "details": {"model": "flights_delay", "model_version": "3", "day": "2013-04-12", "drift_share": 0.6,
                    "drifted_columns": ["dep_hour", "temp"], "recent_days_drifted": 2,
                    "report": "/reports/drift.html"},
    }]
    assert webhook.content_types == ["application/json"]
    [mail] = mails
    assert mail.rcpt_tos == RECIPIENTS
    assert mail.mail_from == "mlops@localhost"
    assert mail.message["Subject"] == "[mlops warning] flights_delay: feature drift on 2013-04-12"
    assert mail.message["To"] == "flight-ops@localhost, oncall@localhost"
    assert "dep_hour, temp" in mail.message.get_payload()
    rows = recorded(warehouse)
    assert rows.select("cause", "sink", "status").rows() == [
        ("feature_drift:flights_delay:2013-04-12", EMAIL, SENT),
        ("feature_drift:flights_delay:2013-04-12", WEBHOOK, SENT)]
    assert json.loads(rows["body"][0]) == webhook.posts[0]


def test_the_same_cause_is_sent_once_a_new_cause_is_sent(warehouse, receivers):
    webhook, port, mails = receivers
    sinks(warehouse, port).send(drift())

    # A fresh resource, as another run would build, reads what was sent from the table.
    again = sinks(warehouse, port).send(drift())
    assert again.sent == () and again.already_sent == (WEBHOOK, EMAIL)
    assert len(webhook.posts) == 1 and len(mails) == 1

    new = sinks(warehouse, port).send(drift(DAY + dt.timedelta(days=1)))
    assert new.sent == (WEBHOOK, EMAIL)
    assert [post["cause"] for post in webhook.posts] == ["feature_drift:flights_delay:2013-04-12",
                                                         "feature_drift:flights_delay:2013-04-13"]
    assert len(mails) == 2
    assert recorded(warehouse).height == 4


def test_another_process_does_not_send_a_cause_again(warehouse, receivers):
    webhook, port, mails = receivers
    script = (
        "import sys; from mlops_platform_tests.monitoring.test_alerts import drift, sinks; "
        "from mlops_platform.resources.warehouse import DeltaWarehouse; "
        "d = sinks(DeltaWarehouse(root=sys.argv[1], catalog='local'), int(sys.argv[2])).send(drift()); "
        "print(','.join(d.sent) + '|' + ','.join(d.already_sent), flush=True); "
        # delta-rs can abort the interpreter during teardown (delta-io/delta-rs#2184); what the process did is
        # already in the table and on stdout, so it leaves without the teardown.
        "import os; os._exit(0)"
    )
    run = [sys.executable, "-c", script, warehouse.root, str(port)]

    first = subprocess.run(run, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr[-4000:]
    second = subprocess.run(run, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr[-4000:]

    assert first.stdout.strip() == "webhook,email|"
    assert second.stdout.strip() == "|webhook,email"
    assert len(webhook.posts) == 1 and len(mails) == 1


def test_a_failing_sink_is_recorded_named_and_retried_while_the_other_delivers(warehouse, receivers, caplog):
    webhook, port, mails = receivers
    webhook.status = 500

    delivery = sinks(warehouse, port).send(drift())

    assert delivery.sent == (EMAIL,)
    assert list(delivery.failed) == [WEBHOOK] and "Server error '500" in delivery.failed[WEBHOOK]
    assert "alert feature_drift:flights_delay:2013-04-12: webhook sink failed: HTTPStatusError" in caplog.text
    with pytest.raises(AlertDeliveryError, match=r"webhook FAILED \(HTTPStatusError: Server error '500"):
        delivery.raise_on_failure()
    rows = recorded(warehouse)
    assert rows.select("sink", "status").rows() == [(EMAIL, SENT), (WEBHOOK, FAILED)]
    assert "Server error '500" in rows.filter(pl.col("sink") == WEBHOOK)["error"][0]

    webhook.status = 200
    retry = sinks(warehouse, port).send(drift())
    assert retry.sent == (WEBHOOK,) and retry.already_sent == (EMAIL,)
    assert len(webhook.posts) == 1 and len(mails) == 1


def test_an_unreachable_smtp_server_is_a_recorded_failure_naming_the_email_sink(warehouse, receivers):
    delivery = sinks(warehouse, free_port()).send(drift())

    assert delivery.sent == (WEBHOOK,)
    assert list(delivery.failed) == [EMAIL] and "ConnectionRefusedError" in delivery.failed[EMAIL]
    assert recorded(warehouse).filter(pl.col("status") == FAILED)["sink"].to_list() == [EMAIL]


def test_an_unset_webhook_variable_skips_that_sink_with_a_log_line(warehouse, monkeypatch, caplog):
    monkeypatch.delenv(URL_ENV, raising=False)
    caplog.set_level("INFO")
    with smtp_server() as (port, mails):
        delivery = sinks(warehouse, port).send(drift())

    assert delivery.skipped == {WEBHOOK: f"${URL_ENV} is not set"}
    assert delivery.sent == (EMAIL,) and len(mails) == 1
    assert f"webhook sink skipped: ${URL_ENV} is not set" in caplog.text


def test_a_use_case_without_alerts_sends_nothing_and_records_nothing(warehouse):
    delivery = AlertSinks(warehouse=warehouse, routes={}).send(drift())

    assert delivery.sent == () and not delivery.failed
    assert delivery.summary() == ("alert feature_drift:flights_delay:2013-04-12: all skipped (no alerts configured "
                                  "for use case 'flights')")
    assert not warehouse.exists(*names.alerts_table("flights"))


def test_sinks_come_from_the_use_case_configuration(settings):
    built = build_resources(settings)["alerts"]

    route = built.routes["flights"]
    assert route.webhook.url_env == "MLOPS_ALERT_WEBHOOK_URL"
    assert (route.email.host, route.email.port, route.email.recipients) == ("127.0.0.1", 8025,
                                                                             ["flight-ops@localhost"])
    assert built.warehouse.root == str(settings.warehouse_dir)


def test_a_lost_gate_says_the_champion_stays_with_both_metrics():
    alert = gate_lost_alert("flights", "flights_delay", "7", "5", {"roc_auc": 0.61}, {"roc_auc": 0.68},
                            ["roc_auc value 0.61 is below the baseline 0.68"])

    assert alert.cause == f"{GATE_LOST}:flights_delay:v7"
    assert alert.title == "flights_delay: candidate v7 lost to champion v5; champion v5 stays"
    assert "roc_auc: candidate 0.6100 vs champion 0.6800" in alert.text
    assert alert.details["candidate_metrics"] == {"roc_auc": 0.61}
    assert alert.details["champion_metrics"] == {"roc_auc": 0.68}


def test_a_promotion_names_the_old_and_new_versions():
    alert = champion_moved_alert("flights", "flights_delay", PROMOTION, "5", "7")

    assert alert.cause == "promotion:flights_delay:v5->v7"
    assert alert.title == "flights_delay: champion promoted v5 -> v7"
    assert alert.severity == "info"
