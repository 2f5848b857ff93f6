"""How a trained pipeline becomes an MLflow model whose one pyfunc answers what batch scoring and serving answer.

A registered version holds one serialized pipeline (skops) under two flavors:

- ``sklearn``: the fitted pipeline itself, for ``mlflow.sklearn.load_model`` (diagnostics, the serving fast path);
- ``python_function``, loaded by this module: rows typed as in training (:func:`typed_features`), then per row
  ``{"probability": P(positive class), "label": the class at the model's decision threshold}`` for a classifier, the
  predicted value for a regressor. The signature's outputs say so, and the threshold travels with the model.

So ``mlflow models serve``, the platform's endpoint (``mlops_platform.serving``) and batch scoring
(``ml/scoring.py``) give the same numbers for the same row: all three run this pyfunc, or a scorer checked against
it. A version logged before this packaging (``python_function`` loaded by ``mlflow.sklearn``) is read as a
classifier with threshold 0.5 or a regressor, by its estimator.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

if TYPE_CHECKING:
    from mlflow.models import Model, ModelSignature
    from mlflow.models.model import ModelInfo
    from mlflow.types import Schema

# MLflow is imported by the functions that log, download or evaluate. Loading a model folder reads its MLmodel file
# and the skops file directly: the serving process and every batch step that only loads a model would otherwise
# spend seconds importing MLflow.

PROBABILITY = "probability"
LABEL = "label"
CLASSIFICATION = "classification"
REGRESSION = "regression"
DEFAULT_THRESHOLD = 0.5
_TASK = "task"
_THRESHOLD = "decision_threshold"
_POSITIVE = "positive_class"
_NEGATIVE = "negative_class"
_PYFUNC = "python_function"


def typed_features(frame: pd.DataFrame, categorical: Sequence[str], features: Sequence[str]) -> pd.DataFrame:
    """``features`` of ``frame`` typed as the pipeline learnt them: categorical as str (NaN when missing), the rest
    float64. The one typing rule of training, batch scoring and serving."""
    typed = {}
    wanted = set(categorical)
    for column in features:
        if column in wanted:
            # Kept as object even when every value is missing: a float column would meet string categories.
            typed[column] = frame[column].astype(object).map(
                lambda value: str(value) if pd.notna(value) else np.nan).astype(object)
        else:
            try:
                typed[column] = pd.to_numeric(frame[column]).astype("float64")
            except (TypeError, ValueError) as exc:
                raise TypeError(f"feature '{column}' is not numeric; list it under the model's 'categorical' "
                                "columns in the use case's configuration") from exc
    return pd.DataFrame(typed, index=frame.index)


@dataclass(frozen=True)
class Packaging:
    """What the pyfunc needs beside the pipeline: the task, its input columns and, for a classifier, the decision."""

    task: str
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    decision_threshold: float = DEFAULT_THRESHOLD
    positive_class: Any = 1
    negative_class: Any = 0

    @property
    def is_classifier(self) -> bool:
        return self.task == CLASSIFICATION

    def labels(self, probability: np.ndarray) -> np.ndarray:
        """The class of each probability at the decision threshold (at or above it: the positive class)."""
        return np.where(probability >= self.decision_threshold, self.positive_class, self.negative_class)

    def answer(self, values: np.ndarray) -> pd.DataFrame | np.ndarray:
        """The pyfunc's output from the positive-class probabilities (classifier) or the values (regressor)."""
        if self.is_classifier:
            return pd.DataFrame({PROBABILITY: values, LABEL: self.labels(values)})
        return values


def positive_index(pipeline: Any) -> int:
    """Where the positive class sits among a binary classifier's ``classes_``: scikit-learn's order puts it last."""
    classes = list(pipeline.classes_)
    if len(classes) != 2:
        raise ValueError(f"only binary classifiers are packaged; this one has classes {classes}")
    return 1


