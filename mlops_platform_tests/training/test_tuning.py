"""The tuner: exact budgets, typed parameters inside their bounds, and the same trials for the same seed."""

from __future__ import annotations

import threading

import pytest

from mlops_platform.ml.tuning import HyperoptTuner

SPACE = {"learning_rate": (0.02, 0.3), "max_leaf_nodes": (15, 63)}


def _bowl(params: dict) -> float:
    return (params["learning_rate"] - 0.1) ** 2 + abs(params["max_leaf_nodes"] - 40) / 100


def test_runs_exactly_the_budget_and_returns_the_lowest_trial():
    result = HyperoptTuner().minimize(_bowl, SPACE, max_trials=7, timeout_seconds=60, seed=1)

    assert len(result.trials) == 7
    best = min(result.trials, key=lambda trial: trial.loss)
    assert result.best_params == best.params
    assert result.best_loss == best.loss


def test_integer_bounds_give_integers_and_every_value_stays_in_bounds():
    result = HyperoptTuner().minimize(_bowl, SPACE, max_trials=10, timeout_seconds=60, seed=3)

    for trial in result.trials:
        assert type(trial.params["max_leaf_nodes"]) is int
        assert type(trial.params["learning_rate"]) is float
        assert 15 <= trial.params["max_leaf_nodes"] <= 63
        assert 0.02 <= trial.params["learning_rate"] <= 0.3


def test_the_same_seed_replays_the_same_trials_and_another_seed_does_not():
    first = HyperoptTuner().minimize(_bowl, SPACE, max_trials=6, timeout_seconds=60, seed=42)
    again = HyperoptTuner().minimize(_bowl, SPACE, max_trials=6, timeout_seconds=60, seed=42)
    other = HyperoptTuner().minimize(_bowl, SPACE, max_trials=6, timeout_seconds=60, seed=7)

    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert [t.params for t in first.trials] != [t.params for t in other.trials]


def test_the_timeout_stops_the_search_before_the_budget():
    # The first trial outlasts the timeout whatever the machine's load, so exactly one trial runs: a count that does
    # not depend on how fast two shared cores happen to be.
    never = threading.Event()

    def outlasting(params: dict) -> float:
        never.wait(0.3)
        return _bowl(params)

    result = HyperoptTuner().minimize(outlasting, SPACE, max_trials=50, timeout_seconds=0.2, seed=0)

    assert len(result.trials) == 1


def test_a_non_finite_loss_and_an_empty_space_are_refused():
    with pytest.raises(ValueError, match="finite"):
        HyperoptTuner().minimize(lambda params: float("nan"), SPACE, max_trials=2, timeout_seconds=60, seed=0)
    with pytest.raises(ValueError, match="empty"):
        HyperoptTuner().minimize(_bowl, {}, max_trials=2, timeout_seconds=60, seed=0)
