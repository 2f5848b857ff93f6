"""Monitoring: each day's inputs, predictions and (once labels exist) quality of a model, against its reference.

The reference is the train split of the exact training-set version the scoring champion learnt from (read from
its MLflow run's lineage tags). Decisions come from the fast Evidently-compatible engine over all rows; the HTML
page people open is rendered by Evidently on a sample. Metrics are written to Delta monitoring tables, one row per
day, model and column or metric, so trends can be queried and plotted.
"""

import datetime as dt
import math

import dagster as dg
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
from sklearn import metrics

from mlops_platform.defs.inference.assets import predictions_key
from mlops_platform.defs.tables import BACKFILL_POLICY, daily_partitions, days_of_run
from mlops_platform.features import feature_columns
from mlops_platform.ml.scoring import PREDICTION, feature_frame
from mlops_platform.monitoring.alerts import drift_alert, quality_alert
from mlops_platform.monitoring.decisions import debounced
from mlops_platform.monitoring.drift import DriftResult, detect_drift, render_html_report
from mlops_platform.monitoring.profile import profile
from mlops_platform.monitoring.serving_drift import served_records, serving_drift
from mlops_platform.resources.alerts import AlertSinks
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.reports import ReportStore
from mlops_platform.resources.warehouse import DayRange, Warehouse
from mlops_platform.settings import MonitoringConfig, UseCaseConfig

FEATURE_DRIFT = "feature_drift"
PREDICTION_DRIFT = "prediction_drift"
QUALITY_DROP = "quality_drop"
DATASET_ROW = "__dataset__"
FEATURES_SCOPE = "features"
PREDICTION_SCOPE = "prediction"
SERVING_SCOPE = "serving"
REFERENCE_SAMPLE_ROWS = 200_000


def monitoring_key(model_name: str) -> dg.AssetKey:
    return dg.AssetKey(["monitoring", f"{model_name}_drift"])


def _reference(warehouse: Warehouse, mlflow: MlflowTracking, usecase: UseCaseConfig, registered_name: str,
               version: str) -> pd.DataFrame:
    """The train split of the training set the given model version was trained on."""
    client = mlflow.client()
    run = client.get_run(client.get_model_version(registered_name, version).run_id)
    training_version = int(run.data.tags["training_set.version"])
    rows = pl.from_arrow(warehouse.read("training", usecase.name, version=training_version))
    train = rows.filter(pl.col("split") == "train")
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


def _quality(scored: pd.DataFrame, label_column: str, metric: str, task: str) -> float | None:
    """The day's quality on its labelled rows; None until labels exist (or while one class is all there is)."""
    labelled = scored[scored[label_column].notna()]
    if labelled.empty or (task == "classification" and labelled[label_column].nunique() < 2):
        return None
    truth = labelled[label_column].astype(int if task == "classification" else float)
    return float(QUALITY_METRICS[metric](truth, labelled[PREDICTION]))


