"""One monitored day as a pure function: the day's frames and the model's reference in, typed verdicts out.

``monitor_day`` judges the scored rows of a day's window against the champion's training reference (feature drift,
prediction drift), the day's served requests against the same reference, and the window's quality once labels
exist; it profiles the day's inputs and outputs. ``judge`` turns a day's result and the recent history into the
asset's check verdicts with the debounce rule. Nothing here reads or writes a table: the asset in
``defs/monitoring`` does the I/O and hands frames in, so the same function serves a replay, a test or a notebook.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlops_platform.ml.model_data import binary_labels
from mlops_platform.ml.scoring import PREDICTION, feature_frame
from mlops_platform.monitoring.decisions import debounced, quality_dropped_below
from mlops_platform.monitoring.drift import DriftResult, detect_drift
from mlops_platform.monitoring.profile import profile
from mlops_platform.monitoring.serving_drift import serving_drift
from mlops_platform.settings import ModelConfig, MonitoringConfig

# The prediction's own drift verdict: the one column drifts or it does not.
PREDICTION_DRIFT_SHARE = 0.5

# Each quality metric by the name of its scikit-learn function: scikit-learn is imported when a day is scored, not
# when the code location loads (it costs a second there).
QUALITY_METRICS = {
    "roc_auc": "roc_auc_score",
    "average_precision": "average_precision_score",
    "root_mean_squared_error": "root_mean_squared_error",
    "mean_absolute_error": "mean_absolute_error",
}


@dataclass(frozen=True)
class MonitoredModel:
    """What a use case says about the model it monitors: settings, feature columns, row keys and label columns."""

    usecase: str
    spec: MonitoringConfig
    config: ModelConfig
    features: tuple[str, ...]
    keys: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def categorical(self) -> list[str]:
        return [column for column in self.features if column in self.config.categorical]

    @property
    def numerical(self) -> list[str]:
        return [column for column in self.features if column not in self.config.categorical]


@dataclass(frozen=True)
class Reference:
    """A model version's baseline: its training rows typed as the model reads them, the model's scores on them,
    and the model's test score of the monitored quality metric (None when the run did not log it)."""

    model_version: str
    features: pd.DataFrame
    scores: np.ndarray
    champion_quality: float | None


@dataclass(frozen=True)
class DayResult:
    """Everything monitoring found about one day; ``profile`` holds ``{column, kind, metric, value}`` rows."""

    day: dt.date
    window_start: dt.date
    model_version: str
    rows: int
    numerical: list[str]
    categorical: list[str]
    drift: DriftResult
    prediction_drift: DriftResult
    serving: DriftResult | str
    quality: float | None
    champion_quality: float | None
    quality_dropped: bool
    profile: list[dict] = field(default_factory=list)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.drift.columns if c.drifted]

    @property
    def failed(self) -> bool:
        """Whether the day's features drifted or its quality dropped: the days whose compact page points at
        Evidently's full page prominently. Prediction drift alone does not count: Evidently's page shows the
        features, not the prediction, and the compact page already holds the prediction's score."""
        return self.drift.dataset_drifted or self.quality_dropped


@dataclass(frozen=True)
class Verdicts:
    """The asset's check verdicts for ``day``: a check fails only when its signal is confirmed by the debounce."""

    day: dt.date
    feature_drift: bool
    prediction_drift: bool
    quality_drop: bool
    recent_days_drifted: int
    recent_days_dropped: int
    dropped_today: bool


def comparable(columns: Sequence[str], *frames: pd.DataFrame) -> list[str]:
    """The columns holding at least one finite value in every frame."""
    def has_values(series: pd.Series) -> bool:
        values = series.dropna()
        return bool(len(values)) and (not pd.api.types.is_numeric_dtype(values) or bool(np.isfinite(values).any()))

    return [column for column in columns if all(has_values(frame[column]) for frame in frames)]


