"""Alerts as data: what happened (drift, a lost gate, a promotion, a rollback), and how each sink carries it.

An alert's ``cause`` is its identity: the same cause is delivered to a sink at most once, however many runs or
processes raise it (``mlops_platform.resources.alerts`` keeps the record). Causes name the event, not the run
that noticed it, e.g. ``feature_drift:flights_delay:2013-04-12`` or ``gate_lost:flights_delay:v7``.
"""

from __future__ import annotations

import datetime as dt
import json
import smtplib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx

from mlops_platform.monitoring.decisions import FEATURE_DRIFT as DRIFT
from mlops_platform.monitoring.decisions import QUALITY_DROP as QUALITY

GATE_LOST = "gate_lost"
PROMOTION = "promotion"
ROLLBACK = "rollback"
TEST = "test"


@dataclass(frozen=True)
class Alert:
    cause: str
    kind: str
    usecase: str
    title: str
    text: str
    severity: str = "warning"
    details: Mapping[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The webhook's JSON body (and what the alerts table keeps)."""
        return {"cause": self.cause, "kind": self.kind, "severity": self.severity, "usecase": self.usecase,
                "title": self.title, "text": self.text, "details": dict(self.details)}

    def email(self, sender: str, recipients: Sequence[str]) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = f"[mlops {self.severity}] {self.title}"
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message["X-Mlops-Cause"] = self.cause
        message.set_content(f"{self.text}\n\ncause: {self.cause}\n\n"
                            f"{json.dumps(dict(self.details), indent=2, default=str)}\n")
        return message


def post_json(url: str, body: Mapping[str, Any], timeout: float) -> None:
    """POST ``body`` as JSON; an HTTP error status or an unreachable host raises."""
    response = httpx.post(url, content=json.dumps(body, default=str).encode(), timeout=timeout,
                          headers={"Content-Type": "application/json"})
    response.raise_for_status()


def send_email(message: EmailMessage, *, host: str, port: int, timeout: float, password: str | None) -> None:
    with smtplib.SMTP(host, port, timeout=timeout) as smtp:
        if password is not None:
            smtp.ehlo()
            # Never send a password in clear text: log in only over STARTTLS.
            smtp.starttls()
            smtp.login(str(message["From"]), password)
        smtp.send_message(message)


def drift_alert(usecase: str, model: str, version: str, day: dt.date, drift_share: float,
                drifted_columns: Sequence[str], report: str, recent_days_drifted: int) -> Alert:
    return Alert(
        cause=f"{DRIFT}:{model}:{day.isoformat()}", kind=DRIFT, usecase=usecase,
        title=f"{model}: feature drift on {day.isoformat()}",
        text=(f"{drift_share:.0%} of the features of {model} v{version} drifted on {day.isoformat()} "
              f"({recent_days_drifted} recent day(s) drifted): {', '.join(drifted_columns) or '-'}. "
              f"Report: {report}"),
        details={"model": model, "model_version": version, "day": day.isoformat(), "drift_share": drift_share,
                 "drifted_columns": list(drifted_columns), "recent_days_drifted": recent_days_drifted,
                 "report": report},
    )


def quality_alert(usecase: str, model: str, version: str, day: dt.date, metric: str, value: float,
                  champion_value: float, max_drop: float, report: str) -> Alert:
    return Alert(
        cause=f"{QUALITY}:{model}:{day.isoformat()}", kind=QUALITY, usecase=usecase,
        title=f"{model}: {metric} dropped on {day.isoformat()}",
        text=(f"{metric} of {model} v{version} was {value:.4f} on {day.isoformat()}, more than {max_drop} below "
              f"its test score {champion_value:.4f}. Report: {report}"),
        details={"model": model, "model_version": version, "day": day.isoformat(), "metric": metric,
                 "value": value, "champion_value": champion_value, "max_drop": max_drop, "report": report},
    )


def gate_lost_alert(usecase: str, model: str, candidate: str, champion: str | None,
                    candidate_metrics: Mapping[str, float], champion_metrics: Mapping[str, float],
                    failures: Sequence[str]) -> Alert:
    against = f"champion v{champion}" if champion else "the gate's floors"
    outcome = f"champion v{champion} stays" if champion else "there is still no champion"
    metrics = "; ".join(
        f"{name}: candidate {value:.4f}" + (f" vs champion {champion_metrics[name]:.4f}"
                                            if name in champion_metrics else "")
        for name, value in candidate_metrics.items())
    return Alert(
        cause=f"{GATE_LOST}:{model}:v{candidate}", kind=GATE_LOST, usecase=usecase,
        title=f"{model}: candidate v{candidate} lost to {against}; {outcome}",
        text=f"Candidate v{candidate} of {model} failed beats_champion; {outcome}. {metrics}. "
             + " ".join(failures),
        details={"model": model, "candidate_version": candidate, "champion_version": champion,
                 "candidate_metrics": dict(candidate_metrics), "champion_metrics": dict(champion_metrics),
                 "failures": list(failures)},
    )


def champion_moved_alert(usecase: str, model: str, kind: str, previous: str | None, current: str) -> Alert:
    """A promotion or rollback. Each happens once per pair: a version becomes challenger only when it is new, and
    only a version that was promoted can be rolled back from, so the pair names the event."""
    verb = "promoted" if kind == PROMOTION else "rolled back"
    return Alert(
        cause=f"{kind}:{model}:v{previous or 'none'}->v{current}", kind=kind, usecase=usecase,
        severity="info" if kind == PROMOTION else "warning",
        title=f"{model}: champion {verb} v{previous or 'none'} -> v{current}",
        text=f"The champion alias of {model} was {verb} from version {previous or 'none'} to version {current}.",
        details={"model": model, "previous_version": previous, "current_version": current},
    )


def probe_alert(usecase: str, at: dt.datetime) -> Alert:
    return Alert(
        cause=f"{TEST}:{usecase}:{at.isoformat()}", kind=TEST, usecase=usecase, severity="info",
        title=f"{usecase}: test alert", text=f"A test alert sent by `mlops alerts test` at {at.isoformat()}.",
        details={"sent_at": at.isoformat()},
    )
