"""Closing the loop: when a drift or quality check fails, rematerialise training, gate and promotion.

Dagster has no "check failed" trigger (a failing non-blocking check leaves its run successful), so a plain sensor
reads every new evaluation of each watched check, remembers the last one it saw in its cursor, and applies the
guardrails from configuration: one retraining at a time, a cooldown in data days, a daily maximum. Every request
is tagged with the evaluation that caused it; the run key makes a second request for the same evaluation a no-op.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

# Not exported at the top level; the event log's check history is the one API that pages through evaluations.
from dagster._core.storage.asset_check_execution_record import COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.monitoring.assets import FEATURE_DRIFT, QUALITY_DROP
from mlops_platform.monitoring.decisions import retraining_decision
from mlops_platform.settings import UseCaseConfig

WATCHED_CHECKS = (FEATURE_DRIFT, QUALITY_DROP)
ACTIVE_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                   dg.DagsterRunStatus.STARTED]
TRIGGER_TAG = "mlops/retraining_trigger"
HISTORY_LIMIT = 50


def _new_failures(instance: dg.DagsterInstance, watched: list[dg.AssetCheckKey], seen: dict[str, int]):
    """Failed evaluations of the watched checks newer than the ones already seen, oldest first.

    Every evaluation since the last tick, not only the latest: two days can be monitored between ticks, and the
    failure of the first must not hide behind a pass of the second. ``seen`` moves past each record read.
    """
    records = []
    for key in watched:
        name = key.to_user_string()
        history = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=HISTORY_LIMIT, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES)
        fresh = [record for record in history if record.id > seen.get(name, 0)]
        if fresh:
            seen[name] = max(record.id for record in fresh)
        records += [record for record in fresh if not record.evaluation.passed]
    return sorted(records, key=lambda record: record.id)


def retraining_sensor(usecase: UseCaseConfig, training_job: dg.UnresolvedAssetJobDefinition
                      ) -> dg.SensorDefinition:
    spec = usecase.monitoring
    assert spec is not None
    monitored = stages.monitoring_key(usecase, spec.model)
    watched = [dg.AssetCheckKey(monitored, name) for name in WATCHED_CHECKS]

    @dg.sensor(
        name=names.retraining_sensor(usecase.name),
        job=training_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests {training_job.name} when {', '.join(WATCHED_CHECKS)} fails on "
                    f"{monitored.to_user_string()}, within the retraining guardrails "
                    f"(cooldown {spec.retraining.cooldown_days} days, at most {spec.retraining.max_per_day} a day).",
    )
    def sensor(context: dg.SensorEvaluationContext):
        state = json.loads(context.cursor) if context.cursor else {"seen": {}, "last_day": None, "per_day": {}}
        for record in _new_failures(context.instance, watched, state["seen"]):
            name = record.key.to_user_string()
            day = dt.date.fromisoformat(str(record.evaluation.metadata["day"].value))
            active = context.instance.get_run_ids(dg.RunsFilter(job_name=training_job.name,
                                                                statuses=ACTIVE_STATUSES))
            decision = retraining_decision(
                day,
                last_retraining_day=dt.date.fromisoformat(state["last_day"]) if state["last_day"] else None,
                requested_on_day=state["per_day"].get(day.isoformat(), 0),
                runs_in_progress=active,
                rule=spec.retraining,
            )
            context.log.info(f"{name} failed for {day}: {'retraining' if decision.retrain else 'not retraining'} "
                             f"({decision.reason})")
            if not decision.retrain:
                continue
            state["last_day"] = day.isoformat()
            state["per_day"][day.isoformat()] = state["per_day"].get(day.isoformat(), 0) + 1
            yield dg.RunRequest(
                run_key=f"retrain:{name}:{record.id}",
                tags={TRIGGER_TAG: name, "mlops/trigger_day": day.isoformat(),
                      "mlops/trigger_evaluation_id": str(record.id), "mlops/trigger_run_id": record.run_id},
            )
        context.update_cursor(json.dumps(state))

    return sensor
