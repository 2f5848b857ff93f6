"""The model registry: a gate on every new model version, and the promotion of those that pass.

``beats_champion`` evaluates the version a model asset just registered against the current ``champion`` on the
held-out test days of the same training-set version. A candidate that loses to a champion is a designed outcome,
not an error: the check records the verdict and both metrics with WARN severity, the gate-lost alert goes out, and
the promotion asset materializes "champion stays" without moving an alias, so the retraining run ends SUCCESSFUL
and reads right in the UI. A candidate that fails the floors with no champion to keep fails with ERROR: there is
nothing to serve. A gate that cannot evaluate raises, and the run fails.
"""

import dagster as dg

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.training.assets import read_training_set
from mlops_platform.features import feature_columns, row_keys
from mlops_platform.ml.gate import CHAMPION, evaluate_against_champion, promote
from mlops_platform.ml.model_data import held_out_frame
from mlops_platform.monitoring.alerts import PROMOTION, champion_moved_alert, gate_lost_alert
from mlops_platform.resources.alerts import AlertSinks
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.settings import ModelConfig, UseCaseConfig

BEATS_CHAMPION = "beats_champion"
CHAMPION_STAYS = "champion stays"
PROMOTED = "promoted"


def _latest_candidate(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> tuple[str, int]:
    """The model version and training-set version the model asset's latest materialization recorded."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} has never been materialized: there is no candidate to gate")
    metadata = event.asset_materialization.metadata
    return str(metadata["model_version"].value), int(metadata["training_set_version"].value)


def _describe(decision_metrics: dict[str, float], gate_metrics: list[str], prefix: str) -> dict[str, object]:
    return {f"{prefix}_{name}": dg.MetadataValue.float(decision_metrics[name])
            for name in gate_metrics if name in decision_metrics}


def _gate_check(usecase: UseCaseConfig, model_name: str, config: ModelConfig) -> dg.AssetChecksDefinition:
    key = stages.model_key(usecase, model_name)
    rules = "; ".join(f"{metric}: {rule.model_dump(exclude_none=True)}" for metric, rule in config.gate.items())

    @dg.asset_check(
        asset=key,
        name=BEATS_CHAMPION,
        blocking=True,
        description=f"The new version of {config.registered_name} meets its floors and beats the current "
                    f"'{CHAMPION}' on the same held-out test days ({rules}). On success it becomes 'challenger'.",
    )
    def beats_champion(context: dg.AssetCheckExecutionContext, warehouse: Warehouse,
                       mlflow: MlflowTracking, alerts: AlertSinks) -> dg.AssetCheckResult:
        version, training_set_version = _latest_candidate(context, key)
        table, _ = read_training_set(warehouse, usecase, training_set_version)
        rows = held_out_frame(table, config, feature_columns(usecase), row_keys(usecase))
        experiment_id = mlflow.experiment_id(names.experiment(usecase.name, model_name))
        decision = evaluate_against_champion(mlflow.client(), config, version, rows, experiment_id=experiment_id)
        gate_metrics = list(config.gate)
        if not decision.passed:
            alerts.send(gate_lost_alert(
                usecase.name, config.registered_name, decision.candidate_version, decision.champion_version,
                {m: decision.candidate_metrics[m] for m in gate_metrics if m in decision.candidate_metrics},
                {m: decision.champion_metrics[m] for m in gate_metrics if m in decision.champion_metrics},
                decision.failures), context.log)
        stays = not decision.passed and decision.champion_version is not None
        verdict = ("passed: now 'challenger'" if decision.passed else
                   f"{CHAMPION_STAYS} (v{decision.champion_version}): " if stays else "no champion: ")
        return dg.AssetCheckResult(
            passed=decision.passed,
            # Losing to a serving champion is an outcome, recorded as a warning; failing the floors with nothing
            # serving is an error that blocks the promotion and fails the run.
            severity=dg.AssetCheckSeverity.WARN if stays else dg.AssetCheckSeverity.ERROR,
            description=verdict if decision.passed else verdict + " ".join(decision.failures),
            metadata={
                "verdict": PROMOTED if decision.passed else CHAMPION_STAYS if stays else "no champion",
                "candidate_version": int(decision.candidate_version),
                "champion_version": int(decision.champion_version) if decision.champion_version else "none",
                **_describe(decision.candidate_metrics, gate_metrics, "candidate"),
                **_describe(decision.champion_metrics, gate_metrics, "champion"),
                "candidate_metrics": dg.MetadataValue.json(decision.candidate_metrics),
                "champion_metrics": dg.MetadataValue.json(decision.champion_metrics),
                "thresholds": dg.MetadataValue.json(decision.thresholds),
                "failures": dg.MetadataValue.json(list(decision.failures)),
                "held_out_rows": len(rows),
                "training_set_version": training_set_version,
                "evaluation_run": dg.MetadataValue.url(mlflow.run_url(experiment_id, decision.evaluation_run_id)),
            },
        )

    return beats_champion


def _lost_gate(context: dg.AssetExecutionContext, model: dg.AssetKey) -> dg.AssetCheckEvaluation | None:
    """This run's ``beats_champion`` evaluation when its candidate lost to a serving champion, else None."""
    record = context.instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(model, BEATS_CHAMPION))
    if record is None or record.run_id != context.run_id or record.evaluation is None:
        return None
    evaluation = record.evaluation
    verdict = evaluation.metadata.get("verdict")
    return evaluation if verdict is not None and verdict.value == CHAMPION_STAYS else None


