"""The replay's progress line: days done and left, and an estimate that follows the recent pace."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from mlops_platform.replay import ETA_WINDOW_DAYS, DayOutcome, progress_after, replay, succeeded


def test_the_estimate_is_the_days_left_at_the_pace_of_the_recent_days():
    cheap, dear = [1.0] * 20, [10.0] * ETA_WINDOW_DAYS
    progress = progress_after(cheap + dear, total_days=50)

    assert (progress.done, progress.left) == (34, 16)
    assert progress.elapsed_seconds == pytest.approx(20 + 10 * ETA_WINDOW_DAYS)
    # The bootstrap days (no champion, cheap) no longer count once ETA_WINDOW_DAYS dearer days followed.
    assert progress.eta_seconds == pytest.approx(16 * 10.0)
    assert progress.describe() == "34/50 days, 2m40s so far, about 2m40s left"


def test_the_last_day_leaves_nothing_and_the_first_estimates_from_itself():
    assert progress_after([3.0, 5.0], total_days=2).eta_seconds == 0.0
    first = progress_after([4.0], total_days=181)
    assert (first.done, first.left, first.eta_seconds) == (1, 180, 720.0)
    assert first.describe() == "1/181 days, 4s so far, about 12m00s left"


def test_each_replayed_day_carries_its_progress(settings, flights):
    from mlops_platform.defs import build_definitions

    days = [dt.date(2013, 1, 1) + dt.timedelta(days=offset) for offset in range(3)]
    seen = []
    outcomes = replay(settings, flights, build_definitions(settings), dg.DagsterInstance.ephemeral(), days,
                      lambda outcome: seen.append(outcome.progress))

    assert all(outcome.success for outcome in outcomes)
    assert [(p.done, p.left) for p in seen] == [(1, 2), (2, 1), (3, 0)]
    assert seen[-1].eta_seconds == 0.0 and seen[0].eta_seconds > 0
    assert seen[0].elapsed_seconds < seen[1].elapsed_seconds < seen[2].elapsed_seconds


def test_a_failed_training_run_fails_the_replay_though_the_days_went_on():
    day = dt.date(2013, 2, 4)
    quiet = DayOutcome(day=day, success=True)
    retraining_failed = DayOutcome(day=day, success=True, errors=["flights__serving__delay_staging: ServingError"])

    assert succeeded([quiet, quiet])
    assert not succeeded([quiet, retraining_failed])
    assert not succeeded([DayOutcome(day=day, success=False)])
