"""Scorers: a model version turned, once at load time, into a function from feature rows to its answers.

The answers are the registered model's own pyfunc answers (``ml/packaging.py``): the positive-class probability and
the label at the model's decision threshold for a classifier, the value for a regressor. The pyfunc itself, on a
DataFrame of the rows, is the reference scorer and serves any model.

One row through the pipeline on a DataFrame costs milliseconds, almost all of it input validation and column
bookkeeping around a few microseconds of arithmetic (6-11 ms for the flights champion on this machine). So the
pipelines the platform trains (a ColumnTransformer of ordinal encoders with a missing-value category,
pass-through or median-imputed numbers, then histogram gradient boosting or a random forest) are compiled: each
input column becomes one dictionary lookup or float conversion into a numpy matrix, and the fitted trees are
called on that matrix directly, in the estimator's own order, so the sums are the same floating-point operations.
A compiled scorer is used only after it gave bit-identical answers to the reference on probe rows (store values,
fallbacks, every fitted category, unseen categories, nulls); anything else keeps the reference, which is always
right, only slower.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_platform.ml.packaging import PROBABILITY, Packaging, ServedModel, load_served, typed_features

Rows = Sequence[Sequence[Any]]
Column = Callable[[Rows], list[float]]

PROBE_ROWS = 96
_DEFAULT_NUMBERS: list[Any] = [0.0, 1.0, -2.5, 7.0, 1000.0, None]
_UNSEEN = "__unseen_category__"


class Unsupported(Exception):
    """The model holds a part the compiler does not reproduce exactly; the reference scorer serves it."""


@dataclass(frozen=True)
class Scorer:
    """Feature rows (tuples in the endpoint's ``feature_columns`` order) in, one answer per row out."""

    values: Callable[[Rows], np.ndarray]
    packaging: Packaging
    path: str
    detail: str = ""
    # Whether rows of several requests may share one call: true where each row's answer is computed alone.
    batchable: bool = False

    def answers(self, values: np.ndarray) -> list[Any]:
        """JSON-ready answers: ``{"probability", "label"}`` objects for a classifier, numbers for a regressor."""
        packaging = self.packaging
        if not packaging.is_classifier:
            return values.tolist()
        labels = packaging.labels(values).tolist()
        return [{PROBABILITY: p, "label": label} for p, label in zip(values.tolist(), labels, strict=True)]

    def __call__(self, rows: Rows) -> list[Any]:
        return self.answers(self.values(rows))


def load_scorer(model_path: str | Path, feature_columns: Sequence[str], examples: dict[str, list[Any]] | None = None,
                *, compile_models: bool = True) -> Scorer:
    """Load a model from its local folder and build the fastest scorer that gives the pyfunc's answers.

    ``examples`` holds realistic values per feature (online store values, fallbacks) for the probe rows.
    """
    served = load_served(model_path)
    reference = reference_values(served, feature_columns)
    if not compile_models:
        return Scorer(reference, served.packaging, "pyfunc", "compilation disabled")
    try:
        compiled = compile_pipeline(served, feature_columns)
        verify(compiled, reference, compiled.probe_rows(examples or {}))
    except Unsupported as why:
        return Scorer(reference, served.packaging, "pyfunc", str(why))
    return Scorer(compiled, served.packaging, "compiled", compiled.detail, batchable=True)


def reference_values(served: ServedModel, feature_columns: Sequence[str]) -> Callable[[Rows], np.ndarray]:
    """The pyfunc's own computation on a DataFrame of the rows: the answers every scorer must give."""
    columns = pd.Index(list(feature_columns))
    packaging = served.packaging
    absent = [f for f in packaging.features if f not in columns]
    if absent:
        raise ValueError(f"the model takes {absent}, which are not among the endpoint's feature columns")

    def values(rows: Rows) -> np.ndarray:
        frame = pd.DataFrame(list(rows), columns=columns)
        return served.raw(typed_features(frame, packaging.categorical, packaging.features))

    return values


def verify(compiled: Callable[[Rows], np.ndarray], reference: Callable[[Rows], np.ndarray],
           probes: list[tuple]) -> None:
    """Raise :class:`Unsupported` unless the compiled scorer answers exactly like the reference on ``probes``, on
    all of them at once and one at a time; where the reference refuses a row, the compiled scorer must too."""
    try:
        expected = reference(probes)
        cases = [(probes, expected), *(([row], expected[i:i + 1]) for i, row in enumerate(probes[:8]))]
    except Exception:  # noqa: BLE001 - some probe rows are refused: compare row by row
        cases = [([row], _outcome(reference, [row])) for row in probes]
    compared = 0
    for rows, want in cases:
        got = _outcome(compiled, rows)
        if isinstance(want, Exception) or isinstance(got, Exception):
            if not (isinstance(want, Exception) and isinstance(got, Exception)):
                raise Unsupported(f"on probe row {rows[0]} the pipeline gives {want!r}, the compiled scorer {got!r}")
            continue
        if not np.array_equal(got, want, equal_nan=True):
            worst = float(np.nanmax(np.abs(np.asarray(got, float) - np.asarray(want, float))))
            raise Unsupported(f"compiled answers differ from the pipeline's on probe rows (by up to {worst:.3g})")
        compared += 1
    if not compared:
        raise Unsupported("the pipeline refuses every probe row, so nothing could be compared")


def _outcome(score: Callable[[Rows], np.ndarray], rows: Rows) -> np.ndarray | Exception:
    try:
        return np.asarray(score(rows))
    except Exception as error:  # noqa: BLE001 - an outcome to compare, not a failure of the check
        return error


@dataclass(frozen=True)
class _Input:
    """How one column of the model matrix is read from the rows: a float conversion, or a category lookup."""

    position: int
    lookup: dict[Any, float] | None = None
    missing: float = math.nan
    unknown: float = math.nan
    hints: tuple[Any, ...] = ()

    def column(self) -> Column:
        position, missing, nan, isnan = self.position, self.missing, math.nan, math.isnan
        if self.lookup is None:
            if isnan(missing):
                return lambda rows: [nan if (v := row[position]) is None else v for row in rows]
            return lambda rows: [missing if (v := row[position]) is None or (type(v) is float and isnan(v)) else v
                                 for row in rows]
        get, unknown = self.lookup.get, self.unknown

        def lookup(rows: Rows) -> list[float]:
            out = []
            for row in rows:
                value = row[position]
                if value is None or (type(value) is float and isnan(value)):
                    out.append(missing)
                else:
                    # Categories are compared as the strings training saw (an integer 7 is the category "7").
                    out.append(get(value if type(value) is str else str(value), unknown))
            return out

        return lookup

    def then(self, mapping: dict[float, float]) -> _Input:
        """This input followed by a float-to-float map (the booster's own category indices); unmapped: NaN."""
        if self.lookup is None:
            raise Unsupported("a categorical booster input that is not ordinal-encoded")
        nan = math.nan
        return _Input(self.position, {k: mapping.get(v, nan) for k, v in self.lookup.items()},
                      mapping.get(self.missing, nan), mapping.get(self.unknown, nan), self.hints)


class CompiledModel:
    """A fitted pipeline as per-column conversions into a float matrix and the final estimator's trees on it."""

    def __init__(self, feature_columns: Sequence[str], inputs: list[_Input],
                 final: Callable[[np.ndarray], np.ndarray], detail: str) -> None:
        self.feature_columns = list(feature_columns)
        self.inputs = inputs
        self._columns = [spec.column() for spec in inputs]
        self.final = final
        self.detail = detail

    def __call__(self, rows: Rows) -> np.ndarray:
        matrix = np.empty((len(rows), len(self._columns)), dtype=np.float64)
        for j, column in enumerate(self._columns):
            matrix[:, j] = column(rows)
        return self.final(matrix)

    def probe_rows(self, examples: dict[str, list[Any]], count: int = PROBE_ROWS) -> list[tuple]:
        """Rows mixing realistic values (``examples``) with every fitted category, unseen ones and nulls."""
        candidates: list[list[Any]] = [list(_DEFAULT_NUMBERS) for _ in self.feature_columns]
        for spec in self.inputs:
            if spec.hints:
                candidates[spec.position] = [*spec.hints, _UNSEEN, None]
        for position, name in enumerate(self.feature_columns):
            candidates[position] = list(examples.get(name, [])) + candidates[position]
        rng = random.Random(0)
        return [tuple(rng.choice(c) for c in candidates) for _ in range(count)]


def compile_pipeline(served: ServedModel, feature_columns: Sequence[str]) -> CompiledModel:
    """Compile a served pipeline; raises :class:`Unsupported` for anything it cannot reproduce exactly."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    pipeline = served.pipeline
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        raise Unsupported("not a two-step Pipeline (columns, then an estimator)")
    columns, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(columns, ColumnTransformer):
        raise Unsupported(f"first step is {type(columns).__name__}, not a ColumnTransformer")
    index = {name: i for i, name in enumerate(feature_columns)}
    names = getattr(columns, "feature_names_in_", None)
    if names is None or any(n not in index for n in names):
        raise Unsupported("the model's columns are not all among the endpoint's feature columns")
    inputs = _column_inputs(columns, [index[n] for n in names])
    inputs, final, detail = _final(estimator, inputs, served.packaging)
    return CompiledModel(feature_columns, inputs, final, detail)


def _column_inputs(columns: Any, positions: list[int]) -> list[_Input]:
    """One :class:`_Input` per output column of a fitted ColumnTransformer, in its output order."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    if columns.transformer_weights:
        raise Unsupported("ColumnTransformer with transformer_weights")
    indices = getattr(columns, "_transformer_to_input_indices", None)
    if indices is None:
        raise Unsupported("this scikit-learn's ColumnTransformer does not expose its column indices")
    inputs: list[_Input] = []
    for name, transformer, _ in columns.transformers_:
        selected = [positions[i] for i in indices.get(name, [])]
        if not selected or (isinstance(transformer, str) and transformer == "drop"):
            continue
        if (isinstance(transformer, str) and transformer == "passthrough") or (
                type(transformer) is FunctionTransformer and transformer.func is None):
            inputs += [_Input(p) for p in selected]
        elif type(transformer) is SimpleImputer:
            inputs += _imputed(transformer, selected)
        elif type(transformer) is OrdinalEncoder:
            inputs += _ordinal(transformer, selected)
        else:
            raise Unsupported(f"no compiled form for {type(transformer).__name__} in branch '{name}'")
    return inputs


def _imputed(imputer: Any, positions: list[int]) -> list[_Input]:
    statistics = np.asarray(imputer.statistics_)
    missing = imputer.missing_values
    if imputer.add_indicator or statistics.dtype.kind not in "fiu" or not (
            isinstance(missing, float) and math.isnan(missing)):
        raise Unsupported("SimpleImputer other than numeric, with missing_values=nan and no indicator")
    fills = statistics.astype(np.float64)
    if np.isnan(fills).any():
        raise Unsupported("SimpleImputer that drops an all-missing column")
    return [_Input(p, missing=float(fill)) for p, fill in zip(positions, fills, strict=True)]


def _ordinal(encoder: Any, positions: list[int]) -> list[_Input]:
    if encoder.handle_unknown != "use_encoded_value" or getattr(encoder, "_infrequent_enabled", False):
        raise Unsupported("OrdinalEncoder other than handle_unknown='use_encoded_value' without infrequent "
                          "categories")
    unknown = float(encoder.unknown_value)
    inputs = []
    for position, categories in zip(positions, encoder.categories_, strict=True):
        values = [v.item() if isinstance(v, np.generic) else v for v in categories]
        missing_seen = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and math.isnan(v))]
        known = {v: float(i) for i, v in enumerate(values) if i not in missing_seen}
        if not all(isinstance(v, str) for v in known):
            raise Unsupported("OrdinalEncoder over values that are not strings")
        # A missing value is its own category only if training saw one; otherwise it is an unknown value.
        missing = float(encoder.encoded_missing_value) if missing_seen else unknown
        inputs.append(_Input(position, known, missing, unknown, tuple(known)))
    return inputs


