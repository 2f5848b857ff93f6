"""Batch scoring keeps the input table's types, so the daily predictions table keeps its schema day after day."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from mlops_platform.ml.packaging import Packaging, ServedModel
from mlops_platform.ml.scoring import PREDICTED_LABEL, PREDICTION, ScoredModel, score
from mlops_platform.settings import ModelConfig

CONFIG = ModelConfig(description="test", registered_name="m", task="classification", label="y",
                     gate={"roc_auc": {"min_value": 0.5}})


def test_an_integer_feature_with_a_missing_key_stays_an_integer_column():
    # Missing values reach the model as NaN, as they do the platform's gradient-boosting pipelines.
    model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(np.array([[0.0], [1.0], [5.0], [6.0]]),
                                                                       [0, 0, 1, 1])
    day = pa.table({"flight": pa.array([1, 2, 3], pa.int64()), "route_rows_7d": pa.array([6, None, 0], pa.int64())})

    served = ServedModel(model, Packaging("classification", ("route_rows_7d",), (), decision_threshold=0.7))
    scored = score(day, CONFIG, ["route_rows_7d"], served, ScoredModel("m", "3"))

    assert scored.schema.field("route_rows_7d").type == pa.int64()
    assert scored.column("route_rows_7d").to_pylist() == [6, None, 0]
    assert scored.column("model_version").to_pylist() == ["3", "3", "3"]
    probabilities = scored.column(PREDICTION).to_pylist()
    assert probabilities[0] > probabilities[2] and all(0 <= p <= 1 for p in probabilities[::2])
    # The label follows the threshold the model was logged with, not 0.5.
    assert scored.column(PREDICTED_LABEL).to_pylist() == [p >= 0.7 for p in probabilities]
    assert any(0.5 <= p < 0.7 for p in probabilities)
