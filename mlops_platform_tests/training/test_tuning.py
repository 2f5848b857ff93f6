"""The tuner: exact budgets, typed parameters inside their bounds, and the same trials for the same seed."""

from __future__ import annotations

import threading

import pytest

from mlops_platform.ml.tuning import HyperoptTuner, OptunaTuner

SPACE = {"learning_rate": (0.02, 0.3), "max_leaf_nodes": (15, 63)}
TUNERS = [HyperoptTuner, lambda: OptunaTuner(parallel=1), lambda: OptunaTuner(parallel=2)]
TUNER_IDS = ["hyperopt", "optuna", "optuna-parallel"]


def _bowl(params: dict) -> float:
    return (params["learning_rate"] - 0.1) ** 2 + abs(params["max_leaf_nodes"] - 40) / 100


@pytest.mark.parametrize("tuner", TUNERS, ids=TUNER_IDS)
def test_runs_exactly_the_budget_and_returns_the_lowest_trial(tuner):
    result = tuner().minimize(_bowl, SPACE, max_trials=7, timeout_seconds=60, seed=1)

    assert len(result.trials) == 7
    best = min(result.trials, key=lambda trial: trial.loss)
    assert result.best_params == best.params
    assert result.best_loss == best.loss


@pytest.mark.parametrize("tuner", TUNERS, ids=TUNER_IDS)
def test_integer_bounds_give_integers_and_every_value_stays_in_bounds(tuner):
    result = tuner().minimize(_bowl, SPACE, max_trials=10, timeout_seconds=60, seed=3)

    for trial in result.trials:
        assert type(trial.params["max_leaf_nodes"]) is int
        assert type(trial.params["learning_rate"]) is float
        assert 15 <= trial.params["max_leaf_nodes"] <= 63
        assert 0.02 <= trial.params["learning_rate"] <= 0.3


@pytest.mark.parametrize("tuner", TUNERS, ids=TUNER_IDS)
def test_the_same_seed_replays_the_same_trials_and_another_seed_does_not(tuner):
    first = tuner().minimize(_bowl, SPACE, max_trials=6, timeout_seconds=60, seed=42)
    again = tuner().minimize(_bowl, SPACE, max_trials=6, timeout_seconds=60, seed=42)
    other = tuner().minimize(_bowl, SPACE, max_trials=6, timeout_seconds=60, seed=7)

    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert [t.params for t in first.trials] != [t.params for t in other.trials]


@pytest.mark.parametrize(("tuner", "batch"), zip(TUNERS, [1, 1, 2], strict=True), ids=TUNER_IDS)
def test_the_timeout_stops_the_search_before_the_budget(tuner, batch: int):
    # The first trials outlast the timeout whatever the machine's load, so exactly one batch runs: a count that
    # does not depend on how fast two shared cores happen to be.
    never = threading.Event()

    def outlasting(params: dict) -> float:
        never.wait(0.3)
        return _bowl(params)

    result = tuner().minimize(outlasting, SPACE, max_trials=50, timeout_seconds=0.2, seed=0)

    assert len(result.trials) == batch


@pytest.mark.parametrize("tuner", TUNERS, ids=TUNER_IDS)
def test_a_non_finite_loss_and_an_empty_space_are_refused(tuner):
    with pytest.raises(ValueError, match="finite"):
        tuner().minimize(lambda params: float("nan"), SPACE, max_trials=2, timeout_seconds=60, seed=0)
    with pytest.raises(ValueError, match="empty"):
        tuner().minimize(_bowl, {}, max_trials=2, timeout_seconds=60, seed=0)


def test_parallel_trials_run_at_the_same_time_and_are_told_in_the_order_asked():
    # Two trials of a batch must overlap: each waits until the other has started.
    barrier = threading.Barrier(2, timeout=10)

    def together(params: dict) -> float:
        barrier.wait()
        return _bowl(params)

    result = OptunaTuner(parallel=2).minimize(together, SPACE, max_trials=4, timeout_seconds=60, seed=5)
    sequential = OptunaTuner(parallel=2).minimize(_bowl, SPACE, max_trials=4, timeout_seconds=60, seed=5)

    assert [trial.number for trial in result.trials] == [0, 1, 2, 3]
    assert [trial.params for trial in result.trials] == [trial.params for trial in sequential.trials]
    # Constant liar: the two points of one batch differ.
    assert result.trials[2].params != result.trials[3].params
