"""Monitoring: each day's inputs, predictions and (once labels exist) quality of a model, against its reference.

The reference is the train split of the exact training-set version the scoring champion learnt from (read from
its MLflow run's lineage tags). A day is judged on the rows of its monitoring window (the day alone by default, or
enough days back to hold ``window.min_rows``); a snapshot use case is judged on its whole newest snapshot. Decisions
come from the fast Evidently-compatible engine over all rows; the HTML page people open is rendered by Evidently on
a sample. Metrics go to the model's own monitoring tables, one row per day and column or metric, so trends can be
queried and plotted.
"""

import datetime as dt
import math

import dagster as dg
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
from sklearn import metrics

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.tables import days_of_run, partitioning
from mlops_platform.features import feature_columns, row_keys
from mlops_platform.ml.scoring import PREDICTION, feature_frame
from mlops_platform.ml.training import binary_labels
from mlops_platform.monitoring import tables
from mlops_platform.monitoring.alerts import drift_alert, quality_alert
from mlops_platform.monitoring.decisions import debounced, window_start
from mlops_platform.monitoring.drift import DriftResult, detect_drift, render_html_report
from mlops_platform.monitoring.profile import profile
from mlops_platform.monitoring.serving_drift import served_records, serving_drift
from mlops_platform.monitoring.tables import DATASET_ROW, FEATURES_SCOPE, PREDICTION_SCOPE, SERVING_SCOPE
from mlops_platform.resources.alerts import AlertSinks
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.reports import ReportStore
from mlops_platform.resources.warehouse import DayRange, Warehouse
from mlops_platform.settings import ModelConfig, MonitoringConfig, UseCaseConfig

FEATURE_DRIFT = "feature_drift"
PREDICTION_DRIFT = "prediction_drift"
QUALITY_DROP = "quality_drop"
REFERENCE_SAMPLE_ROWS = 200_000


def _reference(warehouse: Warehouse, mlflow: MlflowTracking, usecase: UseCaseConfig, registered_name: str,
               version: str) -> pd.DataFrame:
    """The train split of the training set the given model version was trained on."""
    client = mlflow.client()
    run = client.get_run(client.get_model_version(registered_name, version).run_id)
    training_version = int(run.data.tags["training_set.version"])
    rows = pl.from_arrow(warehouse.read(*names.training_set_table(usecase.name), version=training_version))
    train = rows.filter(pl.col(names.SPLIT) == names.SPLITS[0])
    if train.height > REFERENCE_SAMPLE_ROWS:
        train = train.sample(REFERENCE_SAMPLE_ROWS, seed=0)
    return train.to_pandas()


def _champion_metric(mlflow: MlflowTracking, registered_name: str, version: str, metric: str) -> float | None:
    client = mlflow.client()
    metrics = client.get_run(client.get_model_version(registered_name, version).run_id).data.metrics
    return metrics.get(f"test_{metric}")


QUALITY_METRICS = {
    "roc_auc": metrics.roc_auc_score,
    "average_precision": metrics.average_precision_score,
    "root_mean_squared_error": metrics.root_mean_squared_error,
    "mean_absolute_error": metrics.mean_absolute_error,
}


def _quality(scored: pd.DataFrame, config: ModelConfig, metric: str) -> float | None:
    """The window's quality on its labelled rows; None until labels exist (or while one class is all there is)."""
    labelled = scored[scored[config.label].notna()]
    if labelled.empty:
        return None
    if config.task == "classification":
        truth = binary_labels(labelled[config.label], config)
        if truth.nunique() < 2:
            return None
    else:
        truth = labelled[config.label].astype(float)
    return float(QUALITY_METRICS[metric](truth, labelled[PREDICTION]))


def _drift_rows(key: dict, result: DriftResult, scope: str, drift_share: float) -> list[dict]:
    """One row per column, and one for the whole day: its share of drifted columns against ``drift_share``."""
    common = {**key, "scope": scope}
    rows = [{**common, **row} for row in result.to_rows()]
    rows.append({**common, "column": DATASET_ROW, "method": "share of drifted columns", "score": result.share_drifted,
                 "threshold": drift_share, "drifted": result.dataset_drifted})
    return rows


def _comparable(columns: list[str], *frames: pd.DataFrame) -> list[str]:
    """The columns holding at least one finite value in every frame."""
    def has_values(series: pd.Series) -> bool:
        values = series.dropna()
        return bool(len(values)) and (not pd.api.types.is_numeric_dtype(values) or bool(np.isfinite(values).any()))

    return [column for column in columns if all(has_values(frame[column]) for frame in frames)]


