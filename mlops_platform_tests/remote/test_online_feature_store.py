"""Feature tables published to the Databricks online feature store, against a fake workspace over HTTP: the store
is created and waited for, each table is made a feature table (non-null keys, a primary key with its TIMESERIES
column, change data feed) by exactly the statements it lacks, and published as ``<table>_online``."""

from __future__ import annotations

import dagster as dg
import pytest

from mlops_platform.defs.serving.assets import serving_assets
from mlops_platform.defs.stages import online_store_key
from mlops_platform.resources.databricks import DatabricksWorkspace
from mlops_platform.resources.databricks_serving import DatabricksServing, OnlineStoreOptions
from mlops_platform.resources.online_feature_store import FeatureTableSpec, OnlineStoreError
from mlops_platform.resources.serving import ServingError
from mlops_platform.resources.spark import spark_sessions
from mlops_platform.resources.unity_catalog import UnityCatalogWarehouse
from mlops_platform.settings import load_settings
from mlops_platform_tests.remote.fake_workspace import FakeWorkspace, fake_workspace

pytestmark = pytest.mark.timeout(120)

STORE = OnlineStoreOptions(name="mlops-dev-features", capacity="CU_2", publish_mode="TRIGGERED",
                           available_timeout_minutes=0.05, poll_seconds=0.01)
CARRIERS = FeatureTableSpec("mlops_dev.flights_features.carrier_delays", ("carrier",), "feature_date")
PLANES = FeatureTableSpec("mlops_dev.flights_features.plane_attributes", ("tailnum",))


def target(host: str, store: OnlineStoreOptions | None = STORE) -> DatabricksServing:
    return DatabricksServing(serving_dir="/unused", catalog="mlops_dev", inference_catalog="mlops_dev",
                             inference_schema="monitoring", workspace=DatabricksWorkspace(host=host, token="t"),
                             online_store=store)


def raw_tables(workspace: FakeWorkspace) -> None:
    """Tables as a Spark ``saveAsTable`` leaves them: nullable columns, no constraint, no change data feed."""
    workspace.add_table(CARRIERS.full_name, {"carrier": True, "feature_date": True, "carrier_rows_7d": True})
    workspace.add_table(PLANES.full_name, {"tailnum": True, "plane_year": True})


def prepared_tables(workspace: FakeWorkspace) -> None:
    cdf = {"delta.enableChangeDataFeed": "true"}
    workspace.add_table(CARRIERS.full_name, {"carrier": False, "feature_date": False, "carrier_rows_7d": True},
                        properties=cdf, primary_key={"name": "carrier_delays_pk",
                                                     "child_columns": ["carrier", "feature_date"],
                                                     "timeseries_columns": ["feature_date"]})
    workspace.add_table(PLANES.full_name, {"tailnum": False, "plane_year": True}, properties=cdf,
                        primary_key={"name": "plane_attributes_pk", "child_columns": ["tailnum"]})


def test_the_store_is_created_and_each_table_prepared_and_published() -> None:
    statements: list[str] = []
    with fake_workspace(store_starting_polls=2) as workspace:
        raw_tables(workspace)
        published = target(workspace.host).publish_feature_tables([CARRIERS, PLANES], statements.append)

    assert statements == [
        "ALTER TABLE `mlops_dev`.`flights_features`.`carrier_delays` ALTER COLUMN `carrier` SET NOT NULL",
        "ALTER TABLE `mlops_dev`.`flights_features`.`carrier_delays` ALTER COLUMN `feature_date` SET NOT NULL",
        ("ALTER TABLE `mlops_dev`.`flights_features`.`carrier_delays` ADD CONSTRAINT `carrier_delays_pk` "
        "PRIMARY KEY (`carrier`, `feature_date` TIMESERIES)"),
        "ALTER TABLE `mlops_dev`.`flights_features`.`carrier_delays` SET TBLPROPERTIES (delta.enableChangeDataFeed = true)",
        "ALTER TABLE `mlops_dev`.`flights_features`.`plane_attributes` ALTER COLUMN `tailnum` SET NOT NULL",
        ("ALTER TABLE `mlops_dev`.`flights_features`.`plane_attributes` ADD CONSTRAINT `plane_attributes_pk` "
        "PRIMARY KEY (`tailnum`)"),
        "ALTER TABLE `mlops_dev`.`flights_features`.`plane_attributes` SET TBLPROPERTIES (delta.enableChangeDataFeed = true)",
    ]
    writes = [(r.method, r.path, r.body) for r in workspace.writes()]
    assert writes == [
        ("POST", "/api/2.0/feature-store/online-stores", {"name": "mlops-dev-features", "capacity": "CU_2"}),
        *[("POST", f"/api/2.0/feature-store/tables/{spec.full_name}/publish",
           {"publish_spec": {"online_store": "mlops-dev-features", "online_table_name": f"{spec.full_name}_online",
                             "publish_mode": "TRIGGERED"}}) for spec in (CARRIERS, PLANES)],
    ]
    # The store was polled until it was AVAILABLE, before anything was published.
    store_reads = [i for i, r in enumerate(workspace.requests) if r.path.endswith("/online-stores/mlops-dev-features")]
    first_publish = next(i for i, r in enumerate(workspace.requests) if r.path.endswith("/publish"))
    assert len(store_reads) == 1 + 3 and max(store_reads) < first_publish  # the 404, then three polls
    assert published.metadata() == {
        "online_store": "mlops-dev-features", "online_store_created": True,
        "online_tables": {CARRIERS.full_name: f"{CARRIERS.full_name}_online",
                          PLANES.full_name: f"{PLANES.full_name}_online"},
        "sync_pipelines": {CARRIERS.full_name: "pipeline-carrier_delays", PLANES.full_name: "pipeline-plane_attributes"},
        "feature_table_changes": {CARRIERS.full_name: statements[:4], PLANES.full_name: statements[4:]},
    }


