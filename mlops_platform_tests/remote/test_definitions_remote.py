"""Databricks environments swap the heavy assets for remote twins and add the workspace; ``local`` holds none of it.

No JVM and no network: only the definitions, the task they would submit and the Pipes metadata conversion.
"""

from __future__ import annotations

import datetime as dt
import sys

import dagster as dg
import pytest
from dagster._core.definitions.metadata import normalize_metadata
from dagster._core.definitions.metadata.external_metadata import metadata_map_from_external

from mlops_platform.defs import build_definitions
from mlops_platform.defs.remote import remote_twin, serverless_environment, submit_task
from mlops_platform.remote import local_execution, parse_partition, pipes_metadata
from mlops_platform.resources.databricks import DatabricksWorkspace
from mlops_platform.resources.unity_catalog import UnityCatalogWarehouse
from mlops_platform.resources.warehouse import DeltaWarehouse
from mlops_platform.settings import PROJECT_ROOT, ConfigError, ServerlessSpec, load_settings
from mlops_platform_tests.conftest import flights_key, flights_table

# The stages whose assets write tables or train, so run on Databricks compute (key paths: usecase/stage/name).
HEAVY_STAGES = {"bronze", "silver", "gold", "features", "training", "models", "predictions", "monitoring"}


def _assets(definitions: dg.Definitions) -> list[dg.AssetsDefinition]:
    return [node for node in definitions.assets or []
            if isinstance(node, dg.AssetsDefinition) and not isinstance(node, dg.AssetChecksDefinition)]


def _node(definitions: dg.Definitions, key: str) -> dg.AssetsDefinition:
    asset_key = dg.AssetKey.from_user_string(key)
    return next(node for node in _assets(definitions) if asset_key in node.keys)


def _is_remote(node: dg.AssetsDefinition) -> bool:
    return "databricks" in node.required_resource_keys


def test_prod_runs_every_heavy_asset_remotely_with_the_same_specs():
    local, prod = build_definitions(load_settings("local")), build_definitions(load_settings("prod"))

    assert isinstance(prod.resources["databricks"], DatabricksWorkspace)
    for original in _assets(local):
        if next(iter(original.keys)).path[0] != "flights":
            continue  # prod enables the flights use case only
        twin = _node(prod, next(iter(original.keys)).to_user_string())
        heavy = {spec.key.path[1] for spec in original.specs} <= HEAVY_STAGES
        assert _is_remote(twin) == heavy, original.keys
        assert twin.keys == original.keys
        assert {key.name for key in twin.check_keys} == {key.name for key in original.check_keys}
        assert twin.partitions_def == original.partitions_def
        assert twin.backfill_policy == original.backfill_policy
        assert twin.can_subset == original.can_subset
        for key in original.keys:
            assert twin.specs_by_key[key].deps == original.specs_by_key[key].deps
            assert twin.specs_by_key[key].group_name == original.specs_by_key[key].group_name
    # Blocking checks still block: a failed remote keys_unique skips downstream assets in the same run.
    graph = prod.resolve_asset_graph()
    assert graph.get_check_spec(dg.AssetCheckKey(flights_key("silver", "flights"), "keys_unique")).blocking
    remote = {key.to_user_string() for node in _assets(prod) if _is_remote(node) for key in node.keys}
    assert {"flights/silver/flights", "flights/gold/flights", "flights/features/carrier_delays", "flights/training/training_set",
            "flights/models/delay", "flights/predictions/delay", "flights/monitoring/delay_drift"} <= remote
    assert "flights/bronze/flights" in remote, "bronze writes a table, so it runs where Unity Catalog is"
    assert not remote & {"flights/registry/delay_champion", "flights/serving/delay_online_store"}


def test_prod_tables_are_unity_catalog_tables_read_by_the_orchestrator_through_a_sql_warehouse():
    prod = load_settings("prod")
    resources = build_definitions(prod).resources
    warehouse = resources["warehouse"]
    assert isinstance(warehouse, UnityCatalogWarehouse)
    assert warehouse.full_name(*flights_table("silver", "flights")) == "mlops_prod.flights_silver.flights"
    assert isinstance(warehouse.workspace, DatabricksWorkspace)
    assert resources["alerts"].warehouse is warehouse
    # Inside the job (mlops_platform.remote) the same environment reads and writes through the cluster's Spark.
    inside = build_definitions(local_execution(prod)).resources["warehouse"]
    assert isinstance(inside, UnityCatalogWarehouse) and inside.workspace is None
    assert isinstance(build_definitions(load_settings("local")).resources["warehouse"], DeltaWarehouse)


def test_local_holds_no_databricks_resource_and_no_twin():
    local = build_definitions(load_settings("local"))
    assert "databricks" not in local.resources
    assert not any(_is_remote(node) for node in _assets(local))
    assert not any(isinstance(value, DatabricksWorkspace) for value in local.resources.values())


def test_prod_builds_without_credentials_and_a_remote_step_names_the_unset_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    monkeypatch.delenv("DATABRICKS_TOKEN", raising=False)
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    prod = build_definitions(load_settings("prod"))

    with pytest.raises(dg.DagsterInvalidConfigError, match='environment variable "DATABRICKS_HOST"'):
        dg.materialize([_node(prod, "flights/silver/airlines")], resources=prod.resources,
                       instance=dg.DagsterInstance.ephemeral())


