"""Compiled scorers against the pipelines they replace, on rows the compiler's own probes never saw.

Each pipeline is saved as a real MLflow model folder and loaded through ``load_scorer``, as the server does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow.sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)

from mlops_platform.serving.scoring import load_scorer

pytestmark = pytest.mark.timeout(120)

COLUMNS = ["distance", "dep_hour", "carrier", "origin", "temp"]
NUMERIC = ["distance", "dep_hour", "temp"]


def frame(seed: int, rows: int, *, unseen: bool = False, missing: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    carriers = ["AA", "B6", "DL", "UA"] + (["ZZ"] if unseen else [])
    data = pd.DataFrame({
        "distance": rng.uniform(100, 2500, rows),
        "dep_hour": rng.integers(5, 23, rows),
        "carrier": rng.choice(carriers, rows),
        "origin": rng.choice(["EWR", "JFK", "LGA"], rows),
        "temp": rng.normal(55, 15, rows),
    })
    if missing:
        data.loc[rng.random(rows) < 0.2, "temp"] = np.nan
    return data


def target(data: pd.DataFrame, classes: int = 2) -> np.ndarray:
    """Class labels (``classes`` of them) or, with ``classes=0``, a continuous target."""
    carrier_effect = data.carrier.map({"AA": 0.3, "B6": 0.8, "DL": -0.5, "UA": 0.1}).fillna(0)
    score = (data.dep_hour - 14) / 5 + carrier_effect
    if classes == 0:
        return (score + data.distance / 1000).to_numpy()
    return np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))


def linear_classifier() -> Pipeline:
    return Pipeline([
        ("columns", ColumnTransformer([
            ("numeric", StandardScaler(), NUMERIC),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["carrier", "origin"]),
        ])),
        ("classifier", LogisticRegression(max_iter=500)),
    ])


def imputing_regressor() -> Pipeline:
    return Pipeline([
        ("columns", ColumnTransformer([
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
             ["temp", "distance"]),
            ("codes", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["carrier"]),
            ("unused", "drop", ["origin"]),
        ], remainder="passthrough")),
        ("scale", MinMaxScaler()),
        ("regressor", Ridge(alpha=0.5)),
    ])


def forest() -> Pipeline:
    return Pipeline([
        ("columns", ColumnTransformer([
            ("numeric", MinMaxScaler(), NUMERIC),
            ("categorical", OneHotEncoder(drop="first", handle_unknown="ignore"), ["carrier", "origin"]),
        ], sparse_threshold=0.0)),
        ("classifier", RandomForestClassifier(n_estimators=10, random_state=0)),
    ])


def custom_step() -> Pipeline:
    return Pipeline([
        ("log", ColumnTransformer([
            ("numeric", FunctionTransformer(np.log1p), ["distance"]),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["carrier"]),
        ])),
        ("classifier", LogisticRegression(max_iter=500)),
    ])


def strict_encoder() -> Pipeline:
    return Pipeline([
        ("columns", ColumnTransformer([
            ("numeric", StandardScaler(), NUMERIC),
            ("categorical", OneHotEncoder(handle_unknown="error"), ["carrier", "origin"]),
        ])),
        ("classifier", LogisticRegression(max_iter=500)),
    ])


def save(pipeline: Pipeline, path: Path, method: str) -> Path:
    # MLflow 3 stores sklearn models with skops, which loads numpy dtypes (OrdinalEncoder) and tree node
    # arrays only when told to trust them; these files are our own. Naming the requirements skips their
    # inference, a subprocess that reloads the model.
    mlflow.sklearn.save_model(pipeline, str(path), pyfunc_predict_fn=method,
                              skops_trusted_types=["numpy.dtype", "sklearn.tree._tree.Tree"],
                              pip_requirements=["scikit-learn"])
    return path


def rows_of(data: pd.DataFrame) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in data[COLUMNS].astype(object).itertuples(index=False)]


@pytest.mark.parametrize(("build", "method", "classes", "missing"), [
    (linear_classifier, "predict", 2, False),
    (linear_classifier, "predict_proba", 2, False),
    (linear_classifier, "predict_proba", 3, False),
    (imputing_regressor, "predict", 0, True),
    (forest, "predict_proba", 2, False),
])
def test_compiled_scorer_gives_the_pipelines_answers(
    tmp_path: Path, build: Any, method: str, classes: int, missing: bool
) -> None:
    train = frame(0, 400, missing=missing)
    pipeline = build().fit(train[COLUMNS], target(train, classes))
    scorer = load_scorer(save(pipeline, tmp_path / "model", method), COLUMNS)
    assert scorer.path == "compiled", scorer.detail

    fresh = frame(1, 300, unseen=True, missing=missing)
    expected = getattr(pipeline, method)(fresh[COLUMNS])
    got = np.asarray(scorer(rows_of(fresh)))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    single = np.asarray(scorer(rows_of(fresh.head(1))))
    np.testing.assert_allclose(single, expected[:1], rtol=1e-9, atol=1e-12)


def test_unknown_steps_are_served_through_the_pipeline(tmp_path: Path) -> None:
    train = frame(0, 300)
    pipeline = custom_step().fit(train[COLUMNS], target(train))
    scorer = load_scorer(save(pipeline, tmp_path / "model", "predict_proba"), COLUMNS)
    assert scorer.path == "dataframe"
    assert "FunctionTransformer" in scorer.detail
    fresh = frame(2, 50)
    np.testing.assert_allclose(scorer(rows_of(fresh)), pipeline.predict_proba(fresh[COLUMNS]))


def test_compiled_scorer_refuses_what_the_pipeline_refuses(tmp_path: Path) -> None:
    train = frame(0, 300)
    pipeline = strict_encoder().fit(train[COLUMNS], target(train))
    scorer = load_scorer(save(pipeline, tmp_path / "model", "predict"), COLUMNS)
    assert scorer.path == "compiled", scorer.detail
    unseen = rows_of(frame(3, 1, unseen=True).assign(carrier="ZZ"))
    with pytest.raises(ValueError, match="ZZ"):
        pipeline.predict(pd.DataFrame(unseen, columns=COLUMNS))
    with pytest.raises(ValueError, match="ZZ"):
        scorer(unseen)
    missing_temp = [(1000.0, 12, "AA", "JFK", None)]
    with pytest.raises(ValueError):
        pipeline.predict(pd.DataFrame(missing_temp, columns=COLUMNS))
    with pytest.raises(ValueError, match="NaN"):
        scorer(missing_temp)


def test_feature_order_of_the_endpoint_may_differ_from_training(tmp_path: Path) -> None:
    train = frame(0, 300)
    pipeline = linear_classifier().fit(train[COLUMNS], target(train))
    shuffled = ["temp", "origin", "carrier", "distance", "dep_hour"]
    scorer = load_scorer(save(pipeline, tmp_path / "model", "predict_proba"), shuffled)
    assert scorer.path == "compiled"
    fresh = frame(4, 20)
    rows = [tuple(row) for row in fresh[shuffled].astype(object).itertuples(index=False)]
    np.testing.assert_allclose(scorer(rows), pipeline.predict_proba(fresh[COLUMNS]), rtol=1e-9)


def test_compilation_can_be_turned_off(tmp_path: Path) -> None:
    train = frame(0, 300)
    pipeline = linear_classifier().fit(train[COLUMNS], target(train))
    scorer = load_scorer(save(pipeline, tmp_path / "model", "predict"), COLUMNS, compile_models=False)
    assert scorer.path == "dataframe"
    fresh = frame(5, 10)
    assert scorer(rows_of(fresh)) == pipeline.predict(fresh[COLUMNS]).tolist()
