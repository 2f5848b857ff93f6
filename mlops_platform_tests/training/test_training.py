"""Training against a real MLflow store: trials as nested runs, a servable model, plots, lineage, reproducibility."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mlops_platform.ml.gate import CHALLENGER, evaluate_against_champion
from mlops_platform.ml.model_data import TrainingLineage, held_out, model_frame
from mlops_platform.ml.training import search_space, train_model
from mlops_platform_tests.training.conftest import ORDER_BY, small_budget

LINEAGE = TrainingLineage(
    table="dev.training.flights", path="/data/warehouse/training/flights", version=4,
    input_versions={"gold.flights": 12, "features.carrier_delays": 7, "features.origin_weather": 3},
    dagster_run_id="0f1e2d3c-run",
)
CLASSIFIER_PLOTS = {"roc_curve.png", "precision_recall_curve.png", "confusion_matrix.png", "feature_importance.png"}
REGRESSOR_PLOTS = {"residuals.png", "predicted_vs_actual.png", "feature_importance.png"}


@pytest.fixture(scope="module")
def trained(module_registry, classifier_config, classifier_frame, features):
    experiment_id = module_registry.experiment_id("/flights/flights_delay")
    return train_model(classifier_config, classifier_frame, features, experiment_id=experiment_id, lineage=LINEAGE)


def _artifact_names(client, run_id: str, folder: str | None = None) -> set[str]:
    return {Path(item.path).name for item in client.list_artifacts(run_id, folder)}


def test_tuning_runs_exactly_the_configured_trials_as_nested_runs(module_registry, trained, classifier_config):
    client = module_registry.client()
    trials = client.search_runs([trained.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{trained.run_id}'")

    assert len(trials) == classifier_config.tuning.max_trials == trained.trials == 3
    for trial in trials:
        assert set(classifier_config.tuning.space) <= set(trial.data.params)
        assert "validation_roc_auc" in trial.data.metrics
    # The parent reports the validation score of the best trial, and refits that trial's parameters.
    best = max(trials, key=lambda run: run.data.metrics["validation_roc_auc"])
    assert trained.metrics["validation_roc_auc"] == best.data.metrics["validation_roc_auc"]
    assert {name: str(value) for name, value in trained.best_params.items()} == {
        name: best.data.params[name] for name in classifier_config.tuning.space}


@pytest.fixture(scope="module")
def fast_trained(module_registry, classifier_config, classifier_frame, features):
    tuning = {**classifier_config.tuning.model_dump(), "library": "optuna", "parallel_trials": 2,
              "early_stopping": True}
    config = classifier_config.model_validate({**classifier_config.model_dump(), "tuning": tuning})
    experiment_id = module_registry.experiment_id("/flights/flights_delay_fast")
    return train_model(config, classifier_frame, features, experiment_id=experiment_id, lineage=LINEAGE)


def test_the_default_tuning_is_hyperopt_two_at_a_time_without_early_stopping(module_registry, trained):
    parent = module_registry.client().get_run(trained.run_id).data.params
    assert (parent["parallel_trials"], parent["early_stopping"]) == ("2", "False") and "refit_max_iter" not in parent


def test_fast_trials_stop_early_on_the_validation_split_and_the_refit_grows_the_trees_the_best_kept(
        module_registry, fast_trained):
    client = module_registry.client()
    trials = client.search_runs([fast_trained.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{fast_trained.run_id}'")
    assert len(trials) == fast_trained.trials == 3
    best = max(trials, key=lambda run: run.data.metrics["validation_roc_auc"])
    kept = {int(run.data.params["trees_kept"]) for run in trials}
    # A trial stops before its max_iter once the validation loss stalls: at least one of them did.
    assert any(int(run.data.params["trees_kept"]) < int(run.data.params["max_iter"]) for run in trials), kept
    parent = client.get_run(fast_trained.run_id).data.params
    assert (parent["early_stopping"], parent["parallel_trials"]) == ("True", "2")
    assert parent["refit_max_iter"] == best.data.params["trees_kept"]
    name, version = fast_trained.registered_name, fast_trained.registered_version
    model = mlflow.sklearn.load_model(f"models:/{name}/{version}")[-1]
    assert model.n_iter_ == int(best.data.params["trees_kept"]) and not model.early_stopping


def test_the_registered_model_has_a_signature_an_input_example_and_predicts(
        module_registry, trained, classifier_config, classifier_frame, features):
    client = module_registry.client()
    name, version = trained.registered_name, trained.registered_version
    assert client.get_model_version(name, version).run_id == trained.run_id
    info = mlflow.models.get_model_info(f"models:/{name}/{version}")
    assert info.signature.inputs.input_names() == features
    assert not any(spec.required for spec in info.signature.inputs.inputs)
    assert info.saved_input_example_info is not None

    served = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    example = served.input_example
    assert list(example.columns) == features and len(served.predict(example)) == len(example)
    # A request with an unseen carrier and missing features (JSON nulls) still gets an answer.
    odd = example.head(1).assign(carrier="ZZ", dest=None, temp=None)
    (answer,) = served.predict(odd).to_dict(orient="records")
    assert answer["label"] == int(answer["probability"] >= classifier_config.decision_threshold)

    test = held_out(classifier_frame)
    probability = mlflow.sklearn.load_model(f"models:/{name}/{version}").predict_proba(test[features])[:, 1]
    assert roc_auc_score(test[classifier_config.label], probability) == pytest.approx(
        trained.metrics["test_roc_auc"], abs=1e-12)


def test_plots_lineage_and_datasets_are_logged_under_the_artifact_root(module_registry, trained):
    client = module_registry.client()
    run = client.get_run(trained.run_id)

    assert _artifact_names(client, trained.run_id, "plots") == CLASSIFIER_PLOTS
    png = Path(client.download_artifacts(trained.run_id, "plots/roc_curve.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lineage = mlflow.artifacts.load_dict(f"runs:/{trained.run_id}/lineage.json")
    assert lineage["training_set"] == {"table": LINEAGE.table, "path": LINEAGE.path, "version": 4}
    assert lineage["input_versions"] == dict(LINEAGE.input_versions)
    assert lineage["dagster_run_id"] == LINEAGE.dagster_run_id
    assert run.data.tags["dagster_run_id"] == LINEAGE.dagster_run_id
    assert run.data.tags["training_set.version"] == "4"
    assert run.data.tags["input_version.gold.flights"] == "12"

    datasets = {item.tags[0].value: item.dataset for item in run.inputs.dataset_inputs}
    assert set(datasets) == {"training", "test"}
    for dataset in datasets.values():
        assert dataset.source_type == "delta_table"
        source = json.loads(dataset.source)
        assert source["path"] == LINEAGE.path and source["delta_table_version"] == 4
    # Nothing may land in MLflow's default ./mlruns: every artifact sits under the configured root.
    assert run.info.artifact_uri.startswith(Path(module_registry.artifact_root).resolve().as_uri())


def test_retraining_from_the_same_table_version_one_trial_at_a_time_reproduces_the_logged_metrics(
        module_registry, trained, classifier_config, training_table, features):
    # Rows shuffled on the way in, as another Delta file order would return them: model_frame re-sorts them. And
    # tuned one trial at a time, as before the default fitted Hyperopt's start-up trials together.
    shuffled = training_table.take(np.random.default_rng(0).permutation(training_table.num_rows))
    tuning = {**classifier_config.tuning.model_dump(), "parallel_trials": 1}
    sequential = classifier_config.model_validate({**classifier_config.model_dump(), "tuning": tuning})
    again = train_model(sequential, model_frame(shuffled, sequential, features, ORDER_BY), features,
                        experiment_id=trained.experiment_id, lineage=LINEAGE)

    client = module_registry.client()
    assert again.registered_version != trained.registered_version
    assert client.get_run(again.run_id).data.metrics == client.get_run(trained.run_id).data.metrics
    assert again.best_params == trained.best_params


def test_the_regression_template_trains_registers_and_passes_its_floor(
        module_registry, usecase, training_table, features):
    config = small_budget(usecase.models["arrival_delay"], trials=2)
    frame = model_frame(training_table, config, features, ORDER_BY)
    experiment_id = module_registry.experiment_id("/flights/flights_arrival_delay")

    outcome = train_model(config, frame, features, experiment_id=experiment_id, lineage=LINEAGE)
    client = module_registry.client()
    decision = evaluate_against_champion(client, config, outcome.registered_version, held_out(frame),
                                         experiment_id=experiment_id)

    assert outcome.trials == 2
    assert _artifact_names(client, outcome.run_id, "plots") == REGRESSOR_PLOTS
    assert decision.passed, decision.failures
    assert decision.champion_version is None
    assert decision.candidate_metrics["root_mean_squared_error"] <= config.gate["root_mean_squared_error"].max_value
    # The held-out RMSE the gate measured is the one training logged.
    assert decision.candidate_metrics["root_mean_squared_error"] == pytest.approx(
        outcome.metrics["test_root_mean_squared_error"], rel=1e-9)
    assert str(client.get_model_version_by_alias(config.registered_name, CHALLENGER).version) == outcome.registered_version


def test_integer_hyperparameters_stay_integers_although_the_config_parses_bounds_as_floats(usecase):
    for config in usecase.models.values():
        space = search_space(config)
        assert set(space) == set(config.tuning.space)
        assert all(type(bound) is int for bound in space["max_iter"] + space["max_leaf_nodes"])
        assert all(type(bound) is float for bound in space["learning_rate"])

    typo = small_budget(usecase.models["delay"], space={"max_leafs": (15, 63)})
    with pytest.raises(ValueError, match="not a hyperparameter"):
        search_space(typo)


def test_the_best_trial_so_far_is_refit_once_and_that_refit_is_the_one_used():
    from mlops_platform.ml.training import _SpeculativeRefits

    started = threading.Event()
    release = threading.Event()
    refitted: list[dict] = []

    def refit(params: dict) -> dict:
        refitted.append(params)
        started.set()
        release.wait(10)
        return {"fitted": params}

    refits = _SpeculativeRefits(refit)
    refits.offer({"a": 1}, 0.5)
    assert started.wait(10)
    refits.offer({"a": 2}, 0.7)  # worse: not refit
    refits.offer({"a": 3}, 0.4)  # better, queued behind the running refit of {"a": 1}
    refits.offer({"a": 4}, 0.3)  # better still: the queued refit of {"a": 3} is dropped before it starts
    release.set()
    deadline = time.monotonic() + 10
    while len(refitted) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert refitted == [{"a": 1}, {"a": 4}]
    assert refits.result({"a": 4}) == {"fitted": {"a": 4}}
    assert len(refitted) == 2
    # A best that was never offered (the tuner's choice among equal losses) is refit on the spot.
    assert refits.result({"a": 2}) == {"fitted": {"a": 2}}
