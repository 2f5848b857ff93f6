"""Closing the loop: when a drift or quality check fails, rematerialise training, gate and promotion.

Dagster has no "check failed" trigger (a failing non-blocking check leaves its run successful), so a plain sensor
reads every new evaluation of each watched check, remembers the last one it saw in its cursor, and applies the
guardrails from configuration: one retraining at a time, a cooldown in data days, a daily maximum. Every request
is tagged with the evaluation that caused it; the run key makes a second request for the same evaluation a no-op.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import dagster as dg

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.monitoring.assets import FEATURE_DRIFT, QUALITY_DROP
from mlops_platform.monitoring.decisions import retraining_decision
from mlops_platform.settings import UseCaseConfig

WATCHED_CHECKS = (FEATURE_DRIFT, QUALITY_DROP)
ACTIVE_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                   dg.DagsterRunStatus.STARTED]
TRIGGER_TAG = "mlops/retraining_trigger"
# Evaluations read per query; the sensor pages on until it has read every one since its cursor.
PAGE_SIZE = 500


@dataclass(frozen=True)
class Failure:
    """One failed evaluation of a watched check, from the event log."""

    id: int
    key: dg.AssetCheckKey
    run_id: str
    evaluation: dg.AssetCheckEvaluation


def _new_failures(instance: dg.DagsterInstance, watched: list[dg.AssetCheckKey], state: dict) -> list[Failure]:
    """Failed evaluations of the watched checks since the cursor, oldest first; the cursor moves past all read.

    Every evaluation since the last tick, however many: two days can be monitored between ticks, and the failure
    of the first must not hide behind a pass of the second. Paged through the public event-record query, by
    storage id, so nothing is skipped and nothing is read twice.
    """
    after = int(state.get("after") or max(state.get("seen", {}).values(), default=0))
    wanted = set(watched)
    failures = []
    while True:
        page = instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after),
            limit=PAGE_SIZE, ascending=True)
        for record in page:
            after = max(after, record.storage_id)
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            key = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)
            if key in wanted and not evaluation.passed:
                failures.append(Failure(record.storage_id, key, record.run_id, evaluation))
        if len(page) < PAGE_SIZE:
            break
    state["after"] = after
    state.pop("seen", None)
    return failures


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
        state = json.loads(context.cursor) if context.cursor else {"after": 0, "last_day": None, "per_day": {}}
        for record in _new_failures(context.instance, watched, state):
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