def _champion_asset(usecase: UseCaseConfig, model_name: str, config: ModelConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=stages.champion_key(usecase, model_name),
        deps=[stages.model_key(usecase, model_name)],
        description=(
            f"The '{CHAMPION}' alias of {config.registered_name} in the MLflow registry: the one version serving "
            f"loads (models:/{config.registered_name}@{CHAMPION}). Materializing it promotes the 'challenger' that "
            f"passed {BEATS_CHAMPION}, records the version it replaces in the 'champion_history' tag (what "
            f"`mlops rollback` restores) and clears 'challenger'. Read by serving and monitoring."
        ),
        kinds={"mlflow"},
        **stages.placement(usecase, names.REGISTRY),
    )
    def champion(context: dg.AssetExecutionContext, mlflow: MlflowTracking,
                 alerts: AlertSinks) -> dg.MaterializeResult:
        lost = _lost_gate(context, stages.model_key(usecase, model_name))
        if lost is not None:
            champion_version = lost.metadata["champion_version"].value
            context.log.info(f"{config.registered_name}: {CHAMPION_STAYS} at v{champion_version} "
                             f"({lost.description})")
            return dg.MaterializeResult(metadata={
                "outcome": CHAMPION_STAYS,
                "champion_version": champion_version,
                "candidate_version": lost.metadata["candidate_version"].value,
                "verdict": lost.description or CHAMPION_STAYS,
                **{name: value for name, value in lost.metadata.items()
                   if name.startswith(("candidate_", "champion_")) and name not in ("champion_version",
                                                                                    "candidate_version")},
                "model_uri": f"models:/{config.registered_name}@{CHAMPION}",
            })
        move = promote(mlflow.client(), config.registered_name)
        context.log.info(f"{config.registered_name}: champion {move.previous or 'none'} -> {move.current}")
        alerts.send(champion_moved_alert(usecase.name, config.registered_name, PROMOTION, move.previous,
                                         move.current), context.log)
        return dg.MaterializeResult(metadata={
            "outcome": PROMOTED,
            "champion_version": int(move.current),
            "previous_champion": int(move.previous) if move.previous else "none",
            "champion_history": dg.MetadataValue.json([int(v) for v in move.history]),
            "model_uri": f"models:/{config.registered_name}@{CHAMPION}",
            "model_version": dg.MetadataValue.url(mlflow.model_version_url(config.registered_name, move.current)),
        })

    return champion


def registry_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    if usecase.training_set is None:
        return []
    return [
        definition
        for name, config in usecase.models.items()
        for definition in (_gate_check(usecase, name, config), _champion_asset(usecase, name, config))
    ]

