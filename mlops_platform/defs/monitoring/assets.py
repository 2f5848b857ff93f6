"""Monitoring: each day's inputs, predictions and (once labels exist) quality of a model, against its reference.

The reference is the train split of the exact training-set version the scoring champion learnt from (read from
its MLflow run's lineage tags), built once per model version and cached. A day is judged on the rows of its
monitoring window (the day alone by default, or enough days back to hold ``window.min_rows``); a snapshot use case
is judged on its whole newest snapshot. The judging is ``monitoring.day.monitor_day``, a pure function; this asset
reads its inputs (``inputs.py``), writes the model's own monitoring tables, one row per day and column or metric,
sends alerts and reports the checks. Each day gets a compact report; Evidently's full page only on demand: the
``<model>_drift_page`` asset below (in no job, materialized from the UI for the days a person picks) or
``mlops report``, both through ``reports.render_day_reports``.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
import pyarrow as pa

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.monitoring import inputs
from mlops_platform.defs.monitoring.reports import render_day_reports
from mlops_platform.defs.tables import days_of_run, partitioning
from mlops_platform.monitoring import tables
from mlops_platform.monitoring.alerts import drift_alert, quality_alert
from mlops_platform.monitoring.day import DayResult, MonitoredModel, Verdicts, judge, monitor_day
from mlops_platform.monitoring.decisions import FEATURE_DRIFT, PREDICTION_DRIFT, QUALITY_DROP
from mlops_platform.monitoring.drift import DriftResult
from mlops_platform.monitoring.reference import ReferenceCache
from mlops_platform.monitoring.report import compact_name, write_compact_report
from mlops_platform.resources.alerts import AlertSinks
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.reports import ReportStore
from mlops_platform.resources.warehouse import DayRange, Warehouse
from mlops_platform.settings import MonitoringConfig, UseCaseConfig


def _monitoring_asset(usecase: UseCaseConfig, spec: MonitoringConfig) -> dg.AssetsDefinition:
    model = inputs.monitored_model(usecase, spec)
    config = model.config
    key = stages.monitoring_key(usecase, spec.model)
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
                    f"One row per day's window and column in {'.'.join(outputs[tables.DRIFT_METRICS])}, per day and metric in "
                    f"{'.'.join(outputs[tables.QUALITY_METRICS])}, per day, column and metric in "
                    f"{'.'.join(outputs[tables.PROFILE_METRICS])} (shaped like Databricks data profiling's); a compact "
                    "HTML report per day, linking Evidently's full page (rendered on demand by the drift page "
                    "asset). Read by the retraining sensor and by people.",
        kinds={"delta", "html"},
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
        days = _monitored_days(context, date_column)
        scored, per_day = inputs.scored_rows(warehouse, predictions, date_column, days, window)
        served = inputs.served_records(warehouse, config.registered_name, days[0], days[-1], model.features)
        cache = ReferenceCache(reports.reference_cache(usecase.name, spec.model))
        results: dict[dt.date, DayResult] = {}
        sources = []
        for day in days:
            window_of_day = inputs.day_window(scored, per_day, date_column, day, window)
            if window_of_day is None:
                context.log.warning(f"no predictions for {day}: nothing to monitor")
                continue
            first, current, version = window_of_day
            reference, source = inputs.reference(warehouse, mlflow, cache, usecase, model, version)
            sources.append(source)
            results[day] = monitor_day(
                model, day, current, reference, window_start=first, served=served,
                labels=inputs.labels(warehouse, usecase, DayRange(date_column, first, day) if date_column else None))

        written = inputs.written_days(days[0], days[-1])
        table_rows = {name: [] for name in tables.SCHEMAS}
        for result in results.values():
            for name, rows in tables.rows(usecase.name, config.registered_name, spec.quality_metric,
                                          spec.max_drifted_share, result).items():
                table_rows[name] += rows
        for name, rows in table_rows.items():
            warehouse.replace_days(*outputs[name], pa.Table.from_pylist(rows, tables.SCHEMAS[name]), written)
        if not results:
            yield dg.MaterializeResult(metadata={"days_monitored": 0})
            return
        # An earlier day of a range run gets its compact page without checks: they are judged on the latest day only.
        for day in sorted(results)[:-1]:
            _write_report(reports, model, results[day], None, date_column is not None)
        latest = results[max(results)]
        verdicts = judge(
            latest, inputs.drift_history(warehouse, outputs[tables.DRIFT_METRICS], latest.day, spec.debounce.of_last),
            inputs.quality_drop_history(warehouse, outputs[tables.QUALITY_METRICS], spec, latest.day), spec)
        report = _write_report(reports, model, latest, verdicts, date_column is not None)
        _send_alerts(alerts, context, model, latest, verdicts, report)
        yield dg.MaterializeResult(metadata={
            "day": latest.day.isoformat(),
            "model_version": latest.model_version,
            "drift_share": latest.drift.share_drifted,
            "drifted_columns": dg.MetadataValue.json(latest.drifted_columns),
            "prediction_drift_score": latest.prediction_drift.columns[0].score,
            spec.quality_metric: _or_nan(latest.quality),
            f"champion_test_{spec.quality_metric}": _or_nan(latest.champion_quality),
            "report": dg.MetadataValue.path(str(report)),
            "report_url": dg.MetadataValue.url(report.resolve().as_uri()),
            "reference_baseline": ", ".join(sorted(set(sources))),
            **_serving_metadata(latest.serving),
        })
        yield from _check_results(latest, verdicts, spec, report)

    return monitoring


def _or_nan(value: float | None) -> float:
    return value if value is not None else float("nan")


def _monitored_days(context: dg.AssetExecutionContext, date_column: str | None) -> list[dt.date]:
    if date_column is None:
        return [_snapshot_day(context)]
    days = days_of_run(context, date_column)
    return [days.first + dt.timedelta(days=i) for i in range((days.last - days.first).days + 1)]


def _write_report(reports: ReportStore, model: MonitoredModel, result: DayResult, verdicts: Verdicts | None,
                  daily: bool) -> Path:
    """The day's compact page; it says how to render Evidently's full page, prominently on a failing day."""
    title = f"{model.config.registered_name} v{result.model_version}: monitoring of {result.day}"
    page_key = stages.drift_page_key(model.usecase, model.spec.model).to_user_string()
    return write_compact_report(reports.path(model.usecase, model.spec.model, compact_name(result.day)), title,
                                result, verdicts, usecase=model.usecase, page_asset=page_key, partitioned=daily)


def _send_alerts(alerts: AlertSinks, context: dg.AssetExecutionContext, model: MonitoredModel, latest: DayResult,
                 verdicts: Verdicts, report: Path) -> None:
    name, spec = model.config.registered_name, model.spec
    if verdicts.feature_drift:
        alerts.send(drift_alert(model.usecase, name, latest.model_version, latest.day, latest.drift.share_drifted,
                                latest.drifted_columns, str(report), verdicts.recent_days_drifted), context.log)
    if verdicts.quality_drop:
        alerts.send(quality_alert(model.usecase, name, latest.model_version, latest.day, spec.quality_metric,
                                  latest.quality, latest.champion_quality, spec.max_quality_drop, str(report)),
                    context.log)


def _check_results(latest: DayResult, verdicts: Verdicts, spec: MonitoringConfig, report: Path):
    day = latest.day.isoformat()
    yield dg.AssetCheckResult(
        check_name=FEATURE_DRIFT, passed=not verdicts.feature_drift, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"day": day, "drift_share": latest.drift.share_drifted,
                  "drifted_today": latest.drift.dataset_drifted, "recent_days_drifted": verdicts.recent_days_drifted,
                  "drifted_columns": dg.MetadataValue.json(latest.drifted_columns),
                  "report": dg.MetadataValue.path(str(report))},
    )
    yield dg.AssetCheckResult(
        check_name=PREDICTION_DRIFT, passed=not verdicts.prediction_drift, severity=dg.AssetCheckSeverity.WARN,
        metadata={"day": day, "score": latest.prediction_drift.columns[0].score,
                  "method": latest.prediction_drift.columns[0].method},
    )
    yield dg.AssetCheckResult(
        check_name=QUALITY_DROP, passed=not verdicts.quality_drop, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"day": day, spec.quality_metric: _or_nan(latest.quality),
                  "champion": _or_nan(latest.champion_quality), "max_drop": spec.max_quality_drop,
                  "dropped_today": verdicts.dropped_today, "recent_days_dropped": verdicts.recent_days_dropped},
    )


def _snapshot_day(context: dg.AssetExecutionContext) -> dt.date:
    """The day a snapshot run monitors: the landed snapshot's, as its run was tagged, else today (UTC)."""
    tagged = context.run.tags.get(names.SNAPSHOT_DAY_TAG)
    return dt.date.fromisoformat(tagged) if tagged else dt.datetime.now(dt.UTC).date()


