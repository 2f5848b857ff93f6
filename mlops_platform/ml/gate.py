"""The promotion gate and the registry moves around it, with MLflow aliases only (stages are deprecated).

- ``evaluate_against_champion`` scores the candidate version and the current ``champion`` on the same held-out
  rows with ``mlflow.models.evaluate`` and judges them with ``mlflow.validate_evaluation_results``. Floors
  (``min_value`` / ``max_value``) always apply; ``min_absolute_change`` / ``min_relative_change`` only when there
  is a champion to beat. A candidate that passes gets the ``challenger`` alias.
- ``promote`` moves ``champion`` to the challenger, appending the previous champion to the registered model's
  ``champion_history`` tag; ``rollback`` moves ``champion`` back to the last version of that history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_platform.ml.scoring import openmp_threads
from mlops_platform.settings import MetricGate, ModelConfig

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import EvaluationResult, MetricThreshold

# MLflow is imported where it is used: the alias names here are read by every definition module, and loading the
# definitions must not pay for MLflow.

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
PROMOTED_FROM_TAG = "promoted_from"
MODEL_TYPES = {"classification": "classifier", "regression": "regressor"}


class RegistryError(RuntimeError):
    """A promotion or rollback cannot happen in the registry's current state."""


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    registered_name: str
    candidate_version: str
    candidate_metrics: dict[str, float]
    champion_version: str | None
    champion_metrics: dict[str, float]
    thresholds: dict[str, str]
    failures: tuple[str, ...]
    evaluation_run_id: str


@dataclass(frozen=True)
class AliasMove:
    """What a promotion or rollback did: ``champion`` went from ``previous`` to ``current``."""

    registered_name: str
    previous: str | None
    current: str
    history: tuple[str, ...]


def thresholds(gate: Mapping[str, MetricGate], *, against_champion: bool) -> dict[str, MetricThreshold]:
    """MLflow thresholds from the model's gate configuration.

    ``MetricThreshold`` has one floor whose direction follows ``greater_is_better``, so a metric whose better
    values are higher takes ``min_value`` and one whose better values are lower takes ``max_value``.
    """
    from mlflow.models import MetricThreshold

    built = {}
    for metric, rule in gate.items():
        floor, other = (rule.min_value, rule.max_value) if rule.greater_is_better else (rule.max_value, rule.min_value)
        if other is not None:
            wanted = "min_value" if rule.greater_is_better else "max_value"
            raise ValueError(f"gate metric '{metric}': greater_is_better={rule.greater_is_better}, so its floor is "
                             f"'{wanted}'; remove the other bound ({other}) from the configuration")
        changes = {"min_absolute_change": rule.min_absolute_change, "min_relative_change": rule.min_relative_change}
        if not against_champion:
            changes = dict.fromkeys(changes)
        if floor is None and all(value is None for value in changes.values()):
            continue
        built[metric] = MetricThreshold(threshold=floor, greater_is_better=rule.greater_is_better, **changes)
    return built


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def _history(client: MlflowClient, name: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG, "[]")
    return [str(version) for version in json.loads(raw)]


def _input_columns(name: str, version: str) -> list[str]:
    import mlflow

    signature = mlflow.models.get_model_info(f"models:/{name}/{version}").signature
    if signature is None:
        raise ValueError(f"model {name} version {version} has no signature: the gate cannot tell its input columns")
    return signature.inputs.input_names()


def _evaluate(config: ModelConfig, version: str, data: pd.DataFrame, role: str,
              experiment_id: str) -> EvaluationResult:
    import mlflow

    from mlops_platform.ml.packaging import evaluation_model

    evaluator_config: dict[str, object] = {"log_model_explainability": False}
    if config.task == "classification":
        # Without these the positive class is guessed from the labels and predictions seen in this sample.
        evaluator_config |= {"pos_label": 1, "label_list": [0, 1]}
    # A nested run without an explicit experiment lands in the Default experiment, whose artifacts go to ./mlruns.
    with mlflow.start_run(experiment_id=experiment_id, nested=True, run_name=f"{role}-v{version}",
                          tags={"gate.role": role}):
        return mlflow.models.evaluate(
            evaluation_model(f"models:/{config.registered_name}/{version}"), data, targets=config.label,
            model_type=MODEL_TYPES[config.task], evaluator_config=evaluator_config,
        )


def _floats(result: EvaluationResult | None) -> dict[str, float]:
    return {} if result is None else {name: float(value) for name, value in result.metrics.items()}