def _drift_rows(day: dt.date, model: str, version: str, result: DriftResult, scope: str, drift_share: float
                ) -> list[dict]:
    """One row per column, and one for the whole day: its share of drifted columns against ``drift_share``."""
    common = {"day": day, "model": model, "model_version": version, "scope": scope}
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
    key = monitoring_key(spec.model)
    features = feature_columns(usecase)
    all_categorical = [column for column in features if column in config.categorical]
    all_numerical = [column for column in features if column not in config.categorical]
    gold = usecase.gold[usecase.training_set.source]

    @dg.asset(
        key=key,
        deps=[predictions_key(spec.model)],
        description=f"Daily drift and quality monitoring of {config.registered_name}'s champion: feature drift and "
                    "prediction drift of the day's scored rows against the champion's training reference, feature "
                    "drift of the day's served requests (monitoring.inference_log, scope 'serving'), and "
                    f"{spec.quality_metric} once labels exist. One row per day and column in "
                    "monitoring.drift_metrics, per day and metric in monitoring.quality_metrics, per day, column and "
                    "metric in monitoring.profile_metrics; an HTML report per "
                    "day. Read by the retraining sensor and by people.",
        group_name="monitoring",
        kinds={"delta", "evidently"},
        owners=usecase.owners,
        tags={"usecase": usecase.name},
        partitions_def=daily_partitions(usecase),
        backfill_policy=BACKFILL_POLICY,
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
        days = days_of_run(context, gold.partition_column)
        scored = pl.from_arrow(warehouse.read("predictions", spec.model, days=days))
        served = served_records(warehouse, config.registered_name, days.first, days.last, features)
        serving_results: dict[dt.date, DriftResult | str] = {}
        drift_rows, quality_rows, profile_rows, day_results = [], [], [], {}
        references: dict[str, tuple[pd.DataFrame, object]] = {}
        day = days.first
        while day <= days.last:
            current = scored.filter(pl.col(gold.partition_column) == day).to_pandas()
            if current.empty:
                context.log.warning(f"no predictions for {day}: nothing to monitor")
                day += dt.timedelta(days=1)
                continue
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
                _labels(warehouse, usecase, day), how="left")
            quality = _quality(labelled, config.label, spec.quality_metric, config.task)
            baseline = _champion_metric(mlflow, config.registered_name, version, spec.quality_metric)
            report = reports.path(spec.model, f"drift_{day.isoformat()}.html")
            render_html_report(reference_features, current_features, report, numerical=numerical,
                               categorical=categorical)
            drift_rows += _drift_rows(day, config.registered_name, version, drift, FEATURES_SCOPE,
                                      spec.max_drifted_share)
            profile_rows += [{"day": day, "model": config.registered_name, "model_version": version, **row}
                             for row in profile(current, [*all_numerical, PREDICTION], all_categorical)]
            drift_rows += _drift_rows(day, config.registered_name, version, prediction_drift, PREDICTION_SCOPE, 0.5)
            serving_results[day] = serving_drift(served, day, reference_features, config, numerical, categorical,
                                                 threshold=spec.column_threshold, drift_share=spec.max_drifted_share)
            if isinstance(serving_results[day], DriftResult):
                drift_rows += _drift_rows(day, config.registered_name, version, serving_results[day], SERVING_SCOPE,
                                          spec.max_drifted_share)
            quality_rows.append({"day": day, "model": config.registered_name, "model_version": version,
                                 "metric": spec.quality_metric, "value": quality, "champion_value": baseline,
                                 "rows": len(current)})
            day_results[day] = (drift, prediction_drift, quality, baseline, report)
            day += dt.timedelta(days=1)

        day_range = DayRange("day", days.first, days.last)
        warehouse.replace_days("monitoring", "drift_metrics", pa.Table.from_pylist(drift_rows, DRIFT_SCHEMA),
                               day_range)
        warehouse.replace_days("monitoring", "quality_metrics", pa.Table.from_pylist(quality_rows, QUALITY_SCHEMA),
                               day_range)
        warehouse.replace_days("monitoring", "profile_metrics", pa.Table.from_pylist(profile_rows, PROFILE_SCHEMA),
                               day_range)
        if not day_results:
            yield dg.MaterializeResult(metadata={"days_monitored": 0})
            return
        latest = max(day_results)
        drift, prediction_drift, quality, baseline, report = day_results[latest]
        history = _dataset_drift_history(warehouse, config.registered_name, latest, spec.debounce.of_last)
        confirmed = debounced(history, latest, spec.debounce)
        drifted_columns = [c.column for c in drift.columns if c.drifted]
        quality_history = _quality_drop_history(warehouse, config.registered_name, spec, latest)
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
                "model_version": drift_rows[0]["model_version"],
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


