"""Train one model of a use case from its training set, tuned, evaluated and registered in MLflow.

The model is a scikit-learn Pipeline of the estimator the configuration names, its features prepared as that
estimator needs (``mlops_platform.ml.estimators``); a classification label becomes 0/1 by its positive class.

Hyperparameters are searched on the validation split (each trial a nested MLflow run); the best ones are refit on
train + validation and scored once on the test split. Everything is seeded and the rows are put in key order
first, so the same training-set version and seed reproduce the logged metrics exactly.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import polars as pl
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval

from mlops_platform.ml import packaging
from mlops_platform.ml.estimators import (
    build_pipeline,
    configured_space,
    estimator_class,
    estimator_of,
    fit_stopping_early,
    stops_early,
)
from mlops_platform.ml.model_data import TrainingLineage
from mlops_platform.ml.scoring import openmp_threads
from mlops_platform.ml.tuning import HyperoptTuner, OptunaTuner, Params, Trial, Tuner, TuningResult
from mlops_platform.names import SPLIT, SPLITS
from mlops_platform.settings import ModelConfig

if TYPE_CHECKING:
    import mlflow
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from mlflow.models import ModelSignature

# MLflow and matplotlib are imported inside the functions that log, so that a test or a benchmark that only fits
# does not pay for them.

# What the tuner minimises on the validation split, and the metric it reports for each trial.
OBJECTIVES = {"classification": "roc_auc", "regression": "root_mean_squared_error"}
PLOTS_DIR = "plots"
LINEAGE_FILE = "lineage.json"
INPUT_EXAMPLE_ROWS = 5
# Permutation importance costs one prediction per feature and repeat; these bound it on any table size.
IMPORTANCE_ROWS = 2_000
IMPORTANCE_REPEATS = 3
IMPORTANCE_SECONDS = 10.0
class ModelLogger(Protocol):
    """Logs and registers a fitted model another way than ``mlflow.sklearn.log_model`` (``ml/feature_lookups.py``);
    what it returns has the ``model_uri`` and ``registered_model_version`` of MLflow's ``ModelInfo``."""

    def log_model(self, model: Any, *, registered_model_name: str, run_id: str) -> Any: ...


@dataclass(frozen=True)
class TrainingOutcome:
    run_id: str
    experiment_id: str
    model_uri: str
    registered_name: str
    registered_version: str
    metrics: dict[str, float]
    best_params: Params
    trials: int
    rows: dict[str, int]
    feature_importance: dict[str, float]
    seconds: dict[str, float]


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def split(frame: pd.DataFrame, config: ModelConfig) -> Splits:
    unexpected = sorted(set(frame[SPLIT].unique()) - set(SPLITS))
    if unexpected:
        raise ValueError(f"column '{SPLIT}' holds unexpected values {unexpected}; expected {list(SPLITS)}")
    parts = {name: frame[frame[SPLIT] == name].reset_index(drop=True) for name in SPLITS}
    for name, part in parts.items():
        if part.empty:
            raise ValueError(f"the {name} split has no labelled rows: the training set window is too short")
        if config.task == "classification" and part[config.label].nunique() < 2:
            raise ValueError(f"the {name} split holds only one class of '{config.label}': ROC AUC is undefined")
    return Splits(**parts)


def search_space(config: ModelConfig) -> dict[str, tuple[float, float]]:
    """The tuning space (the model's, or its estimator's default) with integer bounds for integer parameters.

    The configuration parses every bound as a float (``[100, 300]`` arrives as ``(100.0, 300.0)``), so whether
    a parameter is an integer comes from the estimator's own declared constraints, not from how YAML spelled it.
    """
    estimator = estimator_class(config)
    constraints = estimator._parameter_constraints
    space: dict[str, tuple[float, float]] = {}
    for name, (low, high) in configured_space(config).items():
        if name not in constraints:
            raise ValueError(f"model '{config.registered_name}': '{name}' is not a hyperparameter of "
                             f"{estimator.__name__} (known: {sorted(constraints)})")
        kinds = {rule.type for rule in constraints[name] if isinstance(rule, Interval)}
        whole = float(low).is_integer() and float(high).is_integer()
        if kinds == {Integral} and not whole:
            raise ValueError(f"hyperparameter '{name}' takes integers; its bounds ({low}, {high}) are not")
        # A parameter taking counts or fractions (min_samples_leaf: 5 rows, or 0.05 of them) reads whole bounds as
        # counts.
        space[name] = (int(low), int(high)) if Integral in kinds and whole else (float(low), float(high))
    return space


