"""A monitored day's window, and how far back monitoring must read predictions to build it."""

from __future__ import annotations

import datetime as dt

import pytest

from mlops_platform.monitoring.decisions import window_reach, window_start
from mlops_platform.settings import MonitoringWindow

DAY = dt.date(2013, 6, 30)


@pytest.mark.parametrize("window", [MonitoringWindow(), MonitoringWindow(days=7), MonitoringWindow(min_rows=50),
                                    MonitoringWindow(days=28, min_rows=28, max_days=60)])
@pytest.mark.parametrize("rows_a_day", [0, 1, 3, 400])
def test_a_days_window_never_starts_before_the_predictions_monitoring_reads(window, rows_a_day):
    rows_per_day = {DAY - dt.timedelta(days=back): rows_a_day for back in range(120)}

    first = window_start(rows_per_day, DAY, window)

    assert (DAY - first).days + 1 <= window_reach(window)


def test_a_window_of_the_day_alone_reads_the_day_alone_and_one_of_rows_reads_up_to_its_limit():
    assert window_reach(MonitoringWindow()) == 1
    assert window_reach(MonitoringWindow(days=7)) == 7
    assert window_reach(MonitoringWindow(days=7, min_rows=100, max_days=30)) == 30
