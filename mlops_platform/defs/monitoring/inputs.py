"""Monitoring's I/O: the frames ``monitor_day`` judges, read from the warehouse and MLflow, and the check history.

Everything here reads; the judging is ``mlops_platform.monitoring.day``. The asset and ``mlops report`` both read
through these functions, so an on-demand report sees exactly the frames the day's run judged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import pandas as pd
import polars as pl

from mlops_platform import names
from mlops_platform.features import feature_columns, row_keys
from mlops_platform.ml.scoring import feature_frame, load_version, predict
from mlops_platform.monitoring import tables
from mlops_platform.monitoring.day import MonitoredModel, Reference
from mlops_platform.monitoring.decisions import quality_dropped_below, window_reach, window_start
from mlops_platform.monitoring.reference import ReferenceCache, cache_key
from mlops_platform.monitoring.tables import DATASET_ROW, FEATURES_SCOPE
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.warehouse import DayRange, Warehouse
from mlops_platform.serving import inference_table
from mlops_platform.serving.inference_table import INFERENCE_SCHEMA, INFERENCE_TABLE, normalize
from mlops_platform.settings import MonitoringConfig, MonitoringWindow, UseCaseConfig

REFERENCE_SAMPLE_ROWS = 200_000


def monitored_model(usecase: UseCaseConfig, spec: MonitoringConfig) -> MonitoredModel:
    return MonitoredModel(usecase=usecase.name, spec=spec, config=usecase.models[spec.model],
                          features=tuple(feature_columns(usecase)), keys=tuple(row_keys(usecase)),
                          labels=tuple(usecase.training_set.labels))


def reference(warehouse: Warehouse, mlflow: MlflowTracking, cache: ReferenceCache, usecase: UseCaseConfig,
              model: MonitoredModel, version: str) -> tuple[Reference, str]:
    """The baseline of ``version`` (from ``cache`` when it holds it) and where it came from."""
    client = mlflow.client()
    name = model.config.registered_name
    run_id = client.get_model_version(name, version).run_id

    def build() -> Reference:
        run = client.get_run(run_id)
        training_version = int(run.data.tags[names.TRAINING_SET_VERSION_TAG])
        rows = pl.from_arrow(warehouse.read(*names.training_set_table(usecase.name), version=training_version))
        train = rows.filter(pl.col(names.SPLIT) == names.SPLITS[0])
        if train.height > REFERENCE_SAMPLE_ROWS:
            train = train.sample(REFERENCE_SAMPLE_ROWS, seed=0)
        features = feature_frame(train.to_pandas(), model.config, list(model.features))
        return Reference(version, features, _predict(mlflow, model, version, features),
                         run.data.metrics.get(f"test_{model.spec.quality_metric}"))

    return cache.get(cache_key(name, version, run_id), build)


def _predict(mlflow: MlflowTracking, model: MonitoredModel, version: str, features: pd.DataFrame):
    # The version batch scoring loaded (the process's model cache): one copy of a model per version, and the
    # reference scored exactly as the days are.
    mlflow.configure()
    return predict(load_version(model.config.registered_name, version), features)


def scored_rows(warehouse: Warehouse, predictions: names.TableName, date_column: str | None, days: list[dt.date],
                window: MonitoringWindow) -> tuple[pl.DataFrame, dict[dt.date, int]]:
    """The predictions the run's days' windows can reach (all of a snapshot) and their rows per day."""
    if date_column is None:
        return pl.from_arrow(warehouse.read(*predictions)), {}
    lookback = DayRange(date_column, days[0] - dt.timedelta(days=window_reach(window) - 1), days[-1])
    scored = pl.from_arrow(warehouse.read(*predictions, days=lookback))
    return scored, dict(scored.group_by(date_column).len().iter_rows())


def day_window(scored: pl.DataFrame, per_day: dict[dt.date, int], date_column: str | None, day: dt.date,
               window: MonitoringWindow) -> tuple[dt.date, pd.DataFrame, str] | None:
    """The first day, scored rows and scoring version of ``day``'s window; None when the day has no predictions."""
    if date_column is None:
        current = scored.to_pandas()
        return day, current, str(current["model_version"].iloc[0])
    today = scored.filter(pl.col(date_column) == day)
    if today.is_empty():
        return None
    first = window_start(per_day, day, window)
    current = scored.filter(pl.col(date_column).is_between(first, day)).to_pandas()
    return first, current, str(today["model_version"][0])


