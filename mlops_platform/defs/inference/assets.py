"""Batch inference: each day's flights scored by the current champion, one predictions table per model."""

import dagster as dg

from mlops_platform.defs.tables import BACKFILL_POLICY, daily_partitions, days_of_run, table_metadata
from mlops_platform.defs.training.assets import champion_key
from mlops_platform.features import build_scoring_rows, feature_columns
from mlops_platform.ml.gate import CHAMPION
from mlops_platform.ml.scoring import PREDICTION, load_alias, score
from mlops_platform.resources.engine import ComputeEngine
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.settings import ModelConfig, UseCaseConfig


def predictions_key(model_name: str) -> dg.AssetKey:
    return dg.AssetKey(["predictions", model_name])


def _predictions_asset(usecase: UseCaseConfig, model_name: str, config: ModelConfig) -> dg.AssetsDefinition:
    spec = usecase.training_set
    assert spec is not None
    gold = usecase.gold[spec.source]
    key = predictions_key(model_name)

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["gold", spec.source]), champion_key(model_name),
              *(dg.AssetKey(["features", lookup.table]) for lookup in spec.lookups)],
        description=f"{config.description} Batch predictions of the '{CHAMPION}' of {config.registered_name}: one "
                    f"row per gold {spec.source} row of the day ({', '.join(gold.keys)}), with the features it was "
                    "scored on, the prediction, and the model version that made it. Read by monitoring.",
        group_name="inference",
        kinds={"delta", "mlflow"},
        owners=usecase.owners,
        tags={"usecase": usecase.name},
        partitions_def=daily_partitions(usecase),
        backfill_policy=BACKFILL_POLICY,
        # The daily job scores every day; until a first champion exists there is nothing to score with, and the
        # asset (with monitoring after it) is skipped rather than failed.
        output_required=False,
    )
    def predictions(context: dg.AssetExecutionContext, warehouse: Warehouse, engine: ComputeEngine,
                    mlflow: MlflowTracking):
        if mlflow.alias_version(config.registered_name, CHAMPION) is None:
            context.log.info(f"{config.registered_name} has no '{CHAMPION}' yet: nothing scores these days")
            return
        days = days_of_run(context, gold.partition_column)
        rows = build_scoring_rows(usecase, engine.engine(), warehouse, days)
        model, scored = load_alias(mlflow.client(), config, CHAMPION)
        scored_rows = score(rows, config, feature_columns(usecase), model, scored)
        write = warehouse.replace_days("predictions", model_name, scored_rows, days)
        mean = sum(scored_rows.column(PREDICTION).to_pylist()) / max(1, scored_rows.num_rows)
        yield dg.MaterializeResult(metadata=table_metadata(
            write, scored_rows, model_version=scored.version, mean_prediction=float(mean),
        ))

    return predictions


def inference_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    return [_predictions_asset(usecase, name, config) for name, config in usecase.models.items()]
