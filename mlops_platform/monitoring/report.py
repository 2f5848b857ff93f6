"""The day's report people open: a compact page of every verdict, and Evidently's full page when it is worth it.

The compact page (a few kilobytes, no scripts) lists the day's verdicts, each column's drift method, score,
threshold and verdict, the prediction, serving and quality figures and the profile. Evidently's page (about 4 MB
and most of a day's monitoring time when rendered daily) is rendered only for a day whose features drift or whose
quality drops, or on demand (``mlops report``); the compact page links it by name either way. Both are named here, their one owner.
"""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

import pandas as pd

from mlops_platform.ml.scoring import feature_frame
from mlops_platform.monitoring.day import DayResult, MonitoredModel, Reference, Verdicts
from mlops_platform.monitoring.drift import DriftResult, render_html_report

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


def write_compact_report(path: Path, title: str, result: DayResult, verdicts: Verdicts | None,
                         full_report: Path | None, *, usecase: str) -> Path:
    """Write the day's compact page to ``path``; ``verdicts`` are the checks' (None for a day before the latest of
    a range run, whose checks are not evaluated), ``full_report`` Evidently's page if it was rendered."""
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
    link = f"<a href='{html.escape(full_name(result.day))}'>Evidently's full drift page</a>"
    full = (f"<p>{link}</p>" if full_report else
            f"<p>{link}: not rendered for this day, since its features did not drift and its quality did not drop; "
            f"<code>mlops report --usecase {html.escape(usecase)} --day {result.day.isoformat()}</code> renders it.</p>")
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
<h2>Feature drift</h2><table><tr><th>column</th><th>kind</th><th>method</th><th>score</th><th>threshold</th>
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
