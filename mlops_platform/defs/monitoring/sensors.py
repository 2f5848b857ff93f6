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
# Executions read per query; the sensor pages on until it has read every one since its cursor.
PAGE_SIZE = 500


@dataclass(frozen=True)
class Failure:
    """One failed evaluation of a watched check, from the check's execution history."""

    id: int
    key: dg.AssetCheckKey
    run_id: str
    evaluation: dg.AssetCheckEvaluation


def _executions_since(instance: dg.DagsterInstance, key: dg.AssetCheckKey, seen: int) -> list:
    """Every execution of ``key`` newer than ``seen``, oldest first, paged back from the newest.

    The check's execution history lives in the instance's index, so this works on every event log storage; a
    cross-run event query with a cursor does not (SQLite shards the event log per run).
    """
    executions, before = [], None
    while True:
        page = instance.event_log_storage.get_asset_check_execution_history(key, limit=PAGE_SIZE, cursor=before)
        fresh = [execution for execution in page if execution.id > seen]
        executions += fresh
        if len(page) < PAGE_SIZE or len(fresh) < len(page):
            return sorted(executions, key=lambda execution: execution.id)
        before = page[-1].id


def _new_failures(instance: dg.DagsterInstance, watched: list[dg.AssetCheckKey], seen: dict[str, int]
                  ) -> list[Failure]:
    """Failed evaluations of the watched checks since the cursor, oldest first; ``seen`` moves past all read.

    Every evaluation since the last tick, however many: two days can be monitored between ticks, and the failure
    of the first must not hide behind a pass of the second. A check planned by a run still going holds the cursor
    before it, so its verdict is read when it comes; one planned by a finished run was skipped (no champion yet, a
    tables-only backfill) and is passed over.
    """
    finished: dict[str, bool] = {}

    def run_finished(run_id: str) -> bool:
        if run_id not in finished:
            run = instance.get_run_by_id(run_id)
            finished[run_id] = run is None or run.is_finished
        return finished[run_id]

    failures = []
    for key in watched:
        name = key.to_user_string()
        for execution in _executions_since(instance, key, seen.get(name, 0)):
            event = execution.event.dagster_event if execution.event else None
            evaluated = event is not None and event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
            if not evaluated and not run_finished(execution.run_id):
                break
            seen[name] = execution.id
            if evaluated and not event.event_specific_data.passed:
                failures.append(Failure(execution.id, key, execution.run_id, event.event_specific_data))
    return sorted(failures, key=lambda failure: failure.id)


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
