"""The shape of the asset graph: keys, lineage, groups, checks and what the UI shows about each asset."""

from __future__ import annotations

import dagster as dg

from mlops_platform.defs import build_definitions
from mlops_platform.settings import load_settings

SOURCES = {"flights", "weather", "planes", "airlines", "airports"}
# Asset keys name tables; groups name lifecycle stages (a model belongs to training, its predictions to inference).
STAGE_OF = {"landing": "landing", "bronze": "bronze", "silver": "silver", "gold": "gold", "features": "features",
            "training": "training", "models": "training", "registry": "registry", "predictions": "inference",
            "monitoring": "monitoring", "serving": "serving"}


def _graph(definitions: dg.Definitions):
    return definitions.resolve_asset_graph()


def test_every_layer_has_a_table_shaped_key_per_source(definitions):
    keys = {key.to_user_string() for key in _graph(definitions).get_all_asset_keys()}

    for layer in ("landing", "bronze", "silver"):
        assert {f"{layer}/{source}" for source in SOURCES} <= keys
    assert {f"silver/{source}_quarantine" for source in SOURCES} <= keys
    assert "gold/flights" in keys


def test_lineage_runs_landing_to_bronze_to_silver_to_gold(definitions):
    graph = _graph(definitions)

    def parents(key: str) -> set[str]:
        return {p.to_user_string() for p in graph.get(dg.AssetKey(key.split("/"))).parent_keys}

    assert parents("bronze/flights") == {"landing/flights"}
    assert parents("silver/flights") == {"bronze/flights"}
    assert parents("gold/flights") == {"silver/flights", "silver/weather", "silver/planes", "silver/airlines"}


def test_assets_carry_group_kinds_owner_and_a_description(definitions):
    graph = _graph(definitions)
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name == STAGE_OF[key.path[0]], key
        assert node.owners == ["team:flight-ops"], key
        assert node.description and len(node.description) > 30, key
        assert node.kinds, key


def test_daily_sources_are_partitioned_and_snapshots_are_not(definitions):
    graph = _graph(definitions)
    assert graph.get(dg.AssetKey(["silver", "flights"])).partitions_def is not None
    assert graph.get(dg.AssetKey(["gold", "flights"])).partitions_def is not None
    assert graph.get(dg.AssetKey(["silver", "planes"])).partitions_def is None


def test_error_checks_block_downstream_and_warnings_do_not(definitions):
    graph = _graph(definitions)
    blocking = {
        (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key).blocking
        for key in graph.asset_check_keys
    }

    assert blocking[("silver/flights", "keys_unique")]
    assert blocking[("silver/flights", "rows_reconcile")]
    assert not blocking[("silver/flights", "quarantine_share")]
    assert not blocking[("silver/flights", "keys_consistent")]     # conflicts warn unless a source says otherwise
    assert blocking[("gold/flights", "label_consistent")]
    assert not blocking[("gold/flights", "weather_mostly_present")]
    assert not blocking[("bronze/flights", "has_rows")]


def test_every_environment_builds_without_touching_the_network():
    for environment in ("local", "dev", "staging", "prod"):
        definitions = build_definitions(load_settings(environment))
        assert definitions.resolve_job_def("flights_daily")


def test_the_daily_job_holds_daily_tables_and_the_reference_job_the_snapshots(definitions):
    graph = _graph(definitions)

    def keys(job_name: str) -> set[str]:
        job = definitions.resolve_job_def(job_name)
        return {key.to_user_string() for key in job.asset_layer.selected_asset_keys}

    daily, reference = keys("flights_daily"), keys("flights_reference")
    assert {"bronze/flights", "silver/weather", "gold/flights", "features/carrier_delays"} <= daily
    assert {"bronze/planes", "silver/airlines", "features/plane_attributes"} <= reference
    assert not daily & reference
    assert all(graph.get(dg.AssetKey(key.split("/"))).partitions_def is not None for key in daily)