def _serving_metadata(serving: DriftResult | str) -> dict[str, object]:
    if isinstance(serving, str):
        return {"serving_drift": serving}
    return {"serving_drift_share": serving.share_drifted, "serving_dataset_drifted": serving.dataset_drifted,
            "serving_drifted_columns": dg.MetadataValue.json([c.column for c in serving.columns if c.drifted])}


def _drift_page_asset(usecase: UseCaseConfig, spec: MonitoringConfig) -> dg.AssetsDefinition:
    date_column = usecase.gold[usecase.training_set.source].partition_column
    drift_table = tables.table(usecase.name, spec.model, tables.DRIFT_METRICS)

    @dg.asset(
        key=stages.drift_page_key(usecase, spec.model),
        deps=[stages.monitoring_key(usecase, spec.model)],
        description=f"Evidently's full drift page of {usecase.models[spec.model].registered_name}'s monitored "
                    f"{'days' if date_column else 'newest snapshot'}: each feature's distribution against the "
                    "champion's training reference, one self-contained HTML file per day (about 2 MB), beside the "
                    "day's compact page, which links it. On demand: in no job; materialize it for the days you want "
                    "to look at (the ones whose checks failed, first). Reads the predictions and the cached baseline; "
                    "writes no table.",
        kinds={"evidently", "html"},
        **stages.placement(usecase, names.MONITORING, on_demand=True),
        **partitioning(usecase, date_column is not None),
    )
    def drift_page(context: dg.AssetExecutionContext, warehouse: Warehouse, mlflow: MlflowTracking,
                   reports: ReportStore) -> dg.MaterializeResult:
        if date_column is not None:
            days = _monitored_days(context, date_column)
        elif (latest := inputs.latest_monitored_day(warehouse, drift_table)) is not None:
            days = [latest]
        else:
            raise ValueError(f"{warehouse.full_name(*drift_table)} holds no monitored day: run monitoring first")
        pages = render_day_reports({"warehouse": warehouse, "mlflow": mlflow, "reports": reports}, usecase, days)
        last = pages[max(pages)]
        return dg.MaterializeResult(metadata={
            "days": ", ".join(day.isoformat() for day in pages),
            "page": dg.MetadataValue.path(str(last)),
            "page_url": dg.MetadataValue.url(last.resolve().as_uri()),
            "page_bytes": sum(path.stat().st_size for path in pages.values()),
            **({"pages": dg.MetadataValue.json({day.isoformat(): str(path) for day, path in pages.items()})}
               if len(pages) > 1 else {}),
        })

    return drift_page


def monitoring_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    if usecase.monitoring is None:
        return []
    return [_monitoring_asset(usecase, usecase.monitoring), _drift_page_asset(usecase, usecase.monitoring)]
