"""Models logged with their feature lookups on Databricks, so Model Serving joins features by key.

``databricks-feature-engineering`` exists only on Databricks ML runtimes (it does not install beside this project's
pins), so its client is a recording stand-in here whose ``log_model`` does what the real one does underneath: log the
model with the given flavor and register it. Everything else is real: the model the platform trains, MLflow's
registry, the use case's lookups. The tests assert the exact Feature Engineering calls.
"""

from __future__ import annotations

import datetime as dt
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import numpy as np
import pytest

from mlops_platform.ml.feature_lookups import FeatureLookupLogger, LookupSpec, lookup_specs, training_columns
from mlops_platform.ml.model_data import TrainingLineage, model_frame
from mlops_platform.ml.training import train_model
from mlops_platform.resources.feature_engineering import feature_lookup_logger
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.unity_catalog import UnityCatalogWarehouse
from mlops_platform.resources.warehouse import DeltaWarehouse
from mlops_platform.settings import UseCaseConfig, load_settings
from mlops_platform_tests.training import build_training_table, expected_features
from mlops_platform_tests.training.conftest import copy_store, small_budget

pytestmark = pytest.mark.timeout(300)

FEATURES = "mlops_dev.flights_features"


@pytest.fixture(scope="module")
def usecase() -> UseCaseConfig:
    return load_settings("dev").usecases["flights"]


def test_the_lookups_are_the_training_sets_with_primary_and_timestamp_keys(usecase: UseCaseConfig) -> None:
    specs = lookup_specs(usecase, lambda table: f"{FEATURES}.{table}")
    features = usecase.features
    assert specs == [
        LookupSpec(f"{FEATURES}.carrier_delays", ("carrier",), tuple(features["carrier_delays"].columns),
                   "flight_date"),
        LookupSpec(f"{FEATURES}.route_delays", ("origin", "dest"), tuple(features["route_delays"].columns),
                   "flight_date"),
        LookupSpec(f"{FEATURES}.origin_weather", ("origin",), tuple(features["origin_weather"].columns),
                   "scheduled_hour"),
        LookupSpec(f"{FEATURES}.plane_attributes", ("tailnum",), tuple(features["plane_attributes"].columns)),
    ]
    assert training_columns(usecase, specs, "is_delayed") == [
        "carrier", "flight_date", "origin", "dest", "scheduled_hour", "tailnum", "hour", "distance", "is_delayed"]


def test_a_lookup_that_matches_no_column_to_a_key_is_named(usecase: UseCaseConfig) -> None:
    broken = usecase.training_set.model_copy(update={"lookups": [
        usecase.training_set.lookups[0].model_copy(update={"keys": {"flight_date": "feature_date"}})]})
    with pytest.raises(ValueError, match=r"lookup of 'carrier_delays' matches no column to its key\(s\) \['carrier'\]"):
        lookup_specs(usecase.model_copy(update={"training_set": broken}), str)


class RecordingFeatureEngineering:
    """The two calls the platform makes, recorded; ``log_model`` logs and registers as the real client does."""

    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def create_training_set(self, **kwargs: Any) -> str:
        self.calls.append(("create_training_set", kwargs))
        return "training-set"

    def log_model(self, *, model: Any, artifact_path: str, flavor: Any, training_set: Any,
                  registered_model_name: str) -> None:
        self.calls.append(("log_model", {"model": model, "artifact_path": artifact_path, "flavor": flavor,
                                         "training_set": training_set,
                                         "registered_model_name": registered_model_name}))
        flavor.log_model(model, name=artifact_path, registered_model_name=registered_model_name,
                         skops_trusted_types=["functools.partial", "sklearn.utils.validation.check_array",
                                              "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"])


