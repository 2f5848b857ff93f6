"""Hyperparameter search behind one small interface, so the search library can change without touching training.

Hyperopt is unmaintained and Databricks recommends Optuna after ML runtime 16.4; a replacement only has to
implement ``Tuner.minimize``. Both fit trials on threads (the booster's fit releases the GIL) and give the same trials
for the same seed: ``HyperoptTuner`` (the default) fits its random start-up trials together, ``OptunaTuner`` asks and
tells batches in a fixed order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np

Params = dict[str, float | int]
Space = Mapping[str, tuple[float, float]]
Objective = Callable[[Params], float]


@dataclass(frozen=True)
class Trial:
    number: int
    params: Params
    loss: float
    seconds: float


@dataclass(frozen=True)
class TuningResult:
    best_params: Params
    trials: tuple[Trial, ...]

    @property
    def best_loss(self) -> float:
        return min(trial.loss for trial in self.trials)


class Tuner(Protocol):
    def minimize(
        self, objective: Objective, space: Space, max_trials: int, timeout_seconds: float, seed: int
    ) -> TuningResult:
        """Call ``objective`` on at most ``max_trials`` points of ``space`` and return the lowest one.

        ``space`` maps a parameter to inclusive (low, high) bounds; the parameter is an integer when both
        bounds are integers. The search stops early once ``timeout_seconds`` have passed. The same seed
        and objective give the same trials.
        """
        ...


def is_integer_range(bounds: tuple[float, float]) -> bool:
    # YAML turns `[100, 300]` into ints and `[0.0, 1.0]` into floats: the author's spelling decides the type.
    return all(isinstance(bound, int) and not isinstance(bound, bool) for bound in bounds)


def _check_space(space: Space) -> None:
    if not space:
        raise ValueError("the tuning space is empty: give at least one hyperparameter with (low, high) bounds")
    for name, (low, high) in space.items():
        if not low < high:
            raise ValueError(f"hyperparameter '{name}': low bound {low} must be below high bound {high}")


class HyperoptTuner:
    """Tree-structured Parzen estimator (Hyperopt's TPE), seeded; its random start-up trials ``parallel`` at a time.

    TPE draws its first ``max_trials // 2`` points at random, each from the next seed of the search's generator, and
    models the losses only after them: those points depend on the seed alone. They are drawn up front by a search on
    a stand-in objective with the same seed, fitted ``parallel`` at a time on threads, and handed to the real search,
    which draws the same points again and finds their losses ready; the modelled half runs one trial at a time. The
    trials, losses and best point are those of a search run one trial at a time. The objective must be safe to call
    from several threads at once.
    """

    def __init__(self, parallel: int = 1) -> None:
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, not {parallel}")
        self.parallel = parallel

    def minimize(
        self, objective: Objective, space: Space, max_trials: int, timeout_seconds: float, seed: int
    ) -> TuningResult:
        from hyperopt import STATUS_OK, Trials, fmin, hp, tpe

        _check_space(space)
        search_space = {
            name: hp.quniform(name, low, high, 1) if is_integer_range((low, high)) else hp.uniform(name, low, high)
            for name, (low, high) in space.items()
        }
        # TPE only models the space after its random start-up trials (20 by default); with the small budgets
        # we run, that default would make every trial random. Half the budget explores, half exploits.
        startup = max(1, max_trials // 2)
        algorithm = partial(tpe.suggest, n_startup_jobs=startup)

        def typed(raw: Mapping[str, float]) -> Params:
            # quniform yields floats such as 137.0; estimators want ints for counts.
            return {name: round(float(raw[name])) if is_integer_range(space[name]) else float(raw[name])
                    for name in space}

        def search(evaluate: Callable[[Mapping[str, float]], float], evaluations: int, timeout: float) -> None:
            fmin(lambda raw: {"loss": evaluate(raw), "status": STATUS_OK}, search_space, algo=algorithm,
                 max_evals=evaluations, timeout=timeout, trials=Trials(), rstate=np.random.default_rng(seed),
                 show_progressbar=False)

        started = time.perf_counter()
        drawn: list[Params] = []
        ready: dict[str, tuple[float, float]] = {}
        if self.parallel > 1:

            def draw(raw: Mapping[str, float]) -> float:
                # No start-up draw reads a loss, so any constant stands in for them.
                drawn.append(typed(raw))
                return 0.0

            search(draw, min(startup, max_trials), timeout_seconds)
            ready = self._fit_together(objective, drawn, started + timeout_seconds)

        trials: list[Trial] = []

        def evaluate(raw: Mapping[str, float]) -> float:
            params = typed(raw)
            loss, seconds = ready.get(_key(params)) or _timed(objective, params)
            trials.append(Trial(len(trials), params, loss, seconds))
            return loss

        remaining = timeout_seconds - (time.perf_counter() - started)
        if remaining > 0:
            search(evaluate, max_trials, remaining)
        if not trials:
            # Every start-up trial ran together and the budget was spent before the search could collect them.
            trials = [Trial(number, params, *ready[_key(params)]) for number, params in enumerate(drawn)
                      if _key(params) in ready]
        best = min(trials, key=lambda trial: trial.loss)
        return TuningResult(best_params=dict(best.params), trials=tuple(trials))

    def _fit_together(self, objective: Objective, points: list[Params], deadline: float
                      ) -> dict[str, tuple[float, float]]:
        """The loss and seconds of each point that started before ``deadline``, ``parallel`` at a time."""

        def fit(params: Params) -> tuple[float, float] | None:
            return _timed(objective, params) if time.perf_counter() < deadline else None

        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="trial") as pool:
            return {_key(params): result for params, result in zip(points, pool.map(fit, points), strict=True)
                    if result is not None}


def _key(params: Params) -> str:
    return repr(sorted(params.items()))


def _timed(objective: Objective, params: Params) -> tuple[float, float]:
    started = time.perf_counter()
    loss = _finite(float(objective(params)), params)
    return loss, time.perf_counter() - started


def _finite(loss: float, params: Params) -> float:
    if not np.isfinite(loss):
        raise ValueError(f"the objective returned {loss} for {params}: a loss must be a finite number")
    return loss


class OptunaTuner:
    """Optuna's TPE, seeded, ``parallel`` trials at a time.

    Each batch is asked for together (TPE's constant liar keeps the points of one batch apart), evaluated on
    ``parallel`` threads and told back in the order it was asked, so the search does not depend on which trial
    finished first. The objective must be safe to call from several threads at once.
    """

    def __init__(self, parallel: int = 1) -> None:
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, not {parallel}")
        self.parallel = parallel

    def minimize(
        self, objective: Objective, space: Space, max_trials: int, timeout_seconds: float, seed: int
    ) -> TuningResult:
        import optuna
        from optuna.distributions import FloatDistribution, IntDistribution

        _check_space(space)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        distributions = {
            name: IntDistribution(int(low), int(high)) if is_integer_range((low, high))
            else FloatDistribution(float(low), float(high))
            for name, (low, high) in space.items()
        }
        # As for Hyperopt: half the budget explores at random, half exploits.
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, max_trials // 2), constant_liar=True)
        study = optuna.create_study(direction="minimize", sampler=sampler)
        trials: list[Trial] = []

        started = time.perf_counter()
        evaluate = partial(_timed, objective)
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="trial") as pool:
            while len(trials) < max_trials and time.perf_counter() - started < timeout_seconds:
                batch = [study.ask(distributions) for _ in range(min(self.parallel, max_trials - len(trials)))]
                typed = [{name: trial.params[name] for name in space} for trial in batch]
                for trial, params, (loss, seconds) in zip(batch, typed, pool.map(evaluate, typed), strict=True):
                    study.tell(trial, loss)
                    trials.append(Trial(len(trials), params, loss, seconds))
        best = min(trials, key=lambda trial: trial.loss)
        return TuningResult(best_params=dict(best.params), trials=tuple(trials))
