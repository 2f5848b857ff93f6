"""The replay's one-page summary: a plot of drift, quality and champion versions, and the timeline with links."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections import Counter

from mlops_platform.monitoring.summary import write_replay_summary
from mlops_platform.replay import DayOutcome, RunTiming

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _outcomes() -> list[DayOutcome]:
    first = dt.date(2013, 4, 1)
    outcomes = []
    for offset in range(6):
        drifted = offset >= 3
        outcomes.append(DayOutcome(
            day=first + dt.timedelta(days=offset), success=True, checks=Counter(passed=20, failed=int(drifted)),
            failed_checks=["monitoring/flights_delay_drift:feature_drift"] if drifted else [],
            drift_share=0.7 if drifted else 0.2, quality=0.61 + offset / 100, scored_by="1",
            champion="2" if offset >= 4 else "1",
            retraining="retrained (feature_drift): champion v1 -> v2" if offset == 4 else "",
            timing=RunTiming(wall_seconds=5.0, compute_seconds=3.0)))
    return outcomes


def test_the_summary_embeds_a_plot_and_lists_every_day_with_its_report(tmp_path):
    outcomes = _outcomes()
    reports = {outcomes[0].day: tmp_path / "drift_2013-04-01.html"}
    reports[outcomes[0].day].write_text("<html></html>")

    page = write_replay_summary(tmp_path / "summary.html", "flights replay", outcomes, drift_threshold=0.5,
                                quality_metric="roc_auc", report_for_day=reports.get).read_text()

    image = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert image and base64.b64decode(image.group(1)).startswith(PNG_SIGNATURE)
    rows = re.findall(r"<tr class='(retrain)?'><td>(\d{4}-\d\d-\d\d)</td>", page)
    assert [day for _, day in rows] == [o.day.isoformat() for o in outcomes]
    assert [bool(flag) for flag, _ in rows] == [bool(o.retraining) for o in outcomes]
    assert page.count(">report</a>") == 1 and reports[outcomes[0].day].resolve().as_uri() in page
    assert "1 retraining run(s)" in page
    assert "wall time 30 s, of which 18 s inside steps and 12 s orchestration" in page
