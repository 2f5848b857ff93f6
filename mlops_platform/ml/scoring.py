"""Batch scoring: a day's rows with their features, scored by the version the ``champion`` alias names now.

Rows go through the registered model's own pyfunc implementation (``ml/packaging.py``): typed exactly as in
training, the positive-class probability and the label at the model's decision threshold for a classifier, the value
for a regressor. The serving endpoint answers the same numbers for the same features. Each scored row records the
model name and version, so monitoring and audits know which model said what.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from mlops_platform.settings import ModelConfig

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from mlops_platform.ml.packaging import ServedModel

# MLflow and the model packaging are imported where a model is loaded: the definitions import this module, and
# loading them (a run's process, `dagster definitions validate`) must not pay for MLflow.

PREDICTION = "prediction"
PREDICTED_LABEL = "predicted_label"
# Models kept loaded per process: a champion and a challenger of two models. A registered version never changes, so
# a long replay or a warm run worker loads each version once instead of once per day and step.
MODELS_KEPT = 4


def feature_frame(frame: pd.DataFrame, config: ModelConfig, features: Sequence[str]) -> pd.DataFrame:
    """``features`` of ``frame`` typed as the pipeline expects: categorical as str (NaN when missing), else float."""
    from mlops_platform.ml.packaging import typed_features

    return typed_features(frame, config.categorical, features)


@dataclass(frozen=True)
class ScoredModel:
    name: str
    version: str


class _ModelCache:
    """The last ``MODELS_KEPT`` models loaded, by registry, name and version (least recently used goes first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._models: OrderedDict[tuple[str, str, str], ServedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, name: str, version: str) -> ServedModel:
        # The registry URI is part of the key: two stores (two tests, two environments) both have a version 1.
        import mlflow

        from mlops_platform.ml.packaging import load_served

        key = (mlflow.get_registry_uri(), name, version)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            model = load_served(f"models:/{name}/{version}")
            self.loads += 1
            self._models[key] = model
            while len(self._models) > self.size:
                self._models.popitem(last=False)
            return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODELS = _ModelCache(MODELS_KEPT)


def load_version(name: str, version: str | int) -> ServedModel:
    """The served model of a registered version, loaded once per process while it stays among the recent ones."""
    return MODELS.get(name, str(version))


def load_alias(client: MlflowClient, config: ModelConfig, alias: str) -> tuple[ServedModel, ScoredModel]:
    """The served model behind ``alias`` and the version it resolves to at this moment: the alias is asked for every
    time (a promotion moves it), the model behind the version comes from the process's cache."""
    version = str(client.get_model_version_by_alias(config.registered_name, alias).version)
    return load_version(config.registered_name, version), ScoredModel(config.registered_name, version)


def openmp_threads(limit: int):
    """Cap the OpenMP threads of the calling thread's fits and predictions at ``limit`` (a context manager): idle
    OpenMP threads spin, so on a busy machine two threads made a booster's fit or predict several times slower than
    one (``train_model`` says by how much). Training, the gate and batch scoring all go through here."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=limit, user_api="openmp")


def predict(model: ServedModel, features: pd.DataFrame, *, threads: int = 1) -> np.ndarray:
    """The positive-class probability or the value per row of already typed ``features``, on at most ``threads``
    OpenMP threads (see :func:`score`)."""
    with openmp_threads(threads):
        return model.raw(features)


def score(rows: pa.Table, config: ModelConfig, features: Sequence[str], model: ServedModel,
          scored: ScoredModel, *, threads: int = 1) -> pa.Table:
    """``rows`` with the prediction (probability of the positive class, or the value), model name and version; a
    classifier's rows also say whether the model's label is the positive class.

    The input columns keep their Arrow types: through pandas, an integer column with a null would come back as a
    float, and the predictions table would change its schema on the first day a key was missing.

    ``threads`` caps the booster's OpenMP threads, as training does: OpenMP threads spin while they wait, and on the
    shared 2-core machine a day's 1,000-row predict took 2.5-4.8 s on two threads (a third of the day) against
    milliseconds on one (``benchmarks/results/DAILY.md``).
    """
    values = predict(model, feature_frame(rows.to_pandas(), config, features), threads=threads)
    outputs = {PREDICTION: pa.array(values, pa.float64())}
    packaging = model.packaging
    if packaging.is_classifier:
        outputs[PREDICTED_LABEL] = pa.array(packaging.labels(values) == packaging.positive_class, pa.bool_())
    outputs["model_name"] = pa.array([scored.name] * rows.num_rows, pa.large_string())
    outputs["model_version"] = pa.array([scored.version] * rows.num_rows, pa.large_string())
    outputs["scored_at"] = pa.array([dt.datetime.now(dt.UTC)] * rows.num_rows, pa.timestamp("us", tz="UTC"))
    table = rows
    for name, column in outputs.items():
        table = table.append_column(name, column)
    return table