def test_prepared_tables_in_an_available_store_are_only_published() -> None:
    statements: list[str] = []
    with fake_workspace() as workspace:
        prepared_tables(workspace)
        workspace.online_stores["mlops-dev-features"] = {"name": "mlops-dev-features", "capacity": "CU_2",
                                                         "state": "AVAILABLE", "polls": 0}
        published = target(workspace.host).publish_feature_tables([CARRIERS, PLANES], statements.append)

    assert statements == []
    assert [r.path for r in workspace.writes()] == [f"/api/2.0/feature-store/tables/{s.full_name}/publish"
                                                    for s in (CARRIERS, PLANES)]
    assert not published.store_created


def test_a_primary_key_on_other_columns_is_refused_naming_the_table() -> None:
    with fake_workspace() as workspace:
        workspace.add_table(CARRIERS.full_name, {"carrier": False, "feature_date": False},
                            properties={"delta.enableChangeDataFeed": "true"},
                            primary_key={"name": "legacy_pk", "child_columns": ["carrier"]})
        with pytest.raises(OnlineStoreError, match=r"carrier_delays has primary key legacy_pk on \['carrier'\].*"
                                                   r"declares keys \['carrier', 'feature_date'\]"):
            target(workspace.host).publish_feature_tables([CARRIERS], lambda sql: None)
    assert not [r for r in workspace.writes() if r.path.endswith("/publish")]


@pytest.mark.parametrize(("state", "message"), [("STOPPED", "is STOPPED: start it"),
                                                ("STARTING", "was not AVAILABLE after 3 s")])
def test_an_unusable_store_fails_before_anything_is_published(state: str, message: str) -> None:
    with fake_workspace(store_starting_polls=10_000) as workspace:
        prepared_tables(workspace)
        workspace.online_stores["mlops-dev-features"] = {"name": "mlops-dev-features", "capacity": "CU_1",
                                                         "state": state, "polls": 10_000}
        with pytest.raises(OnlineStoreError, match=f"online store mlops-dev-features {message}"):
            target(workspace.host).publish_feature_tables([CARRIERS], lambda sql: None)
    assert workspace.writes() == []


def test_a_missing_feature_table_is_named() -> None:
    with fake_workspace() as workspace:
        workspace.online_stores["mlops-dev-features"] = {"name": "mlops-dev-features", "state": "AVAILABLE",
                                                         "polls": 0}
        with pytest.raises(OnlineStoreError, match="mlops_dev.flights_features.plane_attributes does not exist"):
            target(workspace.host).publish_feature_tables([PLANES], lambda sql: None)


def test_without_an_online_store_configured_publishing_says_so() -> None:
    with pytest.raises(ServingError, match="no databricks.serving.online_store"):
        target("http://127.0.0.1:9", store=None).publish_feature_tables([PLANES], lambda sql: None)


def test_the_online_store_asset_publishes_the_endpoints_tables_through_the_sql_warehouse() -> None:
    usecase = load_settings("dev").usecases["flights"]
    tables = usecase.serving["delay"].online_store.tables
    key = online_store_key("flights", "delay")
    with fake_workspace() as workspace:
        for table in tables:
            spec = usecase.features[table]
            workspace.add_table(f"mlops_dev.flights_features.{table}", {c: True for c in [*spec.keys, *spec.columns]})
        workspace.online_stores["mlops-dev-features"] = {"name": "mlops-dev-features", "state": "AVAILABLE",
                                                         "polls": 0}
        databricks = DatabricksWorkspace(host=workspace.host, token="t")
        warehouse = UnityCatalogWarehouse(catalog="mlops_dev", pyspark=spark_sessions(), workspace=databricks,
                                          sql_warehouse_id="wh-1")
        result = dg.materialize([d for d in serving_assets(usecase) if key in d.keys],
                                resources={"serving": target(workspace.host), "warehouse": warehouse})

    assert result.success
    published = [r.path.split("/")[-2] for r in workspace.writes() if r.path.endswith("/publish")]
    assert published == [f"mlops_dev.flights_features.{table}" for table in tables]
    # Every statement went to the SQL warehouse; origin_weather's primary key ends with its TIMESERIES hour.
    assert len(workspace.statements) == sum(len(usecase.features[t].keys) + 2 for t in tables)
    assert ("ALTER TABLE `mlops_dev`.`flights_features`.`origin_weather` ADD CONSTRAINT `origin_weather_pk` PRIMARY KEY "
            "(`origin`, `scheduled_hour` TIMESERIES)") in workspace.statements
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["online_tables"].value[
        "mlops_dev.flights_features.route_delays"] == "mlops_dev.flights_features.route_delays_online"
