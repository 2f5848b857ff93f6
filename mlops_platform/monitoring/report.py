"""The day's report people open: a compact page of every verdict, and Evidently's full page on demand.

The compact page (a few kilobytes, no scripts) lists the day's verdicts, a bar chart of each column's drift score
against its threshold, each column's drift method, score, threshold and verdict, the prediction, serving and quality
figures and the profile. Evidently's page (about 2 MB and most of a day's monitoring time when rendered daily) is
rendered only on demand (the drift page asset or ``mlops report``); the compact page links it by name and says how to
render it, prominently on a day whose features drift or whose quality drops. Both are named here, their one owner.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from pathlib import Path

import pandas as pd

from mlops_platform.ml.scoring import feature_frame
from mlops_platform.monitoring.day import DayResult, MonitoredModel, Reference, Verdicts
from mlops_platform.monitoring.drift import ColumnDrift, DriftResult, render_html_report

_PROFILED = ("count", "percent_null", "distinct_count", "avg", "stddev", "min", "max")


def compact_name(day: dt.date) -> str:
    return f"drift_{day.isoformat()}.html"


def full_name(day: dt.date) -> str:
    return f"drift_{day.isoformat()}_full.html"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _drift_rows(result: DriftResult) -> str:
    return "".join(
        f"<tr class='{'bad' if c.drifted else ''}'><td>{html.escape(c.column)}</td><td>{c.kind}</td>"
        f"<td>{html.escape(c.method)}</td><td>{_number(c.score)}</td><td>{_number(c.threshold)}</td>"
        f"<td>{'drifted' if c.drifted else 'ok'}</td></tr>" for c in result.columns)


# The drift chart: one row per column, its bar the score over the threshold, so every method's threshold sits at the
# same x (the dashed line) whatever its scale; bars past twice the threshold are clipped there.
_CHART_LABEL, _CHART_BAR, _CHART_ROW, _CHART_CLIP = 190, 300, 14, 2.0


def _drift_chart(columns: list[ColumnDrift]) -> str:
    """An inline SVG (no script) of each column's drift score against its threshold; drifted bars red."""
    middle = _CHART_LABEL + _CHART_BAR / _CHART_CLIP
    rows = []
    for i, c in enumerate(columns):
        ratio = min(c.score / c.threshold, _CHART_CLIP) if c.threshold > 0 else _CHART_CLIP
        ratio = ratio if math.isfinite(ratio) else 0.0
        y = i * _CHART_ROW
        rows.append(
            f'<text x="{_CHART_LABEL - 4}" y="{y + 10}" text-anchor="end">{html.escape(c.column)}</text>'
            f'<rect x="{_CHART_LABEL}" y="{y + 2}" width="{ratio * _CHART_BAR / _CHART_CLIP:.0f}" height="10" '
            f'fill="{"#b00020" if c.drifted else "#7a9cc6"}"/>'
            f'<text x="{_CHART_LABEL + _CHART_BAR + 4}" y="{y + 10}">{_number(c.score)} ({html.escape(c.method)})'
            "</text>")
    height = len(columns) * _CHART_ROW
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_CHART_LABEL + _CHART_BAR + 240}" '
            f'height="{height + 16}" font-size="10" font-family="system-ui,sans-serif">{"".join(rows)}'
            f'<line x1="{middle:.0f}" x2="{middle:.0f}" y1="0" y2="{height}" stroke="#333" stroke-dasharray="3,2"/>'
            f'<text x="{middle:.0f}" y="{height + 12}" text-anchor="middle">threshold</text></svg>')


def write_compact_report(path: Path, title: str, result: DayResult, verdicts: Verdicts | None, *, usecase: str,
                         page_asset: str, partitioned: bool = True) -> Path:
    """Write the day's compact page to ``path``; ``verdicts`` are the checks' (None for a day before the latest of
    a range run, whose checks are not evaluated); ``page_asset`` the key of the asset that renders Evidently's full
    page of a day, by day partition unless not ``partitioned`` (a snapshot use case's: its newest snapshot)."""
    def verdict(name: str, failed: bool) -> str:
        return f"<li class='{'bad' if failed else ''}'>{name}: {'FAILED' if failed else 'passed'}</li>"

    checks = ""
    if verdicts is not None:
        checks = ("<ul>" + verdict(f"feature_drift ({verdicts.recent_days_drifted} recent day(s) drifted)",
                                   verdicts.feature_drift)
                  + verdict("prediction_drift", verdicts.prediction_drift)
                  + verdict(f"quality_drop ({verdicts.recent_days_dropped} recent day(s) dropped)",
                            verdicts.quality_drop) + "</ul>")
    serving = (html.escape(result.serving) if isinstance(result.serving, str)
               else f"share of drifted served features {result.serving.share_drifted:.3f}")
    failed = result.failed or (verdicts is not None and (verdicts.feature_drift or verdicts.quality_drop))
    link = f"<a href='{html.escape(full_name(result.day))}'>Evidently's full drift page</a>"
    partition = f" for partition <code>{result.day.isoformat()}</code>" if partitioned else ""
    how = (f"materialize <code>{html.escape(page_asset)}</code>{partition} "
           f"in Dagster, or run <code>mlops report --usecase {html.escape(usecase)} --day {result.day.isoformat()}"
           "</code>; the link works once it is rendered.")
    full = (f"<p class='bad' style='border:2px solid #b00020;padding:8px'>This day's features drifted or its quality "
            f"dropped: look at {link} (each feature's distribution against the reference). It is rendered on "
            f"demand: {how}</p>" if failed else
            f"<p>{link}: rendered on demand, not by the daily run: {how}</p>")
    profile = "".join(
        f"<tr><td>{html.escape(str(row['column']))}</td>" + "".join(f"<td>{_number(row[m])}</td>" for m in _PROFILED)
        + "</tr>" for row in result.profile)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left}}.bad{{color:#b00020;font-weight:bold}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>{result.rows} scored rows from {result.window_start} to {result.day}, model version {result.model_version}.</p>
{checks}
<p>Share of drifted features {result.drift.share_drifted:.3f} (dataset drifted: {result.drift.dataset_drifted});
prediction drift score {_number(result.prediction_drift.columns[0].score)}
({result.prediction_drift.columns[0].method}); {serving};
quality {_number(result.quality)} against the champion's {_number(result.champion_quality)}.</p>
{full}
<h2>Feature drift</h2>
<p>Each column's score over its threshold: a distance drifts at or past the line, a p-value below it.</p>
{_drift_chart(result.drift.columns + result.prediction_drift.columns)}
<table><tr><th>column</th><th>kind</th><th>method</th><th>score</th><th>threshold</th>
<th>verdict</th></tr>{_drift_rows(result.drift)}{_drift_rows(result.prediction_drift)}</table>
<h2>Profile</h2><table><tr><th>column</th>{"".join(f"<th>{m}</th>" for m in _PROFILED)}</tr>{profile}</table>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def render_full_report(path: Path, model: MonitoredModel, result: DayResult, reference: Reference,
                       current: pd.DataFrame) -> Path:
    """Evidently's page of ``result``'s day on the columns the day's verdicts compared."""
    return render_html_report(reference.features, feature_frame(current, model.config, list(model.features)), path,
                              numerical=result.numerical, categorical=result.categorical)