def score(config: ModelConfig, pipeline: Pipeline, rows: pd.DataFrame, features: Sequence[str]) -> dict[str, float]:
    """Metrics named as ``mlflow.models.evaluate`` names them, so a gate threshold reads the same everywhere."""
    truth = rows[config.label].to_numpy()
    if config.task == "classification":
        probability = pipeline.predict_proba(rows[list(features)])[:, 1]
        predicted = (probability >= 0.5).astype(int)
        return {
            "roc_auc": roc_auc_score(truth, probability),
            "average_precision": average_precision_score(truth, probability),
            "log_loss": log_loss(truth, probability, labels=[0, 1]),
            "accuracy_score": accuracy_score(truth, predicted),
            "precision_score": precision_score(truth, predicted, zero_division=0),
            "recall_score": recall_score(truth, predicted, zero_division=0),
            "f1_score": f1_score(truth, predicted, zero_division=0),
        }
    predicted = pipeline.predict(rows[list(features)])
    return {
        "root_mean_squared_error": root_mean_squared_error(truth, predicted),
        "mean_absolute_error": mean_absolute_error(truth, predicted),
        "r2_score": r2_score(truth, predicted),
    }


def objective_loss(config: ModelConfig, metrics: Mapping[str, float]) -> float:
    value = metrics[OBJECTIVES[config.task]]
    return 1.0 - value if config.task == "classification" else value


def input_signature(config: ModelConfig, features: Sequence[str]) -> ModelSignature:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    # Declared rather than inferred from a sample: every feature may be missing at request time (a new route, a
    # weather gap), and a sample without a null would mark that column required.
    inputs = Schema([ColSpec("string" if column in config.categorical else "double", column, required=False)
                     for column in features])
    label = np.dtype("int64") if config.task == "classification" else np.dtype("float64")
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(label, (-1,))]))


def importance(config: ModelConfig, pipeline: Pipeline, rows: pd.DataFrame, features: Sequence[str],
               seed: int) -> dict[str, float]:
    """Permutation importance on a sample of held-out rows, shrunk so that it fits ``IMPORTANCE_SECONDS``.

    Shuffling a column before or after the row-wise encoding is the same permutation, so the booster is scored
    on the encoded sample directly instead of re-encoding strings for every feature and repeat.
    """
    prepare, model = pipeline[0], pipeline[-1]
    sample = rows.sample(n=min(len(rows), IMPORTANCE_ROWS), random_state=seed)
    encoded, truth = prepare.transform(sample[list(features)]), sample[config.label].to_numpy()
    started = time.perf_counter()
    model.predict(encoded)
    per_prediction = max(time.perf_counter() - started, 1e-6)
    affordable = IMPORTANCE_SECONDS / (per_prediction * (len(features) * IMPORTANCE_REPEATS + 1))
    if affordable < 1:
        keep = max(200, int(len(sample) * affordable))
        encoded, truth = encoded[:keep], truth[:keep]
    scoring = "roc_auc" if config.task == "classification" else "neg_root_mean_squared_error"
    result = permutation_importance(model, encoded, truth, scoring=scoring, n_repeats=IMPORTANCE_REPEATS,
                                    random_state=seed, n_jobs=1)
    names = prepare.get_feature_names_out()
    ranked = sorted(zip(names, result.importances_mean, strict=True), key=lambda item: -item[1])
    return {str(name): float(value) for name, value in ranked}


def _importance_figure(ranked: Mapping[str, float], top: int = 20) -> Figure:
    from matplotlib.figure import Figure

    names, values = list(ranked)[:top][::-1], list(ranked.values())[:top][::-1]
    figure = Figure(figsize=(7, max(3.0, 0.3 * len(names))), layout="constrained")
    axes = figure.subplots()
    axes.barh(names, values)
    axes.set_xlabel("drop in test score when the feature is shuffled")
    axes.set_title("Permutation importance (test sample)")
    return figure