DRIFT_SCHEMA = pa.schema([
    ("day", pa.date32()), ("model", pa.large_string()), ("model_version", pa.large_string()),
    ("scope", pa.large_string()), ("column", pa.large_string()), ("method", pa.large_string()),
    ("score", pa.float64()), ("threshold", pa.float64()), ("drifted", pa.bool_()),
])
PROFILE_SCHEMA = pa.schema([
    ("day", pa.date32()), ("model", pa.large_string()), ("model_version", pa.large_string()),
    ("column", pa.large_string()), ("kind", pa.large_string()), ("metric", pa.large_string()),
    ("value", pa.float64()),
])
QUALITY_SCHEMA = pa.schema([
    ("day", pa.date32()), ("model", pa.large_string()), ("model_version", pa.large_string()),
    ("metric", pa.large_string()), ("value", pa.float64()), ("champion_value", pa.float64()), ("rows", pa.int64()),
])


def _labels(warehouse: Warehouse, usecase: UseCaseConfig, day: dt.date) -> pd.DataFrame:
    """The day's labels from gold (a later day's labels backfill an earlier report when it is re-run)."""
    spec = usecase.training_set
    gold = usecase.gold[spec.source]
    keys = list(dict.fromkeys([gold.partition_column, *gold.keys]))
    table = warehouse.read("gold", spec.source, days=DayRange(gold.partition_column, day, day),
                           columns=[*keys, *spec.labels])
    # Through polars, as the predictions are, so the join keys get the same pandas types on both sides.
    return pl.from_arrow(table).to_pandas()


def _reference_predictions(mlflow: MlflowTracking, config, reference_features: pd.DataFrame, version: str):
    import mlflow as mlflow_client

    mlflow.configure()
    model = mlflow_client.sklearn.load_model(f"models:/{config.registered_name}/{version}")
    if config.task == "classification":
        return model.predict_proba(reference_features)[:, 1]
    return model.predict(reference_features)


def _dataset_drift_history(warehouse: Warehouse, model: str, latest: dt.date, days: int) -> dict[dt.date, bool]:
    first = latest - dt.timedelta(days=days - 1)
    table = pl.from_arrow(warehouse.read("monitoring", "drift_metrics", days=DayRange("day", first, latest)))
    rows = table.filter((pl.col("model") == model) & (pl.col("scope") == FEATURES_SCOPE)
                        & (pl.col("column") == DATASET_ROW))
    return dict(zip(rows["day"].to_list(), rows["drifted"].to_list(), strict=True))


LOWER_IS_BETTER = {"root_mean_squared_error", "mean_absolute_error"}


def quality_dropped_below(value: float | None, champion: float | None, spec: MonitoringConfig) -> bool:
    """Whether a day's quality is worse than the champion's test score by more than ``max_quality_drop``."""
    if value is None or champion is None or math.isnan(value) or math.isnan(champion):
        return False
    if spec.quality_metric in LOWER_IS_BETTER:
        return value > champion + spec.max_quality_drop
    return value < champion - spec.max_quality_drop


def _quality_drop_history(warehouse: Warehouse, model: str, spec: MonitoringConfig, latest: dt.date
                          ) -> dict[dt.date, bool]:
    first = latest - dt.timedelta(days=spec.debounce.of_last - 1)
    table = pl.from_arrow(warehouse.read("monitoring", "quality_metrics", days=DayRange("day", first, latest)))
    rows = table.filter((pl.col("model") == model) & (pl.col("metric") == spec.quality_metric))
    return {day: quality_dropped_below(value, champion, spec)
            for day, value, champion in zip(rows["day"], rows["value"], rows["champion_value"], strict=True)}


def _serving_metadata(serving: DriftResult | str) -> dict[str, object]:
    if isinstance(serving, str):
        return {"serving_drift": serving}
    return {"serving_drift_share": serving.share_drifted, "serving_dataset_drifted": serving.dataset_drifted,
            "serving_drifted_columns": dg.MetadataValue.json([c.column for c in serving.columns if c.drifted])}


def monitoring_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    return [_monitoring_asset(usecase, usecase.monitoring)] if usecase.monitoring else []