def labels(warehouse: Warehouse, usecase: UseCaseConfig, days: DayRange | None) -> pd.DataFrame:
    """The labels of ``days`` (all of a snapshot) from gold: a later day's labels fill an earlier report when it is
    re-run."""
    spec = usecase.training_set
    table = warehouse.read(*names.table(usecase.name, names.GOLD, spec.source), days=days,
                           columns=[*row_keys(usecase), *spec.labels])
    # Through polars, as the predictions are, so the join keys get the same pandas types on both sides.
    return pl.from_arrow(table).to_pandas()


def served_records(warehouse: Warehouse, registered_name: str, first: dt.date, last: dt.date,
                   features: Sequence[str], *, schema: str = INFERENCE_SCHEMA, table: str = INFERENCE_TABLE,
                   endpoint: str | None = None, served_entities: Mapping[str, tuple[str, str]] | None = None,
                   ) -> pd.DataFrame | None:
    """Records scored for ``registered_name`` from ``first`` to ``last`` with their day, served version and the
    logged ``features`` (columns the table does not hold are left out); None when the table does not exist.

    ``schema.table`` may be a Databricks inference table; then ``endpoint`` and ``served_entities`` say what its
    served entities are (see :func:`mlops_platform.serving.inference_table.normalize`).
    """
    if not warehouse.exists(schema, table):
        return None
    rows = warehouse.read(schema, table, filters=[("request_date", ">=", first), ("request_date", "<=", last)])
    return inference_table.served_records(normalize(rows, endpoint=endpoint, served_entities=served_entities),
                                          registered_name, first, last, features)


def written_days(first: dt.date, last: dt.date) -> DayRange:
    """The rows of the monitoring tables that monitoring the days ``first`` to ``last`` (re)writes."""
    return DayRange(tables.WINDOW_END, tables.window_end(first), tables.window_end(last))


def _recent(warehouse: Warehouse, table: names.TableName, latest: dt.date, days: int) -> pl.DataFrame | None:
    if not warehouse.exists(*table):
        return None
    written = written_days(latest - dt.timedelta(days=days - 1), latest)
    return pl.from_arrow(warehouse.read(*table, days=written)).with_columns(tables.monitored_day())


def drift_history(warehouse: Warehouse, table: names.TableName, latest: dt.date, days: int) -> dict[dt.date, bool]:
    """Whether the features drifted as a dataset on each monitored day of the ``days`` ending at ``latest``."""
    rows = _recent(warehouse, table, latest, days)
    if rows is None:
        return {}
    rows = rows.filter((pl.col("scope") == FEATURES_SCOPE) & (pl.col("column_name") == DATASET_ROW))
    return dict(zip(rows["day"].to_list(), rows["drifted"].to_list(), strict=True))


def quality_drop_history(warehouse: Warehouse, table: names.TableName, spec: MonitoringConfig, latest: dt.date
                         ) -> dict[dt.date, bool]:
    """Whether quality dropped below the champion's on each monitored day of the debounce window."""
    rows = _recent(warehouse, table, latest, spec.debounce.of_last)
    if rows is None:
        return {}
    rows = rows.filter(pl.col("metric") == spec.quality_metric)
    return {day: quality_dropped_below(value, champion, spec)
            for day, value, champion in zip(rows["day"], rows["value"], rows["champion_value"], strict=True)}


def latest_monitored_day(warehouse: Warehouse, table: names.TableName) -> dt.date | None:
    """The newest day monitored in ``table`` (what a snapshot use case's newest compact page is named by)."""
    if not warehouse.exists(*table):
        return None
    days = pl.from_arrow(warehouse.read(*table, columns=[tables.WINDOW_END])).select(tables.monitored_day())
    return days["day"].max()
