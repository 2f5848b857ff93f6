"""Batch inference: each day's flights scored by the current champion, one predictions table per model."""

import dagster as dg

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.tables import days_of_run, partitioning, table_metadata
from mlops_platform.features import build_scoring_rows, feature_columns
from mlops_platform.ml.gate import CHAMPION
from mlops_platform.ml.scoring import PREDICTION, load_alias, score
from mlops_platform.resources.engine import ComputeEngine
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.settings import ModelConfig, UseCaseConfig


def _predictions_asset(usecase: UseCaseConfig, model_name: str, config: ModelConfig) -> dg.AssetsDefinition:
    spec = usecase.training_set
    assert spec is not None
    gold = usecase.gold[spec.source]
    key = stages.predictions_key(usecase, model_name)
    table = names.predictions_table(usecase.name, model_name)
    grain = f"row of the day ({', '.join(gold.keys)})" if gold.is_daily else f"row ({', '.join(gold.keys)})"

    @dg.asset(
        key=key,
        deps=[stages.table_key(usecase, names.GOLD, spec.source), stages.champion_key(usecase, model_name),
              *(stages.feature_key(usecase, lookup.table) for lookup in spec.lookups)],
        description=f"{config.description} Batch predictions of the '{CHAMPION}' of {config.registered_name}: one "
                    f"row per gold {spec.source} {grain}, with the features it was scored on, the prediction, and "
                    "the model version that made it. Read by monitoring.",
        kinds={"delta", "mlflow"},
        **stages.placement(usecase, names.PREDICTIONS),
        **partitioning(usecase, gold.is_daily),
        # The daily job scores every day; until a first champion exists there is nothing to score with, and the
        # asset (with monitoring after it) is skipped rather than failed.
        output_required=False,
    )
    def predictions(context: dg.AssetExecutionContext, warehouse: Warehouse, engine: ComputeEngine,
                    mlflow: MlflowTracking):
        if mlflow.alias_version(config.registered_name, CHAMPION) is None:
            context.log.info(f"{config.registered_name} has no '{CHAMPION}' yet: nothing scores these days")
            return
        days = days_of_run(context, gold.partition_column) if gold.is_daily else None
        rows = build_scoring_rows(usecase, engine.engine(), warehouse, days)
        model, scored = load_alias(mlflow.client(), config, CHAMPION)
        scored_rows = score(rows, config, feature_columns(usecase), model, scored)
        write = (warehouse.replace_days(*table, scored_rows, days) if days
                 else warehouse.overwrite(*table, scored_rows))
        mean = sum(scored_rows.column(PREDICTION).to_pylist()) / max(1, scored_rows.num_rows)
        yield dg.MaterializeResult(metadata=table_metadata(
            write, scored_rows, model_version=scored.version, mean_prediction=float(mean),
        ))

    return predictions


def inference_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    return [_predictions_asset(usecase, name, config) for name, config in usecase.models.items()]
