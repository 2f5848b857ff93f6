"""monitor_day and judge as pure functions, on the seattle_weather and penguins use cases' own columns.

Frames are built here from each use case's feature list (no platform run): a quiet day drawn from the reference's
distribution, and a drifted day with most features moved by several standard deviations and predictions that miss.
The verdicts are asserted both ways, and the cached reference (memory, then disk) must give the same verdicts as
the freshly built one.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_platform.defs.monitoring.inputs import monitored_model
from mlops_platform.ml.scoring import PREDICTION, feature_frame
from mlops_platform.monitoring import reference as reference_cache
from mlops_platform.monitoring.day import MonitoredModel, Reference, judge, monitor_day
from mlops_platform.monitoring.reference import ReferenceCache
from mlops_platform.monitoring.report import compact_name, write_compact_report
from mlops_platform.settings import load_settings

DAY = dt.date(2014, 6, 30)


@pytest.fixture(scope="module")
def settings():
    return load_settings()


def _model(settings, usecase: str) -> MonitoredModel:
    config = settings.usecases[usecase]
    return monitored_model(config, config.monitoring)


def _rows(model: MonitoredModel, rows: int, rng: np.random.Generator, *, shift: float = 0.0,
          moved: int = 0) -> pd.DataFrame:
    """Rows of the model's features: numeric column i ~ N(10 i, 1), the first ``moved`` of them shifted by
    ``shift`` standard deviations; categorical columns over three values with a few missing."""
    frame = {}
    for i, column in enumerate(model.numerical):
        frame[column] = rng.normal(10.0 * i + (shift if i < moved else 0.0), 1.0, rows)
    for column in model.categorical:
        values = rng.choice(np.array(["a", "b", "c", None], dtype=object), rows, p=[0.5, 0.3, 0.15, 0.05])
        frame[column] = values
    return pd.DataFrame(frame)


def _reference(model: MonitoredModel, rng: np.random.Generator, rows: int = 700) -> Reference:
    features = feature_frame(_rows(model, rows, rng), model.config, list(model.features))
    return Reference("3", features, rng.normal(20.0, 5.0, rows), champion_quality=2.0)


def _day(model: MonitoredModel, rng: np.random.Generator, *, drifted: bool, rows: int = 28) -> tuple[pd.DataFrame,
                                                                                                      pd.DataFrame]:
    """The window's scored rows and gold's labels for them."""
    moved = int(len(model.numerical) * 0.8) if drifted else 0
    current = _rows(model, rows, rng, shift=6.0, moved=moved)
    keys = {key: [DAY - dt.timedelta(days=rows - 1 - i) for i in range(rows)] for key in model.keys}
    if model.config.task == "regression":
        truth = rng.normal(20.0, 5.0, rows)
        # A quiet day's predictions are close (RMSE about 1); a drifted day's miss by about 6 degrees.
        predicted, label = truth + rng.normal(6.0 if drifted else 0.0, 1.0, rows), truth
    else:
        positive = rng.random(rows) < 0.5
        # Scores that rank well on a quiet day, backwards on a drifted one.
        predicted = np.clip(np.where(positive != drifted, 0.8, 0.2) + rng.normal(0, 0.1, rows), 0, 1)
        yes, no = (model.config.positive_class, "other") if model.config.positive_class is not None else (1, 0)
        label = np.where(positive, yes, no)
    current = current.assign(**keys, **{PREDICTION: predicted, "model_version": "3"})
    return current, pd.DataFrame({**keys, model.config.label: label})


def test_a_drifted_day_fails_feature_drift_and_quality_a_quiet_day_passes(settings):
    model = _model(settings, "seattle_weather")
    rng = np.random.default_rng(7)
    reference = _reference(model, rng)
    earlier = {DAY - dt.timedelta(days=1): True, DAY - dt.timedelta(days=2): True}

    quiet_rows, quiet_labels = _day(model, rng, drifted=False)
    quiet = monitor_day(model, DAY, quiet_rows, reference, window_start=DAY - dt.timedelta(days=27),
                        labels=quiet_labels)
    drifted_rows, drifted_labels = _day(model, rng, drifted=True)
    drifted = monitor_day(model, DAY, drifted_rows, reference, window_start=DAY - dt.timedelta(days=27),
                          labels=drifted_labels)

    assert not quiet.drift.dataset_drifted and quiet.drift.share_drifted < model.spec.max_drifted_share
    assert quiet.quality is not None and quiet.quality < reference.champion_quality + model.spec.max_quality_drop
    quiet_verdicts = judge(quiet, earlier, {}, model.spec)
    assert not quiet_verdicts.feature_drift and not quiet_verdicts.quality_drop and not quiet.failed

    assert drifted.drift.dataset_drifted and drifted.drift.share_drifted >= model.spec.max_drifted_share
    assert set(drifted.drifted_columns) <= set(model.numerical[:int(len(model.numerical) * 0.8)])
    assert drifted.quality > reference.champion_quality + model.spec.max_quality_drop and drifted.quality_dropped
    verdicts = judge(drifted, earlier, {DAY - dt.timedelta(days=1): True, DAY - dt.timedelta(days=3): True},
                     model.spec)
    assert verdicts.feature_drift and verdicts.quality_drop and drifted.failed
    assert verdicts.recent_days_drifted == 3 and verdicts.recent_days_dropped == 3
    # The debounce still holds a drifted day back without enough drifted days before it (3 of the last 5 here).
    assert not judge(drifted, {DAY - dt.timedelta(days=1): True}, {}, model.spec).feature_drift
    assert drifted.serving.startswith("skipped: no ") and drifted.serving.endswith("inference_log table")


def test_no_labels_yet_means_no_quality_and_no_quality_verdict(settings):
    model = _model(settings, "seattle_weather")
    rng = np.random.default_rng(1)
    rows, _ = _day(model, rng, drifted=True)
    result = monitor_day(model, DAY, rows.drop(columns=[model.config.label], errors="ignore"), _reference(model, rng),
                         window_start=DAY, labels=None)
    assert result.quality is None and not result.quality_dropped
    assert not judge(result, {}, {DAY - dt.timedelta(days=1): True, DAY - dt.timedelta(days=2): True},
                     model.spec).quality_drop


@pytest.mark.parametrize("usecase", ["penguins", "seattle_weather"])
def test_the_cached_baseline_gives_the_verdicts_of_the_built_one(settings, usecase, tmp_path):
    model = _model(settings, usecase)
    rng = np.random.default_rng(3)
    built = _reference(model, rng)
    days = [_day(model, rng, drifted=drifted) for drifted in (False, True)]
    cache = ReferenceCache(tmp_path / "cache")
    calls = []

    def build() -> Reference:
        calls.append(1)
        return built

    reference_cache.forget_in_process()
    first, first_source = cache.get("model-v3-run", build)
    second, second_source = cache.get("model-v3-run", build)
    reference_cache.forget_in_process()
    from_disk, disk_source = cache.get("model-v3-run", build)
    assert (first_source, second_source, disk_source) == ("built", "memory", "disk") and len(calls) == 1
    assert first is built and second is built
    assert list(from_disk.features.columns) == list(built.features.columns)
    for rows, labels in days:
        results = [monitor_day(model, DAY, rows, reference, window_start=DAY, labels=labels)
                   for reference in (built, second, from_disk)]
        first_day = results[0]
        for result in results[1:]:
            assert (result.drift, result.prediction_drift, result.quality, result.quality_dropped) == (
                first_day.drift, first_day.prediction_drift, first_day.quality, first_day.quality_dropped)
    reference_cache.forget_in_process()


def test_the_compact_report_lists_every_verdict_in_a_few_kilobytes(settings, tmp_path):
    model = _model(settings, "flights")
    rng = np.random.default_rng(5)
    rows, labels = _day(model, rng, drifted=True, rows=900)
    result = monitor_day(model, DAY, rows, _reference(model, rng, rows=5000), window_start=DAY, labels=labels)
    verdicts = judge(result, {DAY - dt.timedelta(days=1): True}, {}, model.spec)
    page = write_compact_report(tmp_path / compact_name(DAY), "flights_delay", result, verdicts, usecase="flights",
                                page_asset="flights/monitoring/delay_drift_page").read_text()
    assert len(page.encode()) < 40_000
    assert "feature_drift (2 recent day(s) drifted): FAILED" in page
    assert all(f"<td>{column}</td>" in page for column in model.features)
    assert f"mlops report --usecase flights --day {DAY.isoformat()}" in page
    assert "This day's features drifted or its quality dropped" in page and "flights/monitoring/delay_drift_page" in page

    # The chart: a bar per column (and the prediction), red exactly for the drifted ones, in an inline SVG.
    chart = page[page.index("<svg"):page.index("</svg>")]
    columns = result.drift.columns + result.prediction_drift.columns
    assert chart.count("<rect") == len(columns) and "<script" not in page
    assert chart.count('fill="#b00020"') == sum(c.drifted for c in columns) > 0
    assert len(chart.encode()) < 15_000


def test_the_compact_report_of_a_quiet_day_offers_the_full_page_without_alarm(settings, tmp_path):
    model = _model(settings, "seattle_weather")
    rng = np.random.default_rng(7)
    reference = _reference(model, rng)
    rows, labels = _day(model, rng, drifted=False)
    result = monitor_day(model, DAY, rows, reference, window_start=DAY - dt.timedelta(days=27), labels=labels)
    verdicts = judge(result, {}, {}, model.spec)
    assert not (result.failed or verdicts.feature_drift or verdicts.quality_drop)
    page = write_compact_report(tmp_path / compact_name(DAY), "seattle_weather_temperature", result, verdicts,
                                usecase="seattle_weather", page_asset="seattle_weather/monitoring/x_drift_page"
                                ).read_text()
    assert "This day's features drifted" not in page and "rendered on demand" in page
    assert f"drift_{DAY.isoformat()}_full.html" in page


def test_the_disk_keeps_the_newest_baselines_of_a_model(settings, tmp_path):
    model = _model(settings, "penguins")
    cache = ReferenceCache(tmp_path)
    reference = _reference(model, np.random.default_rng(0), rows=50)
    for version in range(reference_cache.KEEP_ON_DISK + 2):
        cache.get(f"penguins_sex-v{version}-run{version}", lambda: reference)
    kept = sorted(path.stem for path in tmp_path.glob("*.parquet"))
    assert len(kept) == reference_cache.KEEP_ON_DISK and "penguins_sex-v0-run0" not in kept
    reference_cache.forget_in_process()
