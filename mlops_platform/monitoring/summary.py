"""The one-page HTML summary of a replay: drift, quality and champion versions over the days, and the timeline.

Plots are PNGs embedded in the page, so the file can be mailed or attached as it is; each day links to its
compact drift report (which links Evidently's full page, rendered on demand).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class RunTimes(Protocol):
    wall_seconds: float
    compute_seconds: float


class DayOutcome(Protocol):
    """What the summary reads of a replayed day (the replay's ``DayOutcome`` has it; this layer may not import it)."""

    day: dt.date
    success: bool
    failed_checks: list[str]
    drift_share: float | None
    quality: float | None
    scored_by: str | None
    champion: str | None
    retraining: str
    timing: RunTimes


def _figure(outcomes: Sequence[DayOutcome], drift_threshold: float, quality_metric: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [o.day for o in outcomes]
    figure, (drift, quality, champion) = plt.subplots(3, 1, figsize=(11, 8), sharex=True,
                                                      gridspec_kw={"height_ratios": [3, 3, 1.4]})
    drift.plot(days, [o.drift_share for o in outcomes], marker=".", linewidth=1, label="share of drifted features")
    drift.axhline(drift_threshold, color="tab:red", linestyle="--", linewidth=1, label="drift threshold")
    drift.set_ylabel("drift share")
    drift.set_ylim(0, 1)
    quality.plot(days, [o.quality for o in outcomes], marker=".", linewidth=1, color="tab:green",
                 label=f"daily {quality_metric}")
    quality.set_ylabel(quality_metric)
    champion.step(days, [int(o.champion) if o.champion else None for o in outcomes], where="post",
                  color="tab:purple")
    champion.set_ylabel("champion")
    for axis in (drift, quality, champion):
        for outcome in outcomes:
            if outcome.retraining:
                axis.axvline(outcome.day, color="tab:orange", alpha=0.5, linewidth=1)
        axis.grid(alpha=0.3)
    # The days before the first champion have nothing to plot; they stay on the axis, as part of the story.
    champion.set_xlim(days[0], days[-1])
    champion.yaxis.get_major_locator().set_params(integer=True)
    drift.plot([], [], color="tab:orange", alpha=0.5, label="retraining")
    drift.legend(loc="upper left", fontsize=8)
    quality.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _cell(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def write_replay_summary(path: Path, title: str, outcomes: Sequence[DayOutcome], *, drift_threshold: float,
                         quality_metric: str, report_for_day) -> Path:
    """Write the page to ``path``; ``report_for_day(day)`` gives the drift report of a day (or None)."""
    image = base64.b64encode(_figure(outcomes, drift_threshold, quality_metric)).decode()
    rows = []
    for outcome in outcomes:
        report = report_for_day(outcome.day)
        link = f'<a href="{html.escape(report.resolve().as_uri())}">report</a>' if report else ""
        status = "ok" if outcome.success else "FAILED"
        rows.append(
            f"<tr class='{'retrain' if outcome.retraining else ''}'><td>{outcome.day}</td><td>{status}</td>"
            f"<td>{_cell(outcome.drift_share)}</td><td>{_cell(outcome.quality)}</td>"
            f"<td>{_cell(outcome.scored_by)}</td><td>{_cell(outcome.champion)}</td>"
            f"<td>{_cell(outcome.retraining)}</td><td>{_cell(', '.join(outcome.failed_checks))}</td>"
            f"<td>{link}</td></tr>")
    retrainings = sum(1 for o in outcomes if o.retraining)
    wall = sum(o.timing.wall_seconds for o in outcomes)
    compute = sum(o.timing.compute_seconds for o in outcomes)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
tr.retrain {{ background: #fff3e0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(outcomes)} days from {outcomes[0].day} to {outcomes[-1].day}; {retrainings} retraining run(s);
wall time {wall:.0f} s, of which {compute:.0f} s inside steps and {wall - compute:.0f} s orchestration.
Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.</p>
<img alt="drift share, {html.escape(quality_metric)} and champion version per day" src="data:image/png;base64,{image}">
<h2>Timeline</h2>
<table><tr><th>day</th><th>run</th><th>drift share</th><th>{html.escape(quality_metric)}</th><th>scored by</th>
<th>champion after</th><th>retraining</th><th>failed checks</th><th>drift report</th></tr>
{''.join(rows)}
</table></body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