def _monitoring_asset(usecase: UseCaseConfig, spec: MonitoringConfig) -> dg.AssetsDefinition:
    config = usecase.models[spec.model]
    key = stages.monitoring_key(usecase, spec.model)
    features = feature_columns(usecase)
    all_categorical = [column for column in features if column in config.categorical]
    all_numerical = [column for column in features if column not in config.categorical]
    gold = usecase.gold[usecase.training_set.source]
    date_column = gold.partition_column
    predictions = names.predictions_table(usecase.name, spec.model)
    outputs = {name: tables.table(usecase.name, spec.model, name) for name in tables.SCHEMAS}
    window = spec.window
    judged_on = ("its whole newest snapshot" if date_column is None else "the day's scored rows" if window.days == 1
                 and not window.min_rows else f"the scored rows of its window (at least {window.days} days and "
                                              f"{window.min_rows} rows, at most {window.max_days} days back)")

    @dg.asset(
        key=key,
        deps=[stages.predictions_key(usecase, spec.model)],
        description=f"Drift and quality monitoring of {config.registered_name}'s champion, judged on {judged_on}: "
                    "feature drift and prediction drift against the champion's training reference, feature drift of "
                    f"the day's served requests (scope 'serving'), and {spec.quality_metric} once labels exist. "
                    f"One row per day and column in {'.'.join(outputs[tables.DRIFT_METRICS])}, per day and metric in "
                    f"{'.'.join(outputs[tables.QUALITY_METRICS])}, per day, column and metric in "
                    f"{'.'.join(outputs[tables.PROFILE_METRICS])}; an HTML report per day. Read by the retraining "
                    "sensor and by people.",
        kinds={"delta", "evidently"},
        **stages.placement(usecase, names.MONITORING),
        **partitioning(usecase, date_column is not None),
        check_specs=[
            dg.AssetCheckSpec(FEATURE_DRIFT, asset=key, description=(
                f"fails when at least {spec.max_drifted_share:.0%} of features drift on {spec.debounce.days} of the "
                f"last {spec.debounce.of_last} days, the latest among them")),
            dg.AssetCheckSpec(PREDICTION_DRIFT, asset=key, description="the prediction distribution drifts"),
            dg.AssetCheckSpec(QUALITY_DROP, asset=key, description=(
                f"fails when {spec.quality_metric} is worse than the champion's test score by more than "
                f"{spec.max_quality_drop} on {spec.debounce.days} of the last {spec.debounce.of_last} days, the "
                "latest among them")),
        ],
    )
    def monitoring(context: dg.AssetExecutionContext, warehouse: Warehouse, mlflow: MlflowTracking,
                   reports: ReportStore, alerts: AlertSinks):
        if date_column is not None:
            days = days_of_run(context, date_column)
            lookback = DayRange(date_column, days.first - dt.timedelta(days=window.max_days - 1), days.last)
            scored = pl.from_arrow(warehouse.read(*predictions, days=lookback))
            monitored = [days.first + dt.timedelta(days=i) for i in range((days.last - days.first).days + 1)]
            per_day = dict(scored.group_by(date_column).len().iter_rows())
        else:
            scored = pl.from_arrow(warehouse.read(*predictions))
            monitored = [_snapshot_day(context)]
        served = served_records(warehouse, config.registered_name, monitored[0], monitored[-1], features)
        serving_results: dict[dt.date, DriftResult | str] = {}
        drift_rows, quality_rows, profile_rows, day_results = [], [], [], {}
        references: dict[str, tuple[pd.DataFrame, object]] = {}
        for day in monitored:
            if date_column is not None:
                today = scored.filter(pl.col(date_column) == day)
                if today.is_empty():
                    context.log.warning(f"no predictions for {day}: nothing to monitor")
                    continue
                first = window_start(per_day, day, window)
                current = scored.filter(pl.col(date_column).is_between(first, day)).to_pandas()
                version = str(today["model_version"][0])
            else:
                first, current = day, scored.to_pandas()
                version = str(current["model_version"].iloc[0])
            if version not in references:
                # A range run usually sees one champion: read its reference and score it once, not once a day.
                reference_features = feature_frame(
                    _reference(warehouse, mlflow, usecase, config.registered_name, version), config, features)
                references[version] = (reference_features,
                                       _reference_predictions(mlflow, config, reference_features, version))
            reference_features, reference_scores = references[version]
            current_features = feature_frame(current, config, features)
            # A column with no value on one side (wind gusts on a calm day) cannot be compared; it is not drift.
            numerical, categorical = (_comparable(columns, reference_features, current_features)
                                      for columns in (all_numerical, all_categorical))
            drift = detect_drift(reference_features, current_features, numerical=numerical, categorical=categorical,
                                 threshold=spec.column_threshold, drift_share=spec.max_drifted_share)
            prediction_drift = detect_drift(pd.DataFrame({PREDICTION: reference_scores}),
                                            current[[PREDICTION]], numerical=[PREDICTION], categorical=[],
                                            threshold=spec.column_threshold)
            labelled = current.drop(columns=usecase.training_set.labels).merge(
                _labels(warehouse, usecase, DayRange(date_column, first, day) if date_column else None), how="left")
            quality = _quality(labelled, config, spec.quality_metric)
            baseline = _champion_metric(mlflow, config.registered_name, version, spec.quality_metric)
            report = reports.path(usecase.name, spec.model, f"drift_{day.isoformat()}.html")
            render_html_report(reference_features, current_features, report, numerical=numerical,
                               categorical=categorical)
            row_key = {tables.DAY: day, "usecase": usecase.name, "model": config.registered_name,
                       "model_version": version}
            drift_rows += _drift_rows(row_key, drift, FEATURES_SCOPE, spec.max_drifted_share)
            profile_rows += [{**row_key, **row}
                             for row in profile(current, [*all_numerical, PREDICTION], all_categorical)]
            drift_rows += _drift_rows(row_key, prediction_drift, PREDICTION_SCOPE, 0.5)
            serving_results[day] = serving_drift(served, day, reference_features, config, numerical, categorical,
                                                 threshold=spec.column_threshold, drift_share=spec.max_drifted_share)
            if isinstance(serving_results[day], DriftResult):
                drift_rows += _drift_rows(row_key, serving_results[day], SERVING_SCOPE, spec.max_drifted_share)
            quality_rows.append({**row_key, "metric": spec.quality_metric, "value": quality,
                                 "champion_value": baseline, "rows": len(current)})
            day_results[day] = (drift, prediction_drift, quality, baseline, report)

        written = DayRange(tables.DAY, monitored[0], monitored[-1])
        for name, rows in ((tables.DRIFT_METRICS, drift_rows), (tables.QUALITY_METRICS, quality_rows),
                           (tables.PROFILE_METRICS, profile_rows)):
            warehouse.replace_days(*outputs[name], pa.Table.from_pylist(rows, tables.SCHEMAS[name]), written)
        if not day_results:
            yield dg.MaterializeResult(metadata={"days_monitored": 0})
            return
        latest = max(day_results)
        drift, prediction_drift, quality, baseline, report = day_results[latest]
        history = _dataset_drift_history(warehouse, outputs[tables.DRIFT_METRICS], latest, spec.debounce.of_last)
        confirmed = debounced(history, latest, spec.debounce)
        drifted_columns = [c.column for c in drift.columns if c.drifted]
        quality_history = _quality_drop_history(warehouse, outputs[tables.QUALITY_METRICS], spec, latest)
        # One bad day of labels is noise as much as one drifted day is: the same debounce rule applies.
        quality_dropped = debounced(quality_history, latest, spec.debounce)
        version = str(quality_rows[-1]["model_version"])
        if confirmed:
            alerts.send(drift_alert(usecase.name, config.registered_name, version, latest, drift.share_drifted,
                                    drifted_columns, str(report), sum(history.values())), context.log)
        if quality_dropped:
            alerts.send(quality_alert(usecase.name, config.registered_name, version, latest, spec.quality_metric,
                                      quality, baseline, spec.max_quality_drop, str(report)), context.log)
        serving = serving_results[latest]
        yield dg.MaterializeResult(
            metadata={
                "day": latest.isoformat(),
                "model_version": version,
                "drift_share": drift.share_drifted,
                "drifted_columns": dg.MetadataValue.json(drifted_columns),
                "prediction_drift_score": prediction_drift.columns[0].score,
                spec.quality_metric: quality if quality is not None else float("nan"),
                f"champion_test_{spec.quality_metric}": baseline if baseline is not None else float("nan"),
                "report": dg.MetadataValue.path(str(report)),
                "report_url": dg.MetadataValue.url(report.resolve().as_uri()),
                **_serving_metadata(serving),
            },
        )
        yield dg.AssetCheckResult(
            check_name=FEATURE_DRIFT, passed=not confirmed, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"day": latest.isoformat(), "drift_share": drift.share_drifted,
                      "drifted_today": drift.dataset_drifted,
                      "recent_days_drifted": sum(history.values()), "drifted_columns": dg.MetadataValue.json(
                          drifted_columns), "report": dg.MetadataValue.path(str(report))},
        )
        yield dg.AssetCheckResult(
            check_name=PREDICTION_DRIFT, passed=not prediction_drift.dataset_drifted,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"day": latest.isoformat(), "score": prediction_drift.columns[0].score,
                      "method": prediction_drift.columns[0].method},
        )
        yield dg.AssetCheckResult(
            check_name=QUALITY_DROP, passed=not quality_dropped, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"day": latest.isoformat(), spec.quality_metric: quality if quality is not None else float("nan"),
                      "champion": baseline if baseline is not None else float("nan"),
                      "max_drop": spec.max_quality_drop, "dropped_today": quality_history.get(latest, False),
                      "recent_days_dropped": sum(quality_history.values())},
        )

    return monitoring