def evaluate_against_champion(
    client: MlflowClient, config: ModelConfig, candidate_version: str | int, held_out: pd.DataFrame,
    *, experiment_id: str, threads: int = 1,
) -> GateDecision:
    """Judge ``candidate_version`` of ``config.registered_name`` against the thresholds and the current champion.

    ``held_out`` holds the label and at least every input column of both models (the test split of the
    candidate's training set). Only a threshold miss makes the decision negative; any other error propagates.
    Evaluation runs go through MLflow's fluent API, which must point at the same store as ``client``
    (``MlflowTracking.client()`` configures both). A failing candidate leaves every alias as it was.

    ``threads`` caps the OpenMP threads of the models' predictions, as ``train_model`` caps its fits: idle OpenMP
    threads spin, and on a loaded 2-core machine (load 6) the predictions on two threads took 11 of the 21 s of a
    job's two gates. A booster predicts each row on its own: the thread count changes the time, never a prediction.
    """
    with openmp_threads(threads):
        return _evaluate_against_champion(client, config, str(candidate_version), held_out,
                                          experiment_id=experiment_id)


def _evaluate_against_champion(client: MlflowClient, config: ModelConfig, candidate: str, held_out: pd.DataFrame,
                               *, experiment_id: str) -> GateDecision:
    import mlflow
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    name = config.registered_name
    champion = _aliases(client, name).get(CHAMPION)
    if champion == candidate:
        raise RegistryError(f"version {candidate} of {name} already is the champion: there is nothing to compare")
    versions = [candidate] + ([champion] if champion else [])
    columns = list(dict.fromkeys(c for version in versions for c in _input_columns(name, version)))
    missing = [column for column in [*columns, config.label] if column not in held_out.columns]
    if missing:
        raise KeyError(f"the held-out rows lack column(s) {missing} that the models of {name} need")
    data = held_out[[*columns, config.label]]
    rules = thresholds(config.gate, against_champion=champion is not None)

    title = f"gate-v{candidate}-vs-" + (f"champion-v{champion}" if champion else "floors")
    with mlflow.start_run(experiment_id=experiment_id, run_name=title,
                          tags={"model": name, "gate.candidate": candidate, "gate.champion": champion or ""}) as run:
        candidate_result = _evaluate(config, candidate, data, "candidate", experiment_id)
        unknown = sorted(set(config.gate) - set(candidate_result.metrics))
        if unknown:
            raise ValueError(f"gate metric(s) {unknown} of model '{name}' are not computed by mlflow.models.evaluate;"
                             f" choose among {sorted(candidate_result.metrics)}")
        champion_result = _evaluate(config, champion, data, "champion", experiment_id) if champion else None
        failures: tuple[str, ...] = ()
        try:
            mlflow.validate_evaluation_results(
                validation_thresholds=rules, candidate_result=candidate_result, baseline_result=champion_result,
            )
        except ModelValidationFailedException as exc:
            failures = tuple(line for line in exc.message.splitlines() if line.strip())
        passed = not failures
        mlflow.set_tags({"gate.passed": str(passed).lower()})
        mlflow.log_dict({"passed": passed, "thresholds": {m: str(t) for m, t in rules.items()},
                         "failures": list(failures)}, "gate.json")

    client.set_model_version_tag(name, candidate, "gate.passed", str(passed).lower())
    client.set_model_version_tag(name, candidate, "gate.run_id", run.info.run_id)
    if passed:
        client.set_registered_model_alias(name, CHALLENGER, candidate)
    return GateDecision(
        passed=passed, registered_name=name, candidate_version=candidate,
        candidate_metrics=_floats(candidate_result), champion_version=champion,
        champion_metrics=_floats(champion_result),
        thresholds={metric: str(rule) for metric, rule in rules.items()}, failures=failures,
        evaluation_run_id=run.info.run_id,
    )


def promote(client: MlflowClient, name: str) -> AliasMove:
    """Move ``champion`` to the current ``challenger`` and remember the version it replaces."""
    aliases = _aliases(client, name)
    challenger = aliases.get(CHALLENGER)
    if challenger is None:
        raise RegistryError(f"{name} has no '{CHALLENGER}' version to promote: train a candidate and let it pass "
                            "the gate (beats_champion) first")
    previous = aliases.get(CHAMPION)
    history = _history(client, name)
    if previous is not None and previous != challenger:
        history.append(previous)
    # History first: if a later step fails, rollback still knows the version that was champion before.
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([int(v) for v in history]))
    client.set_registered_model_alias(name, CHAMPION, challenger)
    client.set_model_version_tag(name, challenger, PROMOTED_FROM_TAG, previous or "none")
    client.delete_registered_model_alias(name, CHALLENGER)
    return AliasMove(name, previous, challenger, tuple(history))


def rollback(client: MlflowClient, name: str) -> AliasMove:
    """Move ``champion`` back to the version it replaced, as recorded by ``promote``."""
    history = _history(client, name)
    current = _aliases(client, name).get(CHAMPION)
    if not history:
        raise RegistryError(f"{name} has no earlier champion in its '{HISTORY_TAG}' tag (current champion: "
                            f"{current or 'none'}): there is nothing to roll back to")
    target = history.pop()
    # Raises if the version was deleted since it was champion, before any alias moves.
    client.get_model_version(name, target)
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([int(v) for v in history]))
    if current is not None:
        client.set_model_version_tag(name, current, "rolled_back_to", target)
    return AliasMove(name, current, target, tuple(history))