class ServedModel:
    """The pyfunc implementation: a fitted pipeline and its :class:`Packaging`."""

    def __init__(self, pipeline: Any, packaging: Packaging) -> None:
        self.pipeline = pipeline
        self.packaging = packaging
        self._positive = positive_index(pipeline) if packaging.is_classifier else None

    def raw(self, inputs: pd.DataFrame) -> np.ndarray:
        """The positive-class probability or the value per row of already typed ``inputs``."""
        if not len(inputs):
            return np.empty(0, dtype=np.float64)
        if self._positive is not None:
            return np.asarray(self.pipeline.predict_proba(inputs)[:, self._positive], dtype=np.float64)
        return np.asarray(self.pipeline.predict(inputs), dtype=np.float64)

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> pd.DataFrame | np.ndarray:
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        packaging = self.packaging
        return packaging.answer(self.raw(typed_features(frame, packaging.categorical, packaging.features)))


def output_schema(task: str, positive_class: Any) -> Schema:
    from mlflow.types import ColSpec, DataType, Schema

    if task == CLASSIFICATION:
        label_type = DataType.string if isinstance(positive_class, str) else DataType.long
        return Schema([ColSpec(DataType.double, PROBABILITY), ColSpec(label_type, LABEL)])
    return Schema([ColSpec(DataType.double)])


def save_model(path: str | Path, mlflow_model: Model | None = None, *, pipeline: Any, task: str,
               signature: ModelSignature, decision_threshold: float = DEFAULT_THRESHOLD, input_example: Any = None,
               pip_requirements: list[str] | None = None, skops_trusted_types: list[str] | None = None) -> None:
    """Write the model folder; the flavor-module entry point that ``Model.log`` calls (see :func:`log_model`)."""
    import mlflow
    from mlflow.models import Model, ModelSignature
    from mlflow.types import DataType

    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    inputs = signature.inputs
    features = tuple(inputs.input_names())
    categorical = tuple(spec.name for spec in inputs.inputs if spec.type == DataType.string)
    decision: dict[str, Any] = {}
    positive = None
    if task == CLASSIFICATION:
        index = positive_index(pipeline)
        positive, negative = (value.item() if isinstance(value, np.generic) else value
                              for value in (pipeline.classes_[index], pipeline.classes_[1 - index]))
        decision = {_THRESHOLD: float(decision_threshold), _POSITIVE: positive, _NEGATIVE: negative}
    mlflow.sklearn.save_model(
        pipeline, str(path), mlflow_model=mlflow_model,
        signature=ModelSignature(inputs=inputs, outputs=output_schema(task, positive)),
        input_example=input_example, pip_requirements=pip_requirements,
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS, skops_trusted_types=skops_trusted_types,
    )
    # mlflow.sklearn made the pipeline's own predict the pyfunc; this module answers instead, over the same file.
    conf = mlflow_model.flavors[_PYFUNC]
    conf.pop("predict_fn", None)
    conf.update({"loader_module": __name__, _TASK: task, "features": list(features),
                 "categorical": list(categorical), **decision})
    mlflow_model.save(str(Path(path) / "MLmodel"))


def log_model(pipeline: Any, *, task: str, signature: ModelSignature, registered_model_name: str | None = None,
              decision_threshold: float = DEFAULT_THRESHOLD, input_example: Any = None,
              pip_requirements: list[str] | None = None, skops_trusted_types: list[str] | None = None,
              name: str = "model") -> ModelInfo:
    """Log (and register) ``pipeline`` in the active run as this module's flavor; ``signature`` gives the inputs."""
    from mlflow.models import Model

    return Model.log(artifact_path=None, name=name, flavor=sys.modules[__name__], registered_model_name=registered_model_name,
                     pipeline=pipeline, task=task, signature=signature, decision_threshold=decision_threshold,
                     input_example=input_example, pip_requirements=pip_requirements,
                     skops_trusted_types=skops_trusted_types)


def packaging_of(model_dir: str | Path, pipeline: Any) -> Packaging:
    """The :class:`Packaging` a model folder records; for a version logged before it, what its estimator implies."""
    meta = _mlmodel(model_dir)
    conf = meta.get("flavors", {}).get(_PYFUNC, {})
    inputs = _input_columns(meta)
    features = tuple(conf.get("features") or (column["name"] for column in inputs))
    categorical = tuple(conf.get("categorical") or (column["name"] for column in inputs if column["type"] == "string"))
    if conf.get("loader_module") == __name__:
        if conf[_TASK] != CLASSIFICATION:
            return Packaging(conf[_TASK], features, categorical)
        return Packaging(CLASSIFICATION, features, categorical, float(conf[_THRESHOLD]), conf[_POSITIVE],
                         conf[_NEGATIVE])
    if hasattr(pipeline, "predict_proba") and hasattr(pipeline, "classes_"):
        index = positive_index(pipeline)
        return Packaging(CLASSIFICATION, features, categorical, DEFAULT_THRESHOLD,
                         pipeline.classes_[index].item(), pipeline.classes_[1 - index].item())
    return Packaging(REGRESSION, features, categorical)


