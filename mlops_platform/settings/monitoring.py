"""Monitoring of a model in production: drift and quality thresholds, debounce, retraining guardrails, alerts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlops_platform.settings.base import _Strict


class Debounce(_Strict):
    """Act on drift only when it was seen on ``days`` of the last ``of_last`` days, the latest among them."""

    days: int = Field(default=2, ge=1)
    of_last: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _fits(self) -> Debounce:
        if self.days > self.of_last:
            raise ValueError(f"days ({self.days}) cannot exceed of_last ({self.of_last})")
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
    debounce: Debounce = Debounce()
    retraining: RetrainingConfig = RetrainingConfig()
    alerts: AlertsConfig = AlertsConfig()

