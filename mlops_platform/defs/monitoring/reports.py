"""Evidently's full drift page of monitored days, on demand only: ``mlops report`` and the ``<model>_drift_page``
asset both render it here.

The daily run never renders it (a page is megabytes and seconds, most days nobody opens it). A day's page is
rendered from the same frames the run judged (the day's window of predictions, the scoring version's cached
baseline), next to that day's compact page, which links it by name. Rendering reads tables and writes pages only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlops_platform import names
from mlops_platform.defs.monitoring import inputs
from mlops_platform.monitoring.day import monitor_day
from mlops_platform.monitoring.reference import ReferenceCache
from mlops_platform.monitoring.report import full_name, render_full_report
from mlops_platform.resources.warehouse import DayRange
from mlops_platform.settings import UseCaseConfig


def render_day_reports(resources: Mapping[str, object], usecase: UseCaseConfig, days: Sequence[dt.date]
                       ) -> dict[dt.date, Path]:
    """Render the full page of each of ``days`` for ``usecase``'s monitored model; a day without predictions fails
    the whole request, before any page is rendered, naming the days."""
    spec = usecase.monitoring
    if spec is None:
        raise ValueError(f"use case '{usecase.name}' monitors no model (no 'monitoring' in its configuration)")
    warehouse, mlflow, reports = resources["warehouse"], resources["mlflow"], resources["reports"]
    model = inputs.monitored_model(usecase, spec)
    date_column = usecase.gold[usecase.training_set.source].partition_column
    predictions = names.predictions_table(usecase.name, spec.model)
    if not warehouse.exists(*predictions):
        raise FileNotFoundError(f"{warehouse.full_name(*predictions)} does not exist: score some days first")
    days = sorted(days)
    scored, per_day = inputs.scored_rows(warehouse, predictions, date_column, days, spec.window)
    windows = {day: inputs.day_window(scored, per_day, date_column, day, spec.window) for day in days}
    if unscored := [day.isoformat() for day, window in windows.items() if window is None]:
        raise ValueError(f"{model.config.registered_name} scored nothing on {', '.join(unscored)}: no drift page "
                         "for a day without predictions")
    cache = ReferenceCache(reports.reference_cache(usecase.name, spec.model))
    pages = {}
    for day, (first, current, version) in windows.items():
        reference, _ = inputs.reference(warehouse, mlflow, cache, usecase, model, version)
        result = monitor_day(model, day, current, reference, window_start=first,
                             labels=inputs.labels(warehouse, usecase, DayRange(date_column, first, day)
                                                  if date_column else None))
        pages[day] = render_full_report(reports.path(usecase.name, spec.model, full_name(day)), model, result,
                                        reference, current)
    return pages


def render_day_report(resources: Mapping[str, object], usecase: UseCaseConfig, day: dt.date) -> Path:
    """Render and return the full page of ``day`` for ``usecase``'s monitored model (``mlops report``)."""
    return render_day_reports(resources, usecase, [day])[day]
