"""Models: one asset per model of a use case, trained from the training-set table and registered in MLflow."""

import json

import dagster as dg

from mlops_platform.defs.serving.keys import serving_keys
from mlops_platform.features import feature_columns
from mlops_platform.ml.training import TrainingLineage, model_frame, train_model
from mlops_platform.resources.feature_engineering import feature_lookup_logger
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.settings import ModelConfig, UseCaseConfig

TRAINING_SCHEMA = "training"
MODELS_GROUP = "training"


def training_set_key(usecase: UseCaseConfig) -> dg.AssetKey:
    return dg.AssetKey([TRAINING_SCHEMA, usecase.name])


def model_key(model_name: str) -> dg.AssetKey:
    return dg.AssetKey(["models", model_name])


def champion_key(model_name: str) -> dg.AssetKey:
    return dg.AssetKey(["registry", f"{model_name}_champion"])


def experiment_name(usecase: UseCaseConfig, model_name: str) -> str:
    return f"/{usecase.name}/{model_name}"


def sort_keys(usecase: UseCaseConfig) -> list[str]:
    """The training set's primary key: the order rows are trained in, whatever order Delta returns them."""
    assert usecase.training_set is not None
    gold = usecase.gold[usecase.training_set.source]
    return list(dict.fromkeys([gold.partition_column, *gold.keys]))


def recorded_input_versions(warehouse: Warehouse, usecase: UseCaseConfig, version: int,
                            context: dg.AssetExecutionContext | None = None) -> dict[str, int]:
    """The input table versions a training-set version was built from.

    The training-set asset writes them into the Delta commit itself, which ties them to exactly this version; a
    table written without them falls back to the asset's latest materialization if that recorded this version.
    """
    for commit in warehouse.history(TRAINING_SCHEMA, usecase.name):
        if commit.version == version and "input_versions" in commit.metadata:
            return {name: int(v) for name, v in json.loads(commit.metadata["input_versions"]).items()}
    if context is not None:
        event = context.instance.get_latest_materialization_event(training_set_key(usecase))
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        recorded = metadata.get("delta_version")
        if recorded is not None and recorded.value == version and "input_versions" in metadata:
            return {name: int(v) for name, v in metadata["input_versions"].value.items()}
        context.log.warning(f"training set version {version} recorded no input versions: lineage stops there")
    return {}


def read_training_set(warehouse: Warehouse, usecase: UseCaseConfig, version: int | None = None):
    """The training-set table at ``version`` (default: the current one) and the version actually read."""
    current = warehouse.version(TRAINING_SCHEMA, usecase.name)
    if current is None:
        raise FileNotFoundError(f"table {warehouse.full_name(TRAINING_SCHEMA, usecase.name)} does not exist: "
                                f"materialize {training_set_key(usecase).to_user_string()} first")
    version = current if version is None else version
    return warehouse.read(TRAINING_SCHEMA, usecase.name, version=version), version


def _model_asset(usecase: UseCaseConfig, model_name: str, config: ModelConfig) -> dg.AssetsDefinition:
    source = training_set_key(usecase)
    kind = "binary classifier" if config.task == "classification" else "regressor"

    @dg.asset(
        key=model_key(model_name),
        deps=[source],
        description=(
            f"{config.description} A scikit-learn histogram gradient-boosting {kind} of '{config.label}', one "
            f"prediction per row of the {source.to_user_string()} grain, from the request fields and looked-up "
            f"features. Tuned on the validation days ({config.tuning.max_trials} trials), refit on train + "
            f"validation, scored on the test days and registered in MLflow as '{config.registered_name}'. Read by "
            f"the beats_champion gate, the promotion to champion, serving and monitoring."
        ),
        group_name=MODELS_GROUP,
        kinds={"mlflow", "scikit-learn"},
        owners=usecase.owners,
        tags={"usecase": usecase.name},
        metadata={"registered_model": config.registered_name, "task": config.task, "label": config.label},
    )
    def model(context: dg.AssetExecutionContext, warehouse: Warehouse, mlflow: MlflowTracking
              ) -> dg.MaterializeResult:
        table, version = read_training_set(warehouse, usecase)
        features = feature_columns(usecase)
        lineage = TrainingLineage(
            table=warehouse.full_name(TRAINING_SCHEMA, usecase.name),
            path=warehouse.location(TRAINING_SCHEMA, usecase.name), version=version,
            input_versions=recorded_input_versions(warehouse, usecase, version, context),
            dagster_run_id=context.run_id,
        )
        experiment_id = mlflow.experiment_id(experiment_name(usecase, model_name))
        outcome = train_model(config, model_frame(table, config, features, sort_keys(usecase)), features,
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


def training_job_name(usecase: UseCaseConfig) -> str:
    return f"{usecase.name}_training"


def training_job(usecase: UseCaseConfig) -> "dg.UnresolvedAssetJobDefinition":
    """Training set -> every model -> its gate -> its promotion -> online store -> staging endpoint -> smoke test
    -> production endpoint, in one run."""
    keys = [training_set_key(usecase), *(model_key(name) for name in usecase.models),
            *(champion_key(name) for name in usecase.models), *serving_keys(usecase)]
    return dg.define_asset_job(
        training_job_name(usecase),
        selection=dg.AssetSelection.assets(*keys),
        description=f"Rebuild the {usecase.name} training set, train and register every model, gate each against "
                    "its champion (beats_champion) and promote the ones that pass, then redeploy the serving "
                    "endpoints: staging, its smoke_test, production.",
    )