def test_the_submitted_task_runs_the_wheel_entry_point_on_the_step_kind_cluster(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    settings = load_settings("staging")
    task = submit_task(settings, "training", "models__flights_delay", ["flights/models/delay"]).as_dict()
    assert task == {
        "task_key": "models__flights_delay",
        "new_cluster": {"spark_version": "15.4.x-cpu-ml-scala2.12", "node_type_id": "m5d.2xlarge", "num_workers": 1},
        "libraries": [{"whl": "/Volumes/mlops_staging/platform/artifacts/mlops_platform-0.1.0-py3-none-any.whl"}],
        "python_wheel_task": {"package_name": "mlops_platform", "entry_point": "mlops-remote", "parameters": [
            "flights/models/delay", "--env", "staging",
            "--config-dir", "/Volumes/mlops_staging/platform/artifacts/config", "--data-dir", str(tmp_path)]},
    }


def test_a_serverless_step_names_its_environment_and_the_environment_holds_the_wheel(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    dev = load_settings("dev")
    assert isinstance(dev.environment.databricks.compute["monitoring"], ServerlessSpec)

    task = submit_task(dev, "monitoring", "monitoring__flights_delay", ["flights/monitoring/flights_delay"]).as_dict()
    environment = serverless_environment(dev, "monitoring").as_dict()

    assert task == {
        "task_key": "monitoring__flights_delay", "environment_key": "monitoring",
        "python_wheel_task": {"package_name": "mlops_platform", "entry_point": "mlops-remote", "parameters": [
            "flights/monitoring/flights_delay", "--env", "dev",
            "--config-dir", "/Volumes/mlops_dev/platform/artifacts/config", "--data-dir", str(tmp_path)]},
    }
    assert environment == {"environment_key": "monitoring", "spec": {
        "environment_version": "2",
        "dependencies": ["/Volumes/mlops_dev/platform/artifacts/mlops_platform-0.1.0-py3-none-any.whl"]}}


def test_serverless_steps_need_a_volume_for_pipes(tmp_path):
    config_dir = tmp_path / "config"
    (config_dir / "environments").mkdir(parents=True)
    dev = (PROJECT_ROOT / "config" / "environments" / "dev.yaml").read_text()
    (config_dir / "environments" / "dev.yaml").write_text(dev.replace("pipes_volume:", "# pipes_volume:"))
    with pytest.raises(ConfigError, match=r"serverless steps \['monitoring'\] need pipes_volume"):
        load_settings("dev", config_dir=config_dir)


def test_a_twin_passes_its_keys_and_partition_range_to_the_entry_point():
    seen: list[list[str]] = []

    def launch(context, arguments):
        seen.append(arguments)
        return [dg.MaterializeResult(asset_key=key) for key in sorted(context.selected_asset_keys)]

    days = dg.DailyPartitionsDefinition(start_date="2013-01-01", end_date="2013-02-01")

    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run(), key=["flights", "gold", "demo"])
    def demo() -> None: ...

    twin = remote_twin(demo, launch)
    assert dg.materialize([twin], partition_key="2013-01-02").success
    assert dg.materialize([twin], tags={"dagster/asset_partition_range_start": "2013-01-02",
                                        "dagster/asset_partition_range_end": "2013-01-05"}).success
    assert seen == [["flights/gold/demo", "--partition", "2013-01-02"],
                    ["flights/gold/demo", "--partition", "2013-01-02...2013-01-05"]]
    assert parse_partition("2013-01-02...2013-01-05") == ("2013-01-02", "2013-01-05")
    with pytest.raises(ValueError, match="--partition"):
        parse_partition("2013-01-02...")


def test_every_metadata_type_the_assets_use_crosses_pipes_unchanged():
    metadata = normalize_metadata({
        "dagster/row_count": 3, "share": 0.25, "engine": "spark", "ok": True,
        "dagster/uri": dg.MetadataValue.path("/tmp/t"), "link": dg.MetadataValue.url("https://example.com/r/1"),
        "preview": dg.MetadataValue.md("| a |\n|---|\n| 1 |"), "by_rule": dg.MetadataValue.json([{"rule": "x"}]),
        "dagster/column_schema": dg.TableSchema(columns=[
            dg.TableColumn("a", "int64", description="an a", constraints=dg.TableColumnConstraints(nullable=False)),
            dg.TableColumn("b", "large_string")]),
        "rows": dg.MetadataValue.table([dg.TableRecord({"a": 1})], schema=dg.TableSchema(
            columns=[dg.TableColumn("a", "int")])),
        "upstream": dg.MetadataValue.asset(flights_key("silver", "flights")),
        "at": dg.MetadataValue.timestamp(dt.datetime(2013, 1, 1, tzinfo=dt.UTC)),
        "nothing": dg.MetadataValue.null(), "notebook": dg.MetadataValue.notebook("/tmp/n.ipynb"),
        "run": dg.MetadataValue.dagster_run("abc"),
    })
    assert dict(metadata_map_from_external(pipes_metadata(metadata))) == metadata
    with pytest.raises(TypeError, match="metadata 'code'"):
        pipes_metadata({"code": dg.MetadataValue.python_artifact(sys.exit)})
