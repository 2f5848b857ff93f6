"""Batch scoring: a day's rows with their features, scored by the version the ``champion`` alias names now.

Rows are typed exactly as in training (``feature_frame``), so the champion sees what it learnt from; each scored
row records the model name and version, so monitoring and audits know which model said what.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow import MlflowClient

from mlops_platform.settings import ModelConfig

PREDICTION = "prediction"
PREDICTED_LABEL = "predicted_label"


def feature_frame(frame: pd.DataFrame, config: ModelConfig, features: Sequence[str]) -> pd.DataFrame:
    """``features`` of ``frame`` typed as the pipeline expects: categorical as str (NaN when missing), else float."""
    typed = {}
    for column in features:
        if column in config.categorical:
            typed[column] = frame[column].astype(object).map(lambda value: str(value) if pd.notna(value) else np.nan)
        else:
            try:
                typed[column] = pd.to_numeric(frame[column]).astype("float64")
            except (TypeError, ValueError) as exc:
                raise TypeError(f"feature '{column}' is not numeric; list it under the model's 'categorical' "
                                "columns in the use case's configuration") from exc
    return pd.DataFrame(typed, index=frame.index)


@dataclass(frozen=True)
class ScoredModel:
    name: str
    version: str


def load_alias(client: MlflowClient, config: ModelConfig, alias: str):
    """The scikit-learn pipeline behind ``alias`` and the version it resolves to at this moment."""
    version = client.get_model_version_by_alias(config.registered_name, alias)
    model = mlflow.sklearn.load_model(f"models:/{config.registered_name}/{version.version}")
    return model, ScoredModel(config.registered_name, str(version.version))


def score(rows: pa.Table, config: ModelConfig, features: Sequence[str], model, scored: ScoredModel) -> pa.Table:
    """``rows`` with the prediction (probability of the positive class, or the value), model name and version.

    The input columns keep their Arrow types: through pandas, an integer column with a null would come back as a
    float, and the predictions table would change its schema on the first day a key was missing.
    """
    inputs = feature_frame(rows.to_pandas(), config, features)
    if config.task == "classification":
        probability = model.predict_proba(inputs)[:, 1] if len(inputs) else np.array([], dtype="float64")
        outputs = {PREDICTION: pa.array(probability, pa.float64()), PREDICTED_LABEL: pa.array(probability >= 0.5)}
    else:
        values = model.predict(inputs) if len(inputs) else np.array([], dtype="float64")
        outputs = {PREDICTION: pa.array(values, pa.float64())}
    outputs["model_name"] = pa.array([scored.name] * rows.num_rows, pa.large_string())
    outputs["model_version"] = pa.array([scored.version] * rows.num_rows, pa.large_string())
    outputs["scored_at"] = pa.array([dt.datetime.now(dt.UTC)] * rows.num_rows, pa.timestamp("us", tz="UTC"))
    table = rows
    for name, column in outputs.items():
        table = table.append_column(name, column)
    return table
