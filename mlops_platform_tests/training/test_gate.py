"""The promotion gate and alias moves in a real MLflow registry: worse candidates are refused, better ones promoted."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mlops_platform.ml.gate import (
    CHALLENGER,
    CHAMPION,
    HISTORY_TAG,
    PROMOTED_FROM_TAG,
    RegistryError,
    evaluate_against_champion,
    promote,
    rollback,
    thresholds,
)
from mlops_platform.ml.model_data import TrainingLineage, held_out
from mlops_platform.ml.training import SPLIT, train_model
from mlops_platform.settings import MetricGate
from mlops_platform_tests.training.conftest import small_budget

LINEAGE = TrainingLineage(table="dev.training.flights", path="/data/warehouse/training/flights", version=9)
# Three boosting rounds: a real but underfit model, above the 0.60 floor and well below a tuned one.
UNDERFIT_SPACE = {"learning_rate": (0.04, 0.05), "max_iter": (3, 4)}


def shuffled_labels(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Train and validation labels permuted (no signal left to learn); test rows keep their true labels."""
    noisy = frame.copy()
    fitted = noisy[SPLIT] != "test"
    noisy.loc[fitted, label] = np.random.default_rng(0).permutation(noisy.loc[fitted, label].to_numpy())
    return noisy


@pytest.fixture(scope="module")
def noise(module_registry, classifier_config, classifier_frame, features):
    """A model trained on shuffled labels, registered as its own model with no champion."""
    config = small_budget(classifier_config, trials=1).model_copy(update={"registered_name": "flights_delay_noise"})
    experiment_id = module_registry.experiment_id("/flights/flights_delay_noise")
    return config, train_model(config, shuffled_labels(classifier_frame, config.label), features,
                               experiment_id=experiment_id, lineage=LINEAGE)


def _aliases(client, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def _history(client, name: str) -> list[int]:
    return json.loads(client.get_registered_model(name).tags[HISTORY_TAG])


def test_a_worse_candidate_is_refused_a_better_one_promoted_and_rollback_restores(
        module_registry, noise, classifier_config, classifier_frame, features):
    client = module_registry.client()
    experiment_id = module_registry.experiment_id("/flights/flights_delay")
    name, metric = classifier_config.registered_name, "roc_auc"
    rows = held_out(classifier_frame)

    def train(config, frame):
        return train_model(config, frame, features, experiment_id=experiment_id, lineage=LINEAGE)

    def gate(version):
        return evaluate_against_champion(client, classifier_config, version, rows, experiment_id=experiment_id)

    underfit = train(small_budget(classifier_config, trials=1, space=UNDERFIT_SPACE), classifier_frame)
    first = gate(underfit.registered_version)
    assert first.passed, first.failures
    assert first.champion_version is None
    assert promote(client, name).current == underfit.registered_version
    assert _aliases(client, name) == {CHAMPION: underfit.registered_version}

    # The shuffled-label model, registered again as a candidate version of this model.
    worse = mlflow.register_model(noise[1].model_uri, name).version
    refused = gate(worse)
    assert not refused.passed
    assert refused.champion_version == underfit.registered_version
    assert refused.candidate_metrics[metric] < refused.champion_metrics[metric]
    assert any("minimum absolute change" in failure for failure in refused.failures), refused.failures
    assert _aliases(client, name) == {CHAMPION: underfit.registered_version}
    with pytest.raises(RegistryError, match="no 'challenger'"):
        promote(client, name)

    tuned = train(classifier_config, classifier_frame)
    accepted = gate(tuned.registered_version)
    assert accepted.passed, accepted.failures
    assert accepted.candidate_metrics[metric] >= (accepted.champion_metrics[metric]
                                                  + classifier_config.gate[metric].min_absolute_change)
    assert _aliases(client, name) == {CHAMPION: underfit.registered_version, CHALLENGER: tuned.registered_version}

    move = promote(client, name)
    assert (move.previous, move.current) == (underfit.registered_version, tuned.registered_version)
    assert _aliases(client, name) == {CHAMPION: tuned.registered_version}
    assert _history(client, name) == [int(underfit.registered_version)]
    assert client.get_model_version(name, tuned.registered_version).tags[PROMOTED_FROM_TAG] == \
        underfit.registered_version

    back = rollback(client, name)
    assert (back.previous, back.current) == (tuned.registered_version, underfit.registered_version)
    assert _aliases(client, name) == {CHAMPION: underfit.registered_version}
    assert _history(client, name) == []
    with pytest.raises(RegistryError, match="nothing to roll back"):
        rollback(client, name)


def test_without_a_champion_only_the_floors_apply(module_registry, noise, classifier_frame):
    config, model = noise
    client = module_registry.client()

    decision = evaluate_against_champion(client, config, model.registered_version, held_out(classifier_frame),
                                         experiment_id=model.experiment_id)

    assert not decision.passed
    assert decision.champion_version is None and decision.champion_metrics == {}
    assert decision.candidate_metrics["roc_auc"] < config.gate["roc_auc"].min_value
    assert len(decision.failures) == 1 and "threshold check failed" in decision.failures[0]
    assert "Minimum Absolute Change" not in decision.thresholds["roc_auc"]
    assert _aliases(client, config.registered_name) == {}
    assert client.get_model_version(config.registered_name, model.registered_version).tags["gate.passed"] == "false"


def test_thresholds_take_the_floor_that_fits_the_direction_and_changes_only_against_a_champion():
    gate = {
        "roc_auc": MetricGate(min_value=0.6, min_absolute_change=0.002),
        "root_mean_squared_error": MetricGate(max_value=60.0, min_relative_change=0.01, greater_is_better=False),
        "f1_score": MetricGate(min_absolute_change=0.01),
    }

    alone = thresholds(gate, against_champion=False)
    against = thresholds(gate, against_champion=True)

    assert set(alone) == {"roc_auc", "root_mean_squared_error"}
    assert alone["roc_auc"].threshold == 0.6 and alone["roc_auc"].min_absolute_change is None
    assert alone["root_mean_squared_error"].threshold == 60.0
    assert not alone["root_mean_squared_error"].greater_is_better
    assert against["roc_auc"].min_absolute_change == 0.002
    assert against["root_mean_squared_error"].min_relative_change == 0.01
    assert against["f1_score"].threshold is None and against["f1_score"].min_absolute_change == 0.01


def test_a_floor_on_the_wrong_side_of_the_metric_is_a_configuration_error():
    with pytest.raises(ValueError, match="max_value"):
        thresholds({"root_mean_squared_error": MetricGate(min_value=1.0, greater_is_better=False)},
                   against_champion=False)


def test_promoting_or_rolling_back_an_unknown_model_fails_loudly(registry):
    client = registry.client()
    with pytest.raises(MlflowException, match="not found"):
        promote(client, "no_such_model")
    with pytest.raises(MlflowException, match="not found"):
        rollback(client, "no_such_model")


def test_the_models_predict_on_one_openmp_thread_in_the_gate(module_registry, noise, classifier_frame, monkeypatch):
    """Idle OpenMP threads spin on a loaded machine; the gate predicts on one, whatever its caller allows."""
    from threadpoolctl import threadpool_info, threadpool_limits

    config, model = noise
    evaluate = mlflow.models.evaluate
    seen = []

    def counting(*args, **kwargs):
        seen.append({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"})
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(mlflow.models, "evaluate", counting)
    with threadpool_limits(limits=2, user_api="openmp"):
        evaluate_against_champion(module_registry.client(), config, model.registered_version,
                                  held_out(classifier_frame), experiment_id=model.experiment_id)

    assert seen == [{1}]