@pytest.fixture
def feature_engineering(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("databricks.feature_engineering")

    class FeatureLookup:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

        def __eq__(self, other: object) -> bool:
            return isinstance(other, FeatureLookup) and other.kwargs == self.kwargs

    module.FeatureLookup = FeatureLookup
    module.FeatureEngineeringClient = RecordingFeatureEngineering
    RecordingFeatureEngineering.calls = []
    monkeypatch.setitem(sys.modules, "databricks.feature_engineering", module)
    return module


def test_the_trained_model_is_logged_with_its_lookups_and_registered(
        usecase: UseCaseConfig, feature_engineering: types.ModuleType, tmp_path: Path) -> None:
    registry = copy_store(_migrated(tmp_path), tmp_path / "mlflow")
    registry.configure()
    config = small_budget(usecase.models["delay"], trials=2)
    features = expected_features(usecase)
    table = build_training_table(usecase, dt.date(2013, 5, 31), 28)
    frame = model_frame(table, config, features, ["flight_date", "carrier", "flight", "origin"])
    specs = lookup_specs(usecase, lambda name: f"{FEATURES}.{name}")
    rows = object()  # the Spark frame of the job; only handed on
    logger = FeatureLookupLogger(specs, rows, config.label, ["flight_date", "scheduled_hour", "tailnum"])
    lineage = TrainingLineage(table="mlops_dev.training.flights", path="mlops_dev.training.flights", version=3)

    outcome = train_model(config, frame, features, experiment_id=registry.experiment_id("/flights/lookups"),
                          lineage=lineage, model_logger=logger)

    (create, log) = RecordingFeatureEngineering.calls
    lookup = feature_engineering.FeatureLookup
    assert create == ("create_training_set", {
        "df": rows, "label": "is_delayed", "exclude_columns": ["flight_date", "scheduled_hour", "tailnum"],
        "feature_lookups": [lookup(table_name=s.table_name, lookup_key=list(s.lookup_key),
                                   feature_names=list(s.feature_names), timestamp_lookup_key=s.timestamp_lookup_key)
                            for s in specs]})
    assert log[0] == "log_model"
    assert {k: v for k, v in log[1].items() if k != "model"} == {
        "artifact_path": "model", "flavor": sys.modules["mlflow.sklearn"], "training_set": "training-set",
        "registered_model_name": config.registered_name}
    assert outcome.registered_version == "1"
    assert outcome.model_uri == f"runs:/{outcome.run_id}/model"
    # What was registered is the model that was trained.
    loaded = mlflow.sklearn.load_model(f"models:/{config.registered_name}/1")
    test = frame[frame["split"] == "test"].head(50)
    np.testing.assert_array_equal(loaded.predict_proba(test[features]), log[1]["model"].predict_proba(test[features]))
    version = registry.client().get_model_version(config.registered_name, "1")
    assert version.tags["training_set.version"] == "3"


def _migrated(tmp_path: Path) -> Path:
    folder = tmp_path / "template"
    MlflowTracking(tracking_uri=f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "artifacts")).client()
    return folder / "mlflow.db"


class RecordingSpark:
    """A Spark session's reader, recording the chain it is called with."""

    def __init__(self) -> None:
        self.chain: list[tuple] = []

    @property
    def read(self) -> RecordingSpark:
        return self

    def option(self, *args: Any) -> RecordingSpark:
        self.chain.append(("option", *args))
        return self

    def table(self, name: str) -> RecordingSpark:
        self.chain.append(("table", name))
        return self

    def select(self, *columns: str) -> RecordingSpark:
        self.chain.append(("select", *columns))
        return self


def test_only_unity_catalog_tables_with_the_unity_catalog_registry_log_lookups(
        usecase: UseCaseConfig, tmp_path: Path) -> None:
    import dagster as dg

    spark = RecordingSpark()

    class JobSpark(dg.ConfigurableResource):
        @property
        def spark_session(self) -> RecordingSpark:
            return spark

    config = usecase.models["delay"]
    lineage = TrainingLineage(table="mlops_dev.training.flights", path="mlops_dev.training.flights", version=5)
    unity = UnityCatalogWarehouse(catalog="mlops_dev", pyspark=JobSpark())
    uc_registry = MlflowTracking(tracking_uri="databricks", registry_uri="databricks-uc")
    local = DeltaWarehouse(root=str(tmp_path), catalog="local")
    local_registry = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")

    assert feature_lookup_logger(usecase, config, local, local_registry, lineage) is None
    assert feature_lookup_logger(usecase, config, unity, local_registry, lineage) is None
    logger = feature_lookup_logger(usecase, config, unity, uc_registry, lineage)

    assert logger is not None and logger.rows is spark
    columns = ("carrier", "flight_date", "origin", "dest", "scheduled_hour", "tailnum", "hour", "distance",
               "is_delayed")
    assert spark.chain == [("option", "versionAsOf", 5), ("table", "mlops_dev.training.flights"),
                           ("select", *columns)]
    assert logger.exclude == ["flight_date", "scheduled_hour", "tailnum"]
    assert logger.lookups[0].table_name == "mlops_dev.flights_features.carrier_delays"