def _snapshot_day(context: dg.AssetExecutionContext) -> dt.date:
    """The day a snapshot run monitors: the landed snapshot's, as its run was tagged, else today (UTC)."""
    tagged = context.run.tags.get(names.SNAPSHOT_DAY_TAG)
    return dt.date.fromisoformat(tagged) if tagged else dt.datetime.now(dt.UTC).date()


def _labels(warehouse: Warehouse, usecase: UseCaseConfig, days: DayRange | None) -> pd.DataFrame:
    """The labels of ``days`` (all of a snapshot) from gold: a later day's labels fill an earlier report when it is
    re-run."""
    spec = usecase.training_set
    table = warehouse.read(*names.table(usecase.name, names.GOLD, spec.source), days=days,
                           columns=[*row_keys(usecase), *spec.labels])
    # Through polars, as the predictions are, so the join keys get the same pandas types on both sides.
    return pl.from_arrow(table).to_pandas()


def _reference_predictions(mlflow: MlflowTracking, config, reference_features: pd.DataFrame, version: str):
    import mlflow as mlflow_client

    mlflow.configure()
    model = mlflow_client.sklearn.load_model(f"models:/{config.registered_name}/{version}")
    if config.task == "classification":
        return model.predict_proba(reference_features)[:, 1]
    return model.predict(reference_features)


