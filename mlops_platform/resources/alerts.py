"""Alert sinks (a webhook, email over SMTP) with delivery recorded in each use case's Delta table
``<usecase>_monitoring.alerts``.

Why a Delta table for the record of what was sent: every write is one atomic commit, it lives next to the drift and
quality metrics it explains (same warehouse, same catalog, queryable the same way), and it outlives runs,
processes and the Dagster instance. One row per cause, sink and attempt: a sink that delivered a cause is never
sent it again; a sink that failed is recorded with its error and tried again the next time the cause is raised.
Check, send and record happen under an exclusive file lock in the warehouse, so two processes raising the same
cause at the same moment cannot both send it.

Secrets (the webhook URL, the SMTP password) are read from the environment variables the configuration names
at send time, never at import; a sink whose variable is unset is skipped with a log line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pyarrow as pa

from mlops_platform import names
from mlops_platform.monitoring.alerts import Alert, post_json, send_email
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.settings import Settings

LOCK_FILE = "-alerts.lock"
WEBHOOK = "webhook"
EMAIL = "email"
SENT = "sent"
FAILED = "failed"

ALERT_ROW_SCHEMA = pa.schema([
    ("at", pa.timestamp("us", tz="UTC")), ("cause", pa.string()), ("kind", pa.string()), ("usecase", pa.string()),
    ("sink", pa.string()), ("status", pa.string()), ("error", pa.string()), ("title", pa.string()),
    ("body", pa.string()),
])

logger = logging.getLogger(__name__)


class WebhookRoute(dg.Config):
    url_env: str


class EmailRoute(dg.Config):
    host: str
    port: int
    sender: str
    recipients: list[str]
    password_env: str | None = None


class AlertRoute(dg.Config):
    """Where one use case's alerts go."""

    webhook: WebhookRoute | None = None
    email: EmailRoute | None = None


class AlertDeliveryError(RuntimeError):
    """At least one sink failed to deliver an alert (the failure is recorded in ``monitoring.alerts``)."""


@dataclass(frozen=True)
class Delivery:
    """What sending one alert did, per sink."""

    cause: str
    sent: tuple[str, ...] = ()
    already_sent: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"sent to {', '.join(self.sent)}" if self.sent else "",
                 f"already sent to {', '.join(self.already_sent)}" if self.already_sent else "",
                 *(f"{sink} skipped ({reason})" for sink, reason in self.skipped.items()),
                 *(f"{sink} FAILED ({error})" for sink, error in self.failed.items())]
        return f"alert {self.cause}: " + ("; ".join(p for p in parts if p) or "no sink configured")

    def raise_on_failure(self) -> None:
        if self.failed:
            raise AlertDeliveryError(self.summary())


