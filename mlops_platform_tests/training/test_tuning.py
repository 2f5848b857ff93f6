"""The tuner: exact budgets, typed parameters inside their bounds, and the same trials for the same seed (and, for
Hyperopt, whether its start-up trials run one at a time or together)."""

from __future__ import annotations

import threading

import pytest

from mlops_platform.ml.tuning import HyperoptTuner, OptunaTuner

SPACE = {"learning_rate": (0.02, 0.3), "max_leaf_nodes": (15, 63)}
TUNERS = [HyperoptTuner, lambda: HyperoptTuner(parallel=2), lambda: OptunaTuner(parallel=1),
          lambda: OptunaTuner(parallel=2)]
TUNER_IDS = ["hyperopt", "hyperopt-parallel", "optuna", "optuna-parallel"]


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


@pytest.mark.parametrize(("tuner", "batch"), zip(TUNERS, [1, 2, 1, 2], strict=True), ids=TUNER_IDS)
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


@pytest.mark.parametrize("max_trials", [1, 2, 4, 7, 8, 12])
@pytest.mark.parametrize("seed", [0, 42])
def test_hyperopt_start_up_trials_drawn_up_front_are_the_trials_drawn_one_at_a_time(max_trials: int, seed: int):
    # What the default tuning relies on for its gate decisions: fitting the random start-up trials together changes
    # no trial, no loss and no best point.
    space = {**SPACE, "l2_regularization": (0.0, 1.0), "max_iter": (100, 300)}

    def loss(params: dict) -> float:
        return _bowl(params) + params["l2_regularization"] / 10 + abs(params["max_iter"] - 180) / 1000

    sequential = HyperoptTuner().minimize(loss, space, max_trials=max_trials, timeout_seconds=60, seed=seed)
    together = HyperoptTuner(parallel=2).minimize(loss, space, max_trials=max_trials, timeout_seconds=60, seed=seed)

    assert [(t.number, t.params, t.loss) for t in together.trials] == [
        (t.number, t.params, t.loss) for t in sequential.trials]
    assert together.best_params == sequential.best_params


def test_hyperopt_fits_its_start_up_trials_together_and_each_point_once():
    # The first two trials must overlap (each waits until the other has started); the search then finds their
    # losses ready instead of fitting them again.
    barrier = threading.Barrier(2, timeout=10)
    calls: list[dict] = []
    lock = threading.Lock()

    def counted(params: dict) -> float:
        with lock:
            calls.append(params)
            first_two = len(calls) <= 2
        if first_two:
            barrier.wait()
        return _bowl(params)

    result = HyperoptTuner(parallel=2).minimize(counted, SPACE, max_trials=4, timeout_seconds=60, seed=5)

    assert len(calls) == 4 and [trial.number for trial in result.trials] == [0, 1, 2, 3]
    assert sorted(map(str, calls)) == sorted(str(trial.params) for trial in result.trials)


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
