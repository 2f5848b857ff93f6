"""Models: what is trained, how it is tuned, and the gate a new version must pass."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlops_platform.settings.base import _Strict


class MetricGate(_Strict):
    """Thresholds of one metric: an absolute floor, and the least improvement over the champion."""

    min_value: float | None = None
    max_value: float | None = None
    min_absolute_change: float | None = Field(default=None, gt=0)
    min_relative_change: float | None = Field(default=None, gt=0)
    greater_is_better: bool = True


class TuningConfig(_Strict):
    max_trials: int = Field(default=8, ge=1)
    timeout_seconds: float = Field(default=300, gt=0)
    seed: int = 42
    space: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="hyperparameter -> (low, high); integers when both bounds are integers"
    )


class ModelConfig(_Strict):
    """A model trained from the use case's training set and registered in MLflow under ``registered_name``."""

    description: str
    registered_name: str
    task: Literal["classification", "regression"]
    label: str
    categorical: list[str] = []
    decision_threshold: float = Field(
        default=0.5, gt=0, lt=1,
        description="a classifier answers its positive class when the probability is at least this (logged with "
                    "the model, so batch scoring and every endpoint decide alike)")
    tuning: TuningConfig = TuningConfig()
    gate: dict[str, MetricGate] = Field(min_length=1, description="metric name -> thresholds")

