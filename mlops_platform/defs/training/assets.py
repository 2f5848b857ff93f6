"""Models: one asset per model of a use case, trained from the training-set table and registered in MLflow."""

import json

import dagster as dg

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.features import feature_columns, row_keys
from mlops_platform.ml.model_data import TrainingLineage, model_frame
from mlops_platform.resources.feature_engineering import feature_lookup_logger
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.settings import ModelConfig, UseCaseConfig


def recorded_input_versions(warehouse: Warehouse, usecase: UseCaseConfig, version: int,
                            context: dg.AssetExecutionContext | None = None) -> dict[str, int]:
    """The input table versions a training-set version was built from.

    The training-set asset writes them into the Delta commit itself, which ties them to exactly this version; a
    table written without them falls back to the asset's latest materialization if that recorded this version.
    """
    for commit in warehouse.history(*names.training_set_table(usecase.name)):
        if commit.version == version and "input_versions" in commit.metadata:
            return {name: int(v) for name, v in json.loads(commit.metadata["input_versions"]).items()}
    if context is not None:
        event = context.instance.get_latest_materialization_event(stages.training_set_key(usecase))
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        recorded = metadata.get("delta_version")
        if recorded is not None and recorded.value == version and "input_versions" in metadata:
            return {name: int(v) for name, v in metadata["input_versions"].value.items()}
        context.log.warning(f"training set version {version} recorded no input versions: lineage stops there")
    return {}


def read_training_set(warehouse: Warehouse, usecase: UseCaseConfig, version: int | None = None):
    """The training-set table at ``version`` (default: the current one) and the version actually read."""
    table = names.training_set_table(usecase.name)
    current = warehouse.version(*table)
    if current is None:
        raise FileNotFoundError(f"table {warehouse.full_name(*table)} does not exist: "
                                f"materialize {stages.training_set_key(usecase).to_user_string()} first")
    version = current if version is None else version
    return warehouse.read(*table, version=version), version


def _model_asset(usecase: UseCaseConfig, model_name: str, config: ModelConfig) -> dg.AssetsDefinition:
    source = stages.training_set_key(usecase)
    table = names.training_set_table(usecase.name)
    kind = "binary classifier" if config.task == "classification" else "regressor"
    estimator = config.estimator.replace("_", " ")

    @dg.asset(
        key=stages.model_key(usecase, model_name),
        deps=[source],
        description=(
            f"{config.description} A scikit-learn {estimator} {kind} of '{config.label}', one "
            f"prediction per row of the {source.to_user_string()} grain, from the request fields and looked-up "
            f"features. Tuned on the validation split ({config.tuning.max_trials} trials), refit on train + "
            f"validation, scored on the test split and registered in MLflow as '{config.registered_name}'. Read by "
            f"the beats_champion gate, the promotion to champion, serving and monitoring."
        ),
        kinds={"mlflow", "scikit-learn"},
        **stages.placement(usecase, names.MODELS),
        metadata={"registered_model": config.registered_name, "task": config.task, "label": config.label,
                  "estimator": config.estimator},
    )
    def model(context: dg.AssetExecutionContext, warehouse: Warehouse, mlflow: MlflowTracking
              ) -> dg.MaterializeResult:
        rows, version = read_training_set(warehouse, usecase)
        features = feature_columns(usecase)
        lineage = TrainingLineage(
            table=warehouse.full_name(*table), path=warehouse.location(*table), version=version,
            input_versions=recorded_input_versions(warehouse, usecase, version, context),
            dagster_run_id=context.run_id,
        )
        # Imported here: scikit-learn would cost every process that loads the definitions a second.
        from mlops_platform.ml.training import train_model

        experiment_id = mlflow.experiment_id(names.experiment(usecase.name, model_name))
        outcome = train_model(config, model_frame(rows, config, features, row_keys(usecase)), features,
                              experiment_id=experiment_id, lineage=lineage,
                              model_logger=feature_lookup_logger(usecase, config, warehouse, mlflow, lineage))
        context.log.info(f"registered {outcome.registered_name} version {outcome.registered_version} "
                         f"after {outcome.trials} trials in {outcome.seconds['total']:.1f} s")
        top = list(outcome.feature_importance.items())[:10]
        return dg.MaterializeResult(metadata={
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(experiment_id, outcome.run_id)),
            "mlflow_run_id": outcome.run_id,
            "registered_model": outcome.registered_name,
            "model_version": int(outcome.registered_version),
            "model_uri": f"models:/{outcome.registered_name}/{outcome.registered_version}",
            **{name: dg.MetadataValue.float(value) for name, value in outcome.metrics.items()},
            "best_params": dg.MetadataValue.json(outcome.best_params),
            "trials": outcome.trials,
            "rows_per_split": dg.MetadataValue.json(outcome.rows),
            "training_set_version": version,
            "input_versions": dg.MetadataValue.json(dict(lineage.input_versions)),
            "top_features": dg.MetadataValue.md("\n".join(f"- {name}: {value:.4f}" for name, value in top)),
            "training_seconds": dg.MetadataValue.float(round(outcome.seconds["total"], 2)),
        })

    return model


def training_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    if usecase.training_set is None:
        return []
    return [_model_asset(usecase, name, config) for name, config in usecase.models.items()]