def _figures(config: ModelConfig, pipeline: Pipeline, test: pd.DataFrame, features: Sequence[str],
             ranked: Mapping[str, float]) -> dict[str, Figure]:
    from matplotlib.figure import Figure

    truth = test[config.label].to_numpy()
    figures = {"feature_importance": _importance_figure(ranked)}
    if config.task == "classification":
        probability = pipeline.predict_proba(test[list(features)])[:, 1]
        for name, display in (("roc_curve", RocCurveDisplay), ("precision_recall_curve", PrecisionRecallDisplay)):
            figure = Figure(figsize=(6, 5), layout="constrained")
            display.from_predictions(truth, probability, ax=figure.subplots(), name=config.registered_name)
            figures[name] = figure
        figure = Figure(figsize=(5, 5), layout="constrained")
        ConfusionMatrixDisplay.from_predictions(truth, (probability >= 0.5).astype(int), ax=figure.subplots(),
                                                colorbar=False)
        figures["confusion_matrix"] = figure
        return figures
    predicted = pipeline.predict(test[list(features)])
    figure = Figure(figsize=(6, 5), layout="constrained")
    axes = figure.subplots()
    axes.scatter(predicted, truth - predicted, s=4, alpha=0.3)
    axes.axhline(0.0, color="black", linewidth=1)
    axes.set(xlabel=f"predicted {config.label}", ylabel="residual (actual - predicted)", title="Residuals")
    figures["residuals"] = figure
    figure = Figure(figsize=(6, 5), layout="constrained")
    axes = figure.subplots()
    axes.scatter(truth, predicted, s=4, alpha=0.3)
    low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="black", linewidth=1)
    axes.set(xlabel=f"actual {config.label}", ylabel=f"predicted {config.label}", title="Predicted vs actual")
    figures["predicted_vs_actual"] = figure
    return figures


def _dataset(rows: pd.DataFrame, config: ModelConfig, features: Sequence[str], lineage: TrainingLineage,
             part: str) -> mlflow.data.dataset.Dataset:
    import mlflow
    from mlflow.data.delta_dataset_source import DeltaDatasetSource

    # A Unity Catalog table's location is its name; a local one's is its folder.
    where = {"delta_table_name": lineage.table} if lineage.path == lineage.table else {"path": lineage.path}
    source = DeltaDatasetSource(**where, delta_table_version=lineage.version)
    # Logged through Polars: MLflow's pandas dataset infers string columns value by value and hashes every cell
    # (5.2 s per dataset for 109k rows), its Polars dataset reads the dtypes (0.13 s). Same source, same lineage.
    logged = pl.from_pandas(rows[[*features, config.label]])
    return mlflow.data.from_polars(logged, source=source, targets=config.label,
                                   name=f"{lineage.table}@v{lineage.version}/{part}")


def pip_requirements() -> list[str]:
    # Declared instead of inferred: MLflow infers them by loading the model in a subprocess, which took 40 of the
    # 56 seconds of log_model on a loaded machine. The pipeline needs nothing beyond these (MLflow adds itself).
    import mlflow

    return [*mlflow.sklearn.get_default_pip_requirements(include_skops=True),
            f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]


class _Stopwatch:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started = self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._last
        self.seconds["total"] = now - self._started
        self._last = now


def configured_tuner(config: ModelConfig) -> Tuner:
    tuning = config.tuning
    tuner = OptunaTuner if tuning.library == "optuna" else HyperoptTuner
    return tuner(parallel=tuning.parallel_trials)


def train_model(
    config: ModelConfig,
    frame: pd.DataFrame,
    features: Sequence[str],
    *,
    experiment_id: str,
    lineage: TrainingLineage,
    tuner: Tuner | None = None,
    run_name: str | None = None,
    threads: int = 1,
    model_logger: ModelLogger | None = None,
) -> TrainingOutcome:
    """Tune, refit, evaluate and register ``config``'s model on ``frame`` (the output of ``model_frame``).

    ``threads`` caps the booster's OpenMP threads per fit. One is the default because OpenMP threads spin while
    they wait: on a shared 4-core machine under load, a fit took 0.8 s on one thread and 6-9 s on two or four (on
    the 2-core one at load 12-17, 8-13 s on one, 135 s on two). The cores are used by fitting
    ``tuning.parallel_trials`` trials at a time instead.
    """
    with openmp_threads(threads):
        return _train(config, frame, list(features), experiment_id=experiment_id, lineage=lineage,
                      tuner=tuner or configured_tuner(config), run_name=run_name,
                      model_logger=model_logger, threads=threads)


