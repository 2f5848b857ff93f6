"""Models logged with their feature lookups, so that Databricks Model Serving joins the features by key.

Locally the serving process joins features from its own online store. On Databricks the model itself carries the
lookups: ``FeatureEngineeringClient.log_model(training_set=...)`` packages a feature spec (which table, by which
keys, which columns) with the model, and Model Serving reads those features from the tables' online copies
(``mlops_platform.resources.online_feature_store``) before it calls the model. A request then carries the keys and
the request fields only, exactly as it does locally.

The lookups are the use case's ``training_set.lookups``: each names the training-set columns that match a feature
table's primary key, and the column matched against its timestamp key (a point-in-time lookup for training; online,
the table holds the newest row per key, which is what the local store serves too). ``databricks-feature-engineering``
exists on Databricks ML runtimes, where the training job runs; it does not install beside this project's pins, so
it is imported only when a model is logged this way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlops_platform.settings import UseCaseConfig

# The run-relative path every model of the platform is logged under (``runs:/<run>/model``).
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class LookupSpec:
    """One ``FeatureLookup``: the feature table, the training-set columns matching its primary key (in key order),
    the column matching its timestamp key, and the features it brings."""

    table_name: str
    lookup_key: tuple[str, ...]
    feature_names: tuple[str, ...]
    timestamp_lookup_key: str | None = None

    @property
    def row_columns(self) -> tuple[str, ...]:
        return (*self.lookup_key, *([self.timestamp_lookup_key] if self.timestamp_lookup_key else []))


def lookup_specs(usecase: UseCaseConfig, table_name: Callable[[str], str]) -> list[LookupSpec]:
    """The feature lookups of ``usecase``'s training set; ``table_name`` gives a feature table's full name."""
    assert usecase.training_set is not None, f"use case '{usecase.name}' has no training_set"
    specs = []
    for lookup in usecase.training_set.lookups:
        table = usecase.features[lookup.table]
        row_column = {table_key: column for column, table_key in lookup.keys.items()}
        primary = [key for key in table.keys if key != table.timestamp_key]
        unmatched = [key for key in primary if key not in row_column]
        if unmatched:
            raise ValueError(f"use case '{usecase.name}': training_set lookup of '{lookup.table}' matches no column "
                             f"to its key(s) {unmatched} (keys: {lookup.keys})")
        specs.append(LookupSpec(
            table_name=table_name(lookup.table), lookup_key=tuple(row_column[key] for key in primary),
            feature_names=tuple(table.columns),
            timestamp_lookup_key=row_column.get(table.timestamp_key) if table.timestamp_key else None))
    return specs


def training_columns(usecase: UseCaseConfig, lookups: list[LookupSpec], label: str) -> list[str]:
    """What the rows handed to ``create_training_set`` hold: the lookup columns, the request fields, the label."""
    assert usecase.training_set is not None
    return list(dict.fromkeys([*(c for spec in lookups for c in spec.row_columns),
                               *usecase.training_set.request_fields, label]))


@dataclass(frozen=True)
class LoggedModel:
    model_uri: str
    registered_model_version: str


class FeatureLookupLogger:
    """Logs a fitted model with ``lookups`` through Databricks Feature Engineering, and registers it.

    ``rows`` is a Spark DataFrame of the training set's lookup columns, request fields and label; ``exclude`` the
    columns the model does not take (lookup keys that are not features). ``client`` defaults to a
    ``FeatureEngineeringClient`` of the job's workspace.
    """

    def __init__(self, lookups: list[LookupSpec], rows: Any, label: str, exclude: list[str],
                 client: Any = None) -> None:
        self.lookups = lookups
        self.rows = rows
        self.label = label
        self.exclude = exclude
        self.client = client

    def log_model(self, model: Any, *, registered_model_name: str, run_id: str) -> LoggedModel:
        import mlflow.sklearn as sklearn_flavor
        from databricks.feature_engineering import FeatureEngineeringClient, FeatureLookup

        client = self.client if self.client is not None else FeatureEngineeringClient()
        training_set = client.create_training_set(
            df=self.rows,
            feature_lookups=[FeatureLookup(table_name=spec.table_name, lookup_key=list(spec.lookup_key),
                                           feature_names=list(spec.feature_names),
                                           timestamp_lookup_key=spec.timestamp_lookup_key)
                             for spec in self.lookups],
            label=self.label, exclude_columns=list(self.exclude))
        client.log_model(model=model, artifact_path=MODEL_ARTIFACT, flavor=sklearn_flavor, training_set=training_set,
                         registered_model_name=registered_model_name)
        import mlflow

        # log_model returns nothing: the version it registered is the one made from this run.
        versions = [v for v in mlflow.MlflowClient().search_model_versions(f"run_id='{run_id}'")
                    if v.name == registered_model_name]
        if len(versions) != 1:
            raise RuntimeError(f"expected one version of {registered_model_name} from run {run_id} after logging it "
                               f"with its feature lookups, found {[v.version for v in versions]}")
        return LoggedModel(f"runs:/{run_id}/{MODEL_ARTIFACT}", str(versions[0].version))