class AlertSinks(dg.ConfigurableResource):
    """Sends alerts to each use case's configured sinks, at most once per cause and sink."""

    warehouse: Warehouse
    routes: dict[str, AlertRoute]
    timeout_seconds: float = 10.0

    def send(self, alert: Alert, log: logging.Logger | dg.DagsterLogManager | None = None) -> Delivery:
        """Deliver ``alert`` to every sink of its use case that has not delivered its cause yet.

        Never raises for a sink that fails: the failure is logged naming the sink and recorded, and the returned
        :class:`Delivery` says so (``raise_on_failure`` for callers that must fail).
        """
        log = log or logger
        senders, skipped = self._senders(alert)
        for sink, reason in skipped.items():
            log.info(f"alert {alert.cause}: {sink} sink skipped: {reason}")
        if not senders:
            return Delivery(alert.cause, skipped=skipped)
        with self._lock():
            already = self._delivered(alert)
            sent, failed, rows = [], {}, []
            for sink, deliver in senders.items():
                if sink in already:
                    continue
                try:
                    deliver()
                except Exception as error:  # noqa: BLE001 - any failure of a sink is recorded, named and reported
                    failed[sink] = f"{type(error).__name__}: {error}"
                    # A warning, not an error: the run goes on, the attempt is recorded and retried.
                    log.warning(f"alert {alert.cause}: {sink} sink failed: {failed[sink]} (recorded in "
                              f"{self.warehouse.full_name(*names.alerts_table(alert.usecase))}; retried when the cause "
                              "is raised again)")
                else:
                    sent.append(sink)
                rows.append(self._row(alert, sink, failed.get(sink)))
            if rows:
                self.warehouse.append(*names.alerts_table(alert.usecase), pa.Table.from_pylist(rows, ALERT_ROW_SCHEMA))
        delivery = Delivery(alert.cause, tuple(sent), tuple(s for s in senders if s in already), skipped, failed)
        log.info(delivery.summary())
        return delivery

    def history(self, usecase: str) -> pa.Table:
        """Every delivery attempt of ``usecase``'s alerts so far (empty before the first)."""
        table = names.alerts_table(usecase)
        if not self.warehouse.exists(*table):
            return ALERT_ROW_SCHEMA.empty_table()
        return self.warehouse.read(*table)

    def _senders(self, alert: Alert) -> tuple[dict[str, Callable[[], None]], dict[str, str]]:
        route = self.routes.get(alert.usecase)
        senders: dict[str, Callable[[], None]] = {}
        skipped: dict[str, str] = {}
        if route is None or (route.webhook is None and route.email is None):
            return senders, {"all": f"no alerts configured for use case '{alert.usecase}'"}
        if route.webhook is not None:
            url = os.environ.get(route.webhook.url_env)
            if url:
                senders[WEBHOOK] = lambda: post_json(url, alert.body(), self.timeout_seconds)
            else:
                skipped[WEBHOOK] = f"${route.webhook.url_env} is not set"
        if route.email is not None:
            email = route.email
            password = os.environ.get(email.password_env) if email.password_env else None
            if email.password_env and not password:
                skipped[EMAIL] = f"${email.password_env} (the SMTP password) is not set"
            else:
                senders[EMAIL] = lambda: send_email(alert.email(email.sender, email.recipients), host=email.host,
                                                    port=email.port, timeout=self.timeout_seconds,
                                                    password=password)
        return senders, skipped

    def _delivered(self, alert: Alert) -> set[str]:
        table = names.alerts_table(alert.usecase)
        if not self.warehouse.exists(*table):
            return set()
        # Unfiltered on purpose: the table is small, and a filtered delta-rs scan can abort the interpreter at
        # exit (delta-io/delta-rs#2184), which a CLI process sending an alert would report as a crash.
        rows = self.warehouse.read(*table, columns=["cause", "sink", "status"]).to_pydict()
        return {sink for row_cause, sink, status in zip(rows["cause"], rows["sink"], rows["status"], strict=True)
                if row_cause == alert.cause and status == SENT}

    def _row(self, alert: Alert, sink: str, error: str | None) -> dict:
        return {"at": dt.datetime.now(dt.UTC), "cause": alert.cause, "kind": alert.kind, "usecase": alert.usecase,
                "sink": sink, "status": FAILED if error else SENT, "error": error, "title": alert.title,
                "body": json.dumps(alert.body(), default=str)}

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Serializes the processes of one machine sending for the same catalog; a Delta commit is the record.
        path = Path(tempfile.gettempdir()) / f"mlops-{self.warehouse.catalog}{LOCK_FILE}"
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def alert_sinks(settings: Settings, warehouse: Warehouse) -> AlertSinks:
    """The sinks of every enabled use case that configures alerts under ``monitoring.alerts``."""
    routes = {}
    for name, usecase in settings.usecases.items():
        if usecase.monitoring is None:
            continue
        config = usecase.monitoring.alerts
        routes[name] = AlertRoute(
            webhook=WebhookRoute(url_env=config.webhook.url_env) if config.webhook else None,
            email=EmailRoute(**config.email.model_dump()) if config.email else None,
        )
    return AlertSinks(warehouse=warehouse, routes=routes)