@dataclass(frozen=True)
class _TrialFit:
    metrics: dict[str, float]
    trees: int | None


def _log_trials(client: MlflowClient, experiment_id: str, parent_run_id: str, config: ModelConfig,
                trials: Sequence[Trial], fits: Mapping[str, _TrialFit]) -> None:
    """Each trial as a nested run of the training run, written once tuning is over: one batch per trial instead of
    a run opened and logged call by call while the booster waits."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    now = int(time.time() * 1000)
    for trial in trials:
        fit = fits[_trial_key(trial.params)]
        run = client.create_run(experiment_id, start_time=now, run_name=f"trial-{trial.number:02d}", tags={
            MLFLOW_PARENT_RUN_ID: parent_run_id, "model": config.registered_name,
            "seconds.fit": f"{trial.seconds:.2f}"})
        params = {**trial.params, **({"trees_kept": fit.trees} if fit.trees is not None else {})}
        client.log_batch(run.info.run_id, params=[Param(name, str(value)) for name, value in params.items()],
                         metrics=[Metric(f"validation_{name}", float(value), now, 0)
                                  for name, value in fit.metrics.items()])
        client.set_terminated(run.info.run_id, end_time=now)


def _trial_key(params: Params) -> str:
    return json.dumps(params, sort_keys=True)


class _SpeculativeRefits:
    """The refit of the best trial so far, started on a spare thread while the search goes on.

    A refit depends on its trial's parameters alone, so the one started for the trial that ends up best is the refit
    made after tuning: when tuning ends, it is done or under way instead of not begun. A refit superseded before it
    started is dropped; one superseded while running finishes unused.
    """

    def __init__(self, refit: Callable[[Params], Pipeline]) -> None:
        self._refit = refit
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refit")
        self._lock = threading.Lock()
        self._best = float("inf")
        self._started: dict[str, Future[Pipeline]] = {}

    def offer(self, params: Params, loss: float) -> None:
        with self._lock:
            if loss >= self._best:
                return
            self._best = loss
            for superseded in self._started.values():
                superseded.cancel()
            self._started[_trial_key(params)] = self._pool.submit(self._refit, params)

    def result(self, params: Params) -> Pipeline:
        """The refit of ``params``: the one started for it, or one made now."""
        with self._lock:
            started = self._started.get(_trial_key(params))
            for key, other in self._started.items():
                if key != _trial_key(params):
                    other.cancel()
        self._pool.shutdown(wait=False)
        return started.result() if started is not None and not started.cancelled() else self._refit(params)


def _train(config: ModelConfig, frame: pd.DataFrame, features: list[str], *, experiment_id: str,
           lineage: TrainingLineage, tuner: Tuner, run_name: str | None,
           model_logger: ModelLogger | None = None, threads: int = 1) -> TrainingOutcome:
    import mlflow
    from mlflow import MlflowClient

    tuning = config.tuning
    space = search_space(config)
    splits = split(frame, config)
    rows = {name: len(getattr(splits, name)) for name in SPLITS}
    objective_metric = OBJECTIVES[config.task]
    stopping = tuning.early_stopping and stops_early(config)
    clock = _Stopwatch()

    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name or f"train-{config.registered_name}",
                          tags={"model": config.registered_name, "task": config.task, **lineage.tags()}) as run:
        mlflow.log_params({
            "task": config.task, "label": config.label, "features": len(features),
            "categorical": ",".join(c for c in features if c in config.categorical),
            "seed": tuning.seed, "max_trials": tuning.max_trials, "timeout_seconds": tuning.timeout_seconds,
            "parallel_trials": tuning.parallel_trials, "early_stopping": stopping,
            "search_space": json.dumps(space), **{f"rows_{name}": count for name, count in rows.items()},
        })
        fits: dict[str, _TrialFit] = {}
        refit_rows = pd.concat([splits.train, splits.validation], ignore_index=True)

        def refit(params: Params) -> Pipeline:
            # The refit on train + validation has no held-out rows to stop on: it grows the trees the trial kept.
            trees = fits[_trial_key(params)].trees
            grown = {**params, **({"max_iter": trees} if trees is not None else {})}
            with openmp_threads(threads):
                return build_pipeline(config, features, grown, tuning.seed).fit(refit_rows[features],
                                                                                refit_rows[config.label])

        # One at a time means one at a time: the refit waits for tuning to end, as it did before issue 16.
        refits = _SpeculativeRefits(refit) if tuning.parallel_trials > 1 else None

        def objective(params: Params) -> float:
            # Called from the tuner's threads: OpenMP limits are per thread, and nothing here touches MLflow's
            # per-thread active run.
            with openmp_threads(threads):
                pipeline = build_pipeline(config, features, params, tuning.seed)
                train_x, train_y = splits.train[features], splits.train[config.label]
                trees = None
                if stopping:
                    trees = fit_stopping_early(pipeline, train_x, train_y, splits.validation[features],
                                               splits.validation[config.label])
                else:
                    pipeline.fit(train_x, train_y)
                metrics = score(config, pipeline, splits.validation, features)
            fits[_trial_key(params)] = _TrialFit(metrics, trees)
            loss = objective_loss(config, metrics)
            if refits is not None:
                refits.offer(params, loss)
            return loss

        if space:
            result = tuner.minimize(objective, space, tuning.max_trials, tuning.timeout_seconds, tuning.seed)
        else:
            # Nothing to tune (a plain linear regression): one trial with the estimator's defaults.
            started = time.perf_counter()
            loss = objective({})
            result = TuningResult({}, (Trial(0, {}, loss, time.perf_counter() - started),))
        best = min(range(len(result.trials)), key=lambda i: result.trials[i].loss)
        best_fit = fits[_trial_key(result.trials[best].params)]
        clock.lap("tuning")
        _log_trials(MlflowClient(), experiment_id, run.info.run_id, config, result.trials, fits)
        clock.lap("log_trials")
        pipeline = refits.result(result.best_params) if refits is not None else refit(result.best_params)
        test_metrics = score(config, pipeline, splits.test, features)
        clock.lap("refit_and_test")
        metrics = {**{f"test_{name}": value for name, value in test_metrics.items()},
                   **{f"validation_{name}": value for name, value in best_fit.metrics.items()}}
        mlflow.log_params({**{f"best_{name}": value for name, value in result.best_params.items()},
                           **({"refit_max_iter": best_fit.trees} if best_fit.trees is not None else {})})
        mlflow.log_metrics(metrics)

        mlflow.log_input(_dataset(refit_rows, config, features, lineage, "train+validation"), context="training")
        mlflow.log_input(_dataset(splits.test, config, features, lineage, "test"), context="test")
        clock.lap("log_datasets")
        example = splits.test[features].head(INPUT_EXAMPLE_ROWS)
        if model_logger is not None:
            info = model_logger.log_model(pipeline, registered_model_name=config.registered_name,
                                          run_id=run.info.run_id)
        else:
            info = packaging.log_model(
                pipeline, task=config.task, registered_model_name=config.registered_name,
                signature=input_signature(config, features), decision_threshold=config.decision_threshold,
                input_example=example, skops_trusted_types=list(estimator_of(config).trusted_types),
                pip_requirements=pip_requirements(),
            )
        clock.lap("log_model")

        ranked = importance(config, pipeline, splits.test, features, tuning.seed)
        for name, figure in _figures(config, pipeline, splits.test, features, ranked).items():
            mlflow.log_figure(figure, f"{PLOTS_DIR}/{name}.png")
        mlflow.log_dict(ranked, "feature_importance.json")
        mlflow.log_dict({**lineage.as_dict(), "rows": rows, "features": features, "label": config.label},
                        LINEAGE_FILE)
        clock.lap("diagnostics")
        # Durations are tags, not metrics: metrics are what a retrain from the same data must reproduce.
        mlflow.set_tags({f"seconds.{name}": f"{value:.2f}" for name, value in clock.seconds.items()})

    version = str(info.registered_model_version)
    client = MlflowClient()
    client.update_model_version(config.registered_name, version, description=config.description)
    version_tags = {**lineage.tags(), f"test_{objective_metric}": f"{test_metrics[objective_metric]:.6f}"}
    for key, value in version_tags.items():
        client.set_model_version_tag(config.registered_name, version, key, value)
    return TrainingOutcome(
        run_id=run.info.run_id, experiment_id=experiment_id, model_uri=info.model_uri,
        registered_name=config.registered_name, registered_version=version, metrics=metrics,
        best_params=dict(result.best_params), trials=len(result.trials), rows=rows,
        feature_importance=ranked, seconds=clock.seconds,
    )