def _mlmodel(model_dir: str | Path) -> dict[str, Any]:
    """The MLmodel file of a model folder, as the YAML MLflow wrote."""
    return yaml.safe_load((Path(model_dir) / "MLmodel").read_text()) or {}


def _input_columns(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The named input columns of the model's signature (``{"name", "type", ...}`` each), none without one."""
    raw = (meta.get("signature") or {}).get("inputs")
    return [column for column in json.loads(raw) if "name" in column] if raw else []


def local_model(model_uri: str | Path) -> Path:
    """A model's folder on this machine: the folder itself, or the download of a ``models:/`` or ``runs:/`` URI."""
    if Path(model_uri).is_dir():
        return Path(model_uri)
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(str(model_uri)))


def _load_pipeline(folder: Path) -> Any:
    """The fitted pipeline of a model folder: a skops file is read as ``mlflow.sklearn`` reads it, with the trusted
    types the folder lists, without importing MLflow; any other format, or loading forbidden by
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``, goes through ``mlflow.sklearn`` (which refuses or loads it)."""
    sklearn_conf = _mlmodel(folder).get("flavors", {}).get("sklearn", {})
    allowed = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").strip().lower() in ("true", "1")
    if sklearn_conf.get("serialization_format") == "skops" and allowed:
        import skops.io

        return skops.io.load(folder / sklearn_conf["pickled_model"], trusted=sklearn_conf.get("skops_trusted_types"))
    import mlflow

    return mlflow.sklearn.load_model(str(folder))


def load_served(model_uri: str | Path) -> ServedModel:
    """The pyfunc implementation of a model (a URI or a local folder), without MLflow's wrapper."""
    local = local_model(model_uri)
    pipeline = _load_pipeline(local)
    return ServedModel(pipeline, packaging_of(local, pipeline))


def _load_pyfunc(data_path: str) -> ServedModel:
    """MLflow's pyfunc entry point: ``data_path`` is the model folder (or a file in it)."""
    path = Path(data_path)
    return load_served(path if path.is_dir() else path.parent)


def evaluation_model(model_uri: str) -> Any:
    """The model as ``mlflow.models.evaluate`` must see it to compute a classifier's probability metrics.

    Evaluate reads probabilities only from a pyfunc loaded by ``mlflow.sklearn`` (it calls the raw estimator's
    ``predict_proba``), while this package's pyfunc answers probability and label in one frame. So a classifier is
    evaluated through a temporary ``mlflow.sklearn`` copy of the same pipeline, whose ``predict`` decides at the
    model's own threshold; older versions are evaluated as they are.
    """
    import mlflow
    from mlflow.models import Model, ModelSignature
    from sklearn.model_selection import FixedThresholdClassifier

    local = local_model(model_uri)
    meta = Model.load(str(local))
    if meta.flavors.get(_PYFUNC, {}).get("loader_module") != __name__:
        return model_uri
    served = load_served(local)
    estimator, packaging = served.pipeline, served.packaging
    if packaging.is_classifier:
        estimator = FixedThresholdClassifier(estimator, threshold=packaging.decision_threshold,
                                             pos_label=packaging.positive_class, response_method="predict_proba")
    with tempfile.TemporaryDirectory(prefix="evaluation-") as folder:
        # Read back at once by this process only, so the pickle never travels and no environment is ever built
        # from it: requirements given (none) spare MLflow inferring them by loading the model in a subprocess,
        # 43 of the 83 s the two gates of a retraining took (benchmarks/results/RETRAINING.md).
        copy = Path(folder) / "model"
        mlflow.sklearn.save_model(estimator, str(copy), signature=ModelSignature(inputs=meta.signature.inputs),
                                  serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                                  pip_requirements=[])
        return mlflow.pyfunc.load_model(str(copy))