def window_quality(scored: pd.DataFrame, config: ModelConfig, metric: str) -> float | None:
    """The window's quality on its labelled rows; None until labels exist (or while one class is all there is)."""
    labelled = scored[scored[config.label].notna()]
    if labelled.empty:
        return None
    if config.task == "classification":
        truth = binary_labels(labelled[config.label], config)
        if truth.nunique() < 2:
            return None
    else:
        truth = labelled[config.label].astype(float)
    from sklearn import metrics

    return float(getattr(metrics, QUALITY_METRICS[metric])(truth, labelled[PREDICTION]))


def monitor_day(model: MonitoredModel, day: dt.date, current: pd.DataFrame, reference: Reference, *,
                window_start: dt.date, labels: pd.DataFrame | None = None,
                served: pd.DataFrame | None = None) -> DayResult:
    """Judge ``current``, the scored rows of ``day``'s window (from ``window_start``), against ``reference``.

    ``labels`` holds the window's row keys and label columns as gold has them now (later labels fill an earlier
    day when it is monitored again); ``served`` the served records of the inference table (``served_records``), or
    None when there is no inference table.
    """
    spec, config = model.spec, model.config
    current_features = feature_frame(current, config, list(model.features))
    # A column with no value on one side (wind gusts on a calm day) cannot be compared; it is not drift.
    numerical, categorical = (comparable(columns, reference.features, current_features)
                              for columns in (model.numerical, model.categorical))
    drift = detect_drift(reference.features, current_features, numerical=numerical, categorical=categorical,
                         threshold=spec.column_threshold, drift_share=spec.max_drifted_share)
    prediction_drift = detect_drift(pd.DataFrame({PREDICTION: reference.scores}), current[[PREDICTION]],
                                    numerical=[PREDICTION], categorical=[], threshold=spec.column_threshold,
                                    drift_share=PREDICTION_DRIFT_SHARE)
    if labels is not None:
        labelled = current.drop(columns=[c for c in model.labels if c in current.columns]).merge(
            labels, on=list(model.keys), how="left")
    else:
        labelled = current
    quality = window_quality(labelled, config, spec.quality_metric) if config.label in labelled else None
    return DayResult(
        day=day, window_start=window_start, model_version=reference.model_version, rows=len(current),
        numerical=numerical, categorical=categorical, drift=drift, prediction_drift=prediction_drift,
        serving=serving_drift(served, day, reference.features, config, numerical, categorical,
                              threshold=spec.column_threshold, drift_share=spec.max_drifted_share),
        quality=quality, champion_quality=reference.champion_quality,
        quality_dropped=quality_dropped_below(quality, reference.champion_quality, spec),
        profile=profile(current, [*model.numerical, PREDICTION], model.categorical),
    )


def judge(result: DayResult, drifted_by_day: Mapping[dt.date, bool], dropped_by_day: Mapping[dt.date, bool],
          spec: MonitoringConfig) -> Verdicts:
    """The checks of ``result.day`` given the recent days' dataset-drift and quality-drop flags (the day itself
    included). One bad day of labels is noise as much as one drifted day is: the same debounce rule applies."""
    drifted = {**drifted_by_day, result.day: result.drift.dataset_drifted}
    dropped = {**dropped_by_day, result.day: result.quality_dropped}
    first = result.day - dt.timedelta(days=spec.debounce.of_last - 1)

    def recent(flags: Mapping[dt.date, bool]) -> int:
        return sum(flag for day, flag in flags.items() if first <= day <= result.day)

    return Verdicts(
        day=result.day,
        feature_drift=debounced(drifted, result.day, spec.debounce),
        prediction_drift=result.prediction_drift.dataset_drifted,
        quality_drop=debounced(dropped, result.day, spec.debounce),
        recent_days_drifted=recent(drifted), recent_days_dropped=recent(dropped),
        dropped_today=result.quality_dropped,
    )
