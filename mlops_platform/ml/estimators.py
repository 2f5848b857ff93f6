"""The estimators a model may name (``settings.ESTIMATOR_TASKS``), each with the preparation its features need.

- Trees (``hist_gradient_boosting``, ``random_forest``) read categories as ordinal codes, with unknown and missing
  values both coded -1. Histogram gradient boosting splits on those codes as categories and handles missing numbers
  itself; a random forest gets missing numbers replaced by the training median.
- Linear models (``logistic_regression``, ``linear_regression``) read categories one-hot (a missing value is a
  category of its own, an unknown one sets no column) and numbers standardised, missing ones replaced by the median.

Each estimator brings a default search space, used when the model's configuration gives none, and the types skops
(MLflow's safe sklearn format) must trust to load the fitted pipeline back, reviewed once per estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlops_platform.settings import ESTIMATOR_TASKS, ModelConfig

MISSING_CATEGORY = "__missing__"
# Trees added without improving the validation loss before a tuning trial stops (scikit-learn's default).
EARLY_STOPPING_ROUNDS = 10

Space = dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Estimator:
    classifier: type | None
    regressor: type | None
    categories: Literal["ordinal", "one_hot"]
    default_space: Space = field(default_factory=dict)
    trusted_types: tuple[str, ...] = ()

    def estimator_class(self, task: str) -> type:
        chosen = self.classifier if task == "classification" else self.regressor
        assert chosen is not None, f"no {task} estimator (settings.ESTIMATOR_TASKS says which tasks exist)"
        return chosen


_HIST_GRADIENT_BOOSTING = ("functools.partial", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
                           "sklearn.utils.validation.check_array")
# What a fitted median imputer holds.
_IMPUTED = ("numpy.dtype",)

ESTIMATORS: dict[str, Estimator] = {
    "hist_gradient_boosting": Estimator(
        HistGradientBoostingClassifier, HistGradientBoostingRegressor, "ordinal",
        {"learning_rate": (0.02, 0.3), "max_leaf_nodes": (15, 63), "max_iter": (100, 300)},
        _HIST_GRADIENT_BOOSTING),
    "random_forest": Estimator(
        RandomForestClassifier, RandomForestRegressor, "ordinal",
        {"n_estimators": (50, 300), "max_depth": (4, 20), "min_samples_leaf": (1, 20)},
        (*_IMPUTED, "sklearn.tree._tree.Tree")),
    "logistic_regression": Estimator(LogisticRegression, None, "one_hot", {"C": (0.01, 10.0)}, _IMPUTED),
    "linear_regression": Estimator(None, LinearRegression, "one_hot", {}, _IMPUTED),
}
assert set(ESTIMATORS) == set(ESTIMATOR_TASKS), "settings.ESTIMATOR_TASKS and ml.estimators must name the same ones"


def estimator_of(config: ModelConfig) -> Estimator:
    return ESTIMATORS[config.estimator]


def estimator_class(config: ModelConfig) -> type:
    return estimator_of(config).estimator_class(config.task)


def configured_space(config: ModelConfig) -> Space:
    """The model's own search space, or its estimator's default when the configuration gives none."""
    return dict(config.tuning.space) or dict(estimator_of(config).default_space)


def build_pipeline(config: ModelConfig, features: Sequence[str], params: dict, seed: int) -> Pipeline:
    """The unfitted pipeline of ``config``'s estimator with ``params``: categorical columns first, then numeric."""
    spec = estimator_of(config)
    categorical = [column for column in features if column in config.categorical]
    numeric = [column for column in features if column not in config.categorical]
    kind = spec.estimator_class(config.task)
    if spec.categories == "ordinal":
        encode = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1,
                                dtype=np.float64)
        numbers = "passthrough" if kind in (HistGradientBoostingClassifier, HistGradientBoostingRegressor) else (
            SimpleImputer(strategy="median", keep_empty_features=True))
    else:
        encode = Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY, keep_empty_features=True)),
            ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)),
        ])
        numbers = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                            ("scale", StandardScaler())])
    prepare = ColumnTransformer([("categorical", encode, categorical), ("numeric", numbers, numeric)],
                                remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("prepare", prepare), ("model", kind(**_fixed(kind, len(categorical), seed), **params))])


def stops_early(config: ModelConfig) -> bool:
    """Whether ``config``'s estimator adds trees one at a time and can stop once the validation loss stalls."""
    return estimator_class(config) in (HistGradientBoostingClassifier, HistGradientBoostingRegressor)


def fit_stopping_early(pipeline: Pipeline, features: pd.DataFrame, label: pd.Series,
                       validation_features: pd.DataFrame, validation_label: pd.Series) -> int:
    """Fit a booster's ``pipeline`` on the training rows, adding trees until the loss on the validation rows has not
    improved for ``EARLY_STOPPING_ROUNDS`` in a row (or ``max_iter`` is reached); returns the trees it kept.

    The validation rows go through the preparation fitted on the training rows, as they would at scoring time.
    """
    prepare, model = pipeline[0], pipeline[-1]
    encoded = prepare.fit_transform(features, label)
    model.set_params(early_stopping=True, n_iter_no_change=EARLY_STOPPING_ROUNDS, scoring="loss")
    model.fit(encoded, label, X_val=prepare.transform(validation_features), y_val=validation_label)
    return int(model.n_iter_)


def _fixed(kind: type, categorical: int, seed: int) -> dict:
    """Arguments that are not tuned: reproducibility, one thread, and what each estimator needs to be correct."""
    if kind in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
        # Early stopping would carve its own random holdout out of the training rows: tuning trials turn it on
        # against the validation split instead (``fit_stopping_early``), and the refit takes the trees they kept.
        return {"categorical_features": list(range(categorical)), "early_stopping": False, "random_state": seed}
    if kind in (RandomForestClassifier, RandomForestRegressor):
        return {"random_state": seed, "n_jobs": 1}
    if kind is LogisticRegression:
        return {"max_iter": 2_000, "random_state": seed}
    return {}
