"""Monitoring of a model in production: drift and quality thresholds, debounce, retraining guardrails, alerts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlops_platform.settings.base import FieldError, _Strict


class Debounce(_Strict):
    """Act on drift only when it was seen on ``days`` of the last ``of_last`` days, the latest among them."""

    days: int = Field(default=2, ge=1)
    of_last: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _fits(self) -> Debounce:
        if self.days > self.of_last:
            raise FieldError("days", f"days ({self.days}) cannot exceed of_last ({self.of_last})", self.days)
        return self


class RetrainingConfig(_Strict):
    """Guardrails of drift-triggered retraining, counted in data days (partitions), not wall-clock time."""

    cooldown_days: int = Field(default=7, ge=0, description="days after a retraining before the next may start")
    max_per_day: int = Field(default=1, ge=1, description="retraining runs requested per data day at most")


class WebhookSink(_Strict):
    url_env: str = Field(description="environment variable holding the webhook URL")


class EmailSink(_Strict):
    host: str = "127.0.0.1"
    port: int = 25
    sender: str
    recipients: list[str] = Field(min_length=1)
    password_env: str | None = None


class AlertsConfig(_Strict):
    webhook: WebhookSink | None = None
    email: EmailSink | None = None


class MonitoringWindow(_Strict):
    """The rows a monitored day is judged on: that day and the ones before it, at least ``days`` days and at least
    ``min_rows`` rows (looking back at most ``max_days``), so a use case with a row or two a day still gets
    distributions to compare. The default is the day alone."""

    days: int = Field(default=1, ge=1)
    min_rows: int = Field(default=0, ge=0)
    max_days: int = Field(default=90, ge=1)

    @model_validator(mode="after")
    def _fits(self) -> MonitoringWindow:
        if self.days > self.max_days:
            raise FieldError("days", f"days ({self.days}) cannot exceed max_days ({self.max_days})", self.days)
        return self


class MonitoringConfig(_Strict):
    """Daily drift and quality monitoring of one model's predictions against its training reference."""

    model: str
    column_threshold: float | None = Field(default=None, gt=0,
                                           description="drift threshold of every column (default: per method)")
    max_drifted_share: float = Field(default=0.5, gt=0, le=1, description="share of drifted columns that fails")
    quality_metric: Literal["roc_auc", "average_precision", "root_mean_squared_error", "mean_absolute_error"] = (
        "roc_auc")
    max_quality_drop: float = Field(default=0.05, ge=0, description="largest tolerated drop below the champion's "
                                                                    "test metric")
    window: MonitoringWindow = MonitoringWindow()
    debounce: Debounce = Debounce()
    retraining: RetrainingConfig = RetrainingConfig()
    alerts: AlertsConfig = AlertsConfig()