def _final(estimator: Any, inputs: list[_Input], packaging: Packaging
           ) -> tuple[list[_Input], Callable[[np.ndarray], np.ndarray], str]:
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    kind = type(estimator)
    if kind in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
        return _boosting(estimator, inputs, packaging)
    if kind in (RandomForestClassifier, RandomForestRegressor):
        return inputs, _forest(estimator, packaging), f"{kind.__name__} ({len(estimator.estimators_)} trees)"
    raise Unsupported(f"no compiled form for {kind.__name__}")


def _boosting(model: Any, inputs: list[_Input], packaging: Packaging
              ) -> tuple[list[_Input], Callable[[np.ndarray], np.ndarray], str]:
    """The booster's own trees on the matrix, summed in its own order from its baseline (``_raw_predict``)."""
    preprocessor = getattr(model, "_preprocessor", None)
    if preprocessor is not None:
        # With categorical features the booster re-encodes them itself, categorical columns first: fold that
        # second encoding into each column's lookup.
        encoder_mask = preprocessor.transformers_[0][2]
        encoder = preprocessor.transformers_[0][1]
        categorical = [j for j, flag in enumerate(encoder_mask) if flag]
        numeric = [j for j, flag in enumerate(encoder_mask) if not flag]
        remapped = []
        for j, categories in zip(categorical, encoder.categories_, strict=True):
            remapped.append(inputs[j].then({float(c): float(i) for i, c in enumerate(categories)}))
        inputs = remapped + [inputs[j] for j in numeric]
    known, index_map = model._bin_mapper.make_known_categories_bitsets()
    trees = [list(iteration) for iteration in model._predictors]
    baseline = model._baseline_prediction
    loss = model._loss
    positive = 1 if packaging.is_classifier else None

    def final(matrix: np.ndarray) -> np.ndarray:
        raw = np.zeros((matrix.shape[0], model.n_trees_per_iteration_), dtype=baseline.dtype, order="F")
        raw += baseline
        for iteration in trees:
            for k, tree in enumerate(iteration):
                # One OpenMP thread: a worker scores one micro-batch at a time (see serving/pool.py).
                raw[:, k] += tree.predict(matrix, known, index_map, 1)
        if positive is not None:
            return loss.predict_proba(raw)[:, positive]
        return loss.link.inverse(raw.ravel())

    detail = f"{type(model).__name__} ({len(trees)} iterations)"
    return inputs, final, detail


def _forest(forest: Any, packaging: Packaging) -> Callable[[np.ndarray], np.ndarray]:
    """The forest's trees on the matrix (as float32, as its input check makes it), summed in order, then averaged
    (``ForestClassifier.predict_proba``, ``ForestRegressor.predict`` with one job)."""
    if forest.n_outputs_ != 1:
        raise Unsupported("a forest with several outputs")
    trees = [tree.tree_ for tree in forest.estimators_]
    width = int(forest.n_classes_) if packaging.is_classifier else 1

    def values(matrix: np.ndarray) -> np.ndarray:
        features = np.ascontiguousarray(matrix, dtype=np.float32)
        total = np.zeros((matrix.shape[0], width), dtype=np.float64)
        for tree in trees:
            total += tree.predict(features)[:, :width]
        total /= len(trees)
        return total[:, 1] if packaging.is_classifier else total[:, 0]

    return values
