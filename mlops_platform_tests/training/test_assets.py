"""The model, gate and promotion assets in the graph, and materialized by Dagster against a real MLflow store."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest

from mlops_platform.defs import build_definitions
from mlops_platform.defs.registry.assets import BEATS_CHAMPION, registry_assets
from mlops_platform.defs.training.assets import training_assets
from mlops_platform.ml.gate import CHALLENGER, CHAMPION
from mlops_platform.resources import build_resources
from mlops_platform_tests.conftest import check_results, flights_key, flights_table
from mlops_platform_tests.training.conftest import small_budget

MODELS = ("delay", "arrival_delay")
INPUT_VERSIONS = {"gold.flights": 41, "features.carrier_delays": 40, "features.route_delays": 40,
                  "features.origin_weather": 12, "features.plane_attributes": 2}


def test_every_model_has_an_asset_a_blocking_gate_and_a_promotion_in_the_training_job(settings):
    definitions = build_definitions(settings)
    graph = definitions.resolve_asset_graph()

    for model in MODELS:
        trained, champion = flights_key("models", model), flights_key("registry", f"{model}_champion")
        assert graph.get(trained).parent_keys == {flights_key("training", "training_set")}
        assert graph.get(champion).parent_keys == {trained}
        assert graph.get(trained).group_name == "flights_models" and graph.get(champion).group_name == "flights_registry"
        assert graph.get(trained).kinds == {"mlflow", "scikit-learn"}
        assert graph.get(trained).owners == ["team:flight-ops"]
        assert "registered in MLflow" in graph.get(trained).description
        assert graph.get_check_spec(dg.AssetCheckKey(trained, BEATS_CHAMPION)).blocking

    job = definitions.resolve_job_def("flights_training")
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {
        "flights/training/training_set", *(f"flights/models/{m}" for m in MODELS),
        *(f"flights/registry/{m}_champion" for m in MODELS),
        "flights/serving/delay_online_store", "flights/serving/delay_staging", "flights/serving/delay_production"}
    assert {(key.asset_key.path[-1], key.name) for key in job.asset_layer.asset_graph.asset_check_keys} >= {
        (model, BEATS_CHAMPION) for model in MODELS}


@pytest.fixture
def fast_usecase(usecase):
    """The flights use case with only its classifier, on a small tuning budget."""
    return usecase.model_copy(update={"models": {"delay": small_budget(usecase.models["delay"], 2)}})


def _materializations(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> list[dict[str, object]]:
    return [{name: value.value for name, value in event.materialization.metadata.items()}
            for event in result.get_asset_materialization_events() if event.asset_key == key]


def test_a_passing_model_is_promoted_and_one_that_does_not_beat_the_champion_is_blocked(
        settings, fast_usecase, training_table, migrated_store):
    resources = build_resources(settings)
    settings.mlflow_dir.mkdir(parents=True)
    shutil.copyfile(migrated_store, settings.mlflow_dir / "mlflow.db")
    resources["warehouse"].overwrite(*flights_table("training", "training_set"), training_table,
                                     commit_metadata={"input_versions": json.dumps(INPUT_VERSIONS)})
    definitions = [*training_assets(fast_usecase), *registry_assets(fast_usecase)]
    instance = dg.DagsterInstance.ephemeral()
    model, champion = flights_key("models", "delay"), flights_key("registry", "delay_champion")
    client = resources["mlflow"].client()

    first = dg.materialize(definitions, resources=resources, instance=instance, raise_on_error=False)

    assert first.success
    [trained] = _materializations(first, model)
    assert trained["model_version"] == 1 and trained["trials"] == 2
    assert trained["mlflow_run"].startswith("http://127.0.0.1:5000/#/experiments/")
    assert trained["mlflow_run"].endswith(f"/runs/{trained['mlflow_run_id']}")
    assert trained["training_set_version"] == 0 and trained["input_versions"] == INPUT_VERSIONS
    assert 0.6 <= trained["test_roc_auc"] <= 1.0
    assert check_results(first)[("flights/models/delay", BEATS_CHAMPION)].passed
    [promoted] = _materializations(first, champion)
    assert (promoted["champion_version"], promoted["previous_champion"]) == (1, "none")
    assert {a: str(v) for a, v in client.get_registered_model("flights_delay").aliases.items()} == {CHAMPION: "1"}

    # Retraining on the same table version reproduces the same model: no improvement, so no promotion. That is an
    # outcome, not an error: the run succeeds and says "champion stays" with the verdict and both metrics.
    second = dg.materialize(definitions, resources=resources, instance=instance, raise_on_error=False)

    assert second.success
    [retrained] = _materializations(second, model)
    assert retrained["model_version"] == 2 and retrained["test_roc_auc"] == trained["test_roc_auc"]
    gate = check_results(second)[("flights/models/delay", BEATS_CHAMPION)]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert gate.metadata["verdict"].value == "champion stays"
    assert gate.metadata["champion_version"].value == 1 and gate.metadata["candidate_version"].value == 2
    assert "minimum absolute change" in " ".join(gate.metadata["failures"].value)
    [stays] = _materializations(second, champion)
    assert stays["outcome"] == "champion stays"
    assert (stays["champion_version"], stays["candidate_version"]) == (1, 2)
    assert stays["candidate_roc_auc"] == stays["champion_roc_auc"] == trained["test_roc_auc"]
    assert stays["verdict"].startswith("champion stays (v1): ")
    assert {a: str(v) for a, v in client.get_registered_model("flights_delay").aliases.items()} == {CHAMPION: "1"}
    assert CHALLENGER not in client.get_registered_model("flights_delay").aliases