def _dataset_drift_history(warehouse: Warehouse, table: names.TableName, latest: dt.date, days: int
                           ) -> dict[dt.date, bool]:
    first = latest - dt.timedelta(days=days - 1)
    rows = pl.from_arrow(warehouse.read(*table, days=DayRange(tables.DAY, first, latest))).filter(
        (pl.col("scope") == FEATURES_SCOPE) & (pl.col("column") == DATASET_ROW))
    return dict(zip(rows[tables.DAY].to_list(), rows["drifted"].to_list(), strict=True))


LOWER_IS_BETTER = {"root_mean_squared_error", "mean_absolute_error"}


def quality_dropped_below(value: float | None, champion: float | None, spec: MonitoringConfig) -> bool:
    """Whether a day's quality is worse than the champion's test score by more than ``max_quality_drop``."""
    if value is None or champion is None or math.isnan(value) or math.isnan(champion):
        return False
    if spec.quality_metric in LOWER_IS_BETTER:
        return value > champion + spec.max_quality_drop
    return value < champion - spec.max_quality_drop


def _quality_drop_history(warehouse: Warehouse, table: names.TableName, spec: MonitoringConfig, latest: dt.date
                          ) -> dict[dt.date, bool]:
    first = latest - dt.timedelta(days=spec.debounce.of_last - 1)
    rows = pl.from_arrow(warehouse.read(*table, days=DayRange(tables.DAY, first, latest))).filter(
        pl.col("metric") == spec.quality_metric)
    return {day: quality_dropped_below(value, champion, spec)
            for day, value, champion in zip(rows[tables.DAY], rows["value"], rows["champion_value"], strict=True)}


def _serving_metadata(serving: DriftResult | str) -> dict[str, object]:
    if isinstance(serving, str):
        return {"serving_drift": serving}
    return {"serving_drift_share": serving.share_drifted, "serving_dataset_drifted": serving.dataset_drifted,
            "serving_drifted_columns": dg.MetadataValue.json([c.column for c in serving.columns if c.drifted])}


def monitoring_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    return [_monitoring_asset(usecase, usecase.monitoring)] if usecase.monitoring else []
