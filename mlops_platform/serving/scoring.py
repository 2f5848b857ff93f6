"""Scorers: a model version turned, once at load time, into a function from feature rows to predictions.

Under scikit-learn 1.9 a single-row ``Pipeline.predict`` on a DataFrame spends almost all of its time (about
4.5 ms on this machine for a ColumnTransformer with a scaler and a one-hot encoder) validating and indexing
the frame, and a few microseconds on arithmetic. So for the usual tabular building blocks (StandardScaler,
MinMaxScaler, a numeric SimpleImputer, OneHotEncoder, OrdinalEncoder, passthrough, nested Pipelines, a
ColumnTransformer, and a final estimator) the fitted parameters are compiled into numpy operations on the rows
as they arrive. Linear final estimators become a matrix product; any other final estimator is called on the
compiled numpy matrix.

A compiled scorer is used only after it reproduced the pipeline's own output on probe rows drawn from the
online store, the fallback values and the fitted categories; any model or step it does not know, or any
disagreement, leaves the model on the DataFrame path, which calls the pipeline itself and is always right,
only slower.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Rows = Sequence[Sequence[Any]]
Op = Callable[[np.ndarray], np.ndarray]

PROBE_ROWS = 64
SUPPORTED_METHODS = ("predict", "predict_proba", "predict_log_proba")
_DEFAULT_NUMBERS = [0.0, 1.0, -2.5, 7.0, 1000.0]


class Unsupported(Exception):
    """The model holds a part the compiler does not handle exactly; the DataFrame path serves it."""


@dataclass(frozen=True)
class Scorer:
    """Feature rows (tuples in ``feature_columns`` order) in, one JSON-ready prediction per row out."""

    predict: Callable[[Rows], Any]
    path: str
    method: str
    detail: str = ""

    def __call__(self, rows: Rows) -> list:
        return _json_ready(self.predict(rows))


def load_scorer(
    model_path: str | Path,
    feature_columns: Sequence[str],
    examples: dict[str, list[Any]] | None = None,
    *,
    compile_models: bool = True,
) -> Scorer:
    """Load an MLflow model from its local folder and build the fastest scorer that gives the model's answers.

    ``examples`` holds realistic values per feature (online store values, fallbacks) for the probe rows.
    """
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    model_path = str(model_path)
    pyfunc_conf = Model.load(model_path).flavors.get("python_function", {})
    method = pyfunc_conf.get("predict_fn", "predict")
    try:
        model = mlflow.sklearn.load_model(model_path)
    except MlflowException as error:
        import mlflow.pyfunc

        pyfunc = mlflow.pyfunc.load_model(model_path)
        return Scorer(_dataframe_predict(pyfunc.predict, feature_columns), "pyfunc", "predict",
                      f"not an sklearn model: {error.message}")
    if method not in SUPPORTED_METHODS:
        raise ValueError(f"model at {model_path} predicts with '{method}'; supported: {SUPPORTED_METHODS}")
    reference = _dataframe_predict(getattr(model, method), feature_columns)
    if not compile_models:
        return Scorer(reference, "dataframe", method, "compilation disabled")
    try:
        compiled = compile_model(model, feature_columns, method)
        verify(compiled, reference, compiled.probe_rows(examples or {}), method)
    except Unsupported as why:
        return Scorer(reference, "dataframe", method, str(why))
    return Scorer(compiled, "compiled", method)


def _dataframe_predict(predict: Callable[[Any], Any],
                       feature_columns: Sequence[str]) -> Callable[[Rows], Any]:
    import pandas as pd

    columns = pd.Index(list(feature_columns))

    def score(rows: Rows) -> Any:
        return predict(pd.DataFrame(list(rows), columns=columns))

    return score


def _json_ready(output: Any) -> list:
    if isinstance(output, np.ndarray):
        return output.tolist()
    if hasattr(output, "to_dict") and hasattr(output, "columns"):
        return output.to_dict(orient="records")
    if hasattr(output, "tolist"):
        return output.tolist()
    return list(output)


def verify(compiled: Callable[[Rows], Any], reference: Callable[[Rows], Any], probes: list[tuple],
           method: str) -> None:
    """Raise :class:`Unsupported` unless the compiled scorer answers like the pipeline on ``probes``.

    Where the pipeline refuses a row (a null it cannot impute, an unknown category), the compiled scorer must
    refuse it too.
    """
    try:
        expected = np.asarray(reference(probes))
        cases = [(probes, expected), (probes[:1], expected[:1])]
    except Exception:  # noqa: BLE001 - some probe rows are refused: compare row by row
        cases = [([row], _outcome(reference, [row])) for row in probes]
    compared = 0
    for rows, want in cases:
        got = _outcome(compiled, rows)
        if isinstance(want, Exception) or isinstance(got, Exception):
            if not (isinstance(want, Exception) and isinstance(got, Exception)):
                raise Unsupported(
                    f"on probe row {rows[0]} the pipeline gives {want!r}, the compiled scorer {got!r}"
                )
            continue
        if got.shape != want.shape:
            raise Unsupported(f"compiled output shape {got.shape} differs from the pipeline's {want.shape}")
        if want.dtype.kind in "fc":
            same = np.allclose(got, want, rtol=1e-7, atol=1e-10, equal_nan=True)
        else:
            same = np.array_equal(got, want)
        if not same:
            raise Unsupported(f"compiled {method} differs from the pipeline's on probe rows")
        compared += 1
    if not compared:
        raise Unsupported("the pipeline refuses every probe row, so nothing could be compared")


def _outcome(score: Callable[[Rows], Any], rows: Rows) -> np.ndarray | Exception:
    try:
        return np.asarray(score(rows))
    except Exception as error:  # noqa: BLE001 - an outcome to compare, not a failure of the check
        return error


@dataclass
class _Branch:
    """Some input columns and the operations that turn them into a block of the model matrix."""

    inputs: list[int]
    ops: list[Op]
    hints: dict[int, list[Any]] = field(default_factory=dict)

    def run(self, rows: np.ndarray) -> np.ndarray:
        block = rows[:, self.inputs]
        for op in self.ops:
            block = op(block)
        return block


class CompiledModel:
    """A fitted pipeline as numpy operations on an object matrix of the rows."""

    def __init__(self, feature_columns: Sequence[str], branches: list[_Branch], post: list[Op],
                 final: Callable[[np.ndarray], np.ndarray]) -> None:
        self.feature_columns = list(feature_columns)
        self.branches = branches
        self.post = post
        self.final = final

    def __call__(self, rows: Rows) -> np.ndarray:
        matrix = np.empty((len(rows), len(self.feature_columns)), dtype=object)
        matrix[:] = rows
        blocks = [branch.run(matrix) for branch in self.branches]
        features = blocks[0] if len(blocks) == 1 else np.hstack(blocks)
        for op in self.post:
            features = op(features)
        return self.final(features)

    def probe_rows(self, examples: dict[str, list[Any]], count: int = PROBE_ROWS) -> list[tuple]:
        """Rows mixing realistic values (``examples``) with the fitted categories and scales of each input."""
        candidates: list[list[Any]] = [list(_DEFAULT_NUMBERS) for _ in self.feature_columns]
        for branch in self.branches:
            for position, hint in branch.hints.items():
                candidates[position] = list(hint)
        for position, name in enumerate(self.feature_columns):
            candidates[position] = list(examples.get(name, [])) + candidates[position]
        rng = random.Random(0)
        return [tuple(rng.choice(c) for c in candidates) for _ in range(count)]


def _all_strings(values: list[Any]) -> bool:
    return all(isinstance(v, str) for v in values)


def compile_model(model: Any, feature_columns: Sequence[str], method: str) -> CompiledModel:
    """Compile a fitted estimator or Pipeline; raises :class:`Unsupported` for anything it cannot match."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    steps = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    steps = [step for step in steps if step is not None and not _is_passthrough(step)]
    *transforms, final = steps
    first = transforms[0] if transforms else final
    positions = _input_positions(first, feature_columns)
    if transforms and isinstance(transforms[0], ColumnTransformer):
        branches = _column_transformer(transforms[0], positions)
        rest = transforms[1:]
    else:
        branches = [_Branch(positions, [_as_float])]
        rest = transforms
    post = [op for step in rest for op in _ops(step)[0]]
    return CompiledModel(feature_columns, branches, post, _final(final, method))


def _input_positions(first: Any, feature_columns: Sequence[str]) -> list[int]:
    """Where each column the model was fitted on sits in the endpoint's feature rows."""
    names = getattr(first, "feature_names_in_", None)
    if names is None:
        expected = getattr(first, "n_features_in_", None)
        if expected != len(feature_columns):
            raise Unsupported(f"model was fitted without column names on {expected} columns, "
                              f"the endpoint gives {len(feature_columns)}")
        return list(range(len(feature_columns)))
    index = {name: i for i, name in enumerate(feature_columns)}
    missing = [str(n) for n in names if n not in index]
    if missing:
        raise Unsupported(f"model needs columns {missing} that are not among the endpoint's feature_columns")
    return [index[n] for n in names]


def _column_transformer(ct: Any, positions: list[int]) -> list[_Branch]:
    if ct.transformer_weights:
        raise Unsupported("ColumnTransformer with transformer_weights")
    indices_by_name = getattr(ct, "_transformer_to_input_indices", None)
    if indices_by_name is None:
        raise Unsupported("this scikit-learn's ColumnTransformer does not expose its column indices")
    branches = []
    for name, transformer, columns in ct.transformers_:
        indices = list(indices_by_name.get(name, []))
        if (isinstance(transformer, str) and transformer == "drop") or not indices:
            continue
        if isinstance(columns, str | int):
            raise Unsupported(f"ColumnTransformer branch '{name}' selects a single column as 1-D input")
        inputs = [positions[i] for i in indices]
        ops, hints = _ops(transformer)
        branches.append(_Branch(inputs, ops, {inputs[j]: h for j, h in hints.items()}))
    if not branches:
        raise Unsupported("ColumnTransformer selects no columns")
    return branches


def _ops(transformer: Any) -> tuple[list[Op], dict[int, list[Any]]]:
    """Operations equivalent to ``transformer.transform``, and probe values for its input columns."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        StandardScaler,
    )

    # A fitted ColumnTransformer keeps remainder="passthrough" as a FunctionTransformer without a function.
    if _is_passthrough(transformer) or (
        type(transformer) is FunctionTransformer and transformer.func is None
    ):
        return [_as_float], {}
    if type(transformer) is Pipeline:
        ops: list[Op] = []
        hints: dict[int, list[Any]] = {}
        for _, step in transformer.steps:
            if step is None or _is_passthrough(step):
                continue
            step_ops, step_hints = _ops(step)
            ops.extend(step_ops)
            for j, h in step_hints.items():
                hints.setdefault(j, h)
        return ops, hints
    kind = type(transformer)
    if kind is StandardScaler:
        return [_standard_scaler(transformer)], _scale_hints(transformer)
    if kind is MinMaxScaler:
        return [_min_max_scaler(transformer)], {}
    if kind is SimpleImputer:
        return [_simple_imputer(transformer)], {}
    if kind is OneHotEncoder:
        tolerant = transformer.handle_unknown != "error"
        return [_one_hot(transformer)], _category_hints(transformer, tolerant=tolerant)
    if kind is OrdinalEncoder:
        tolerant = transformer.handle_unknown == "use_encoded_value"
        return [_ordinal(transformer)], _category_hints(transformer, tolerant=tolerant)
    raise Unsupported(f"no compiled form for {kind.__name__}")


def _is_passthrough(step: Any) -> bool:
    return isinstance(step, str) and step == "passthrough"


def _as_float(block: np.ndarray) -> np.ndarray:
    try:
        return block.astype(np.float64)
    except TypeError:  # None among the values: the DataFrame path sees NaN there
        return np.array([[np.nan if v is None else v for v in row] for row in block], dtype=np.float64)


def _standard_scaler(scaler: Any) -> Op:
    mean = scaler.mean_ if scaler.with_mean else None
    scale = scaler.scale_ if scaler.with_std else None

    def op(block: np.ndarray) -> np.ndarray:
        values = _as_float(block)
        if mean is not None:
            values = values - mean
        if scale is not None:
            values = values / scale
        return values

    return op


def _scale_hints(scaler: Any) -> dict[int, list[Any]]:
    if getattr(scaler, "mean_", None) is None or getattr(scaler, "scale_", None) is None:
        return {}
    return {j: [float(m + k * s) for k in (-2.5, -1.0, 0.0, 0.5, 2.0)]
            for j, (m, s) in enumerate(zip(scaler.mean_, scaler.scale_, strict=True))}


def _min_max_scaler(scaler: Any) -> Op:
    scale, minimum, clip = scaler.scale_, scaler.min_, scaler.clip
    low, high = scaler.feature_range

    def op(block: np.ndarray) -> np.ndarray:
        values = _as_float(block) * scale + minimum
        return np.clip(values, low, high) if clip else values

    return op


def _simple_imputer(imputer: Any) -> Op:
    statistics = np.asarray(imputer.statistics_)
    missing = imputer.missing_values
    if imputer.add_indicator:
        raise Unsupported("SimpleImputer with add_indicator")
    if statistics.dtype.kind not in "fiu" or not (isinstance(missing, float) and math.isnan(missing)):
        raise Unsupported("SimpleImputer other than numeric with missing_values=nan")
    if np.isnan(statistics.astype(np.float64)).any():
        raise Unsupported("SimpleImputer that drops an all-missing column")
    fill = statistics.astype(np.float64)

    def op(block: np.ndarray) -> np.ndarray:
        values = _as_float(block)
        missing_mask = np.isnan(values)
        return np.where(missing_mask, fill, values) if missing_mask.any() else values

    return op


def _category_maps(encoder: Any) -> list[dict[Any, int]]:
    if getattr(encoder, "_infrequent_enabled", False):
        raise Unsupported(f"{type(encoder).__name__} with infrequent categories")
    maps = []
    for categories in encoder.categories_:
        values = [v.item() if isinstance(v, np.generic) else v for v in categories]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            raise Unsupported(f"{type(encoder).__name__} with a missing-value category")
        maps.append({v: i for i, v in enumerate(values)})
    return maps


def _category_hints(encoder: Any, *, tolerant: bool) -> dict[int, list[Any]]:
    hints = {}
    for j, categories in enumerate(encoder.categories_):
        values = [v.item() if isinstance(v, np.generic) else v for v in categories]
        if tolerant:
            values.append("__unseen_category__" if _all_strings(values) else -987_654)
        hints[j] = values
    return hints


def _unknown(value: Any, column: int) -> ValueError:
    return ValueError(f"Found unknown categories [{value!r}] in column {column} during transform")


def _one_hot(encoder: Any) -> Op:
    maps = _category_maps(encoder)
    strict = encoder.handle_unknown == "error"
    drop = encoder.drop_idx_
    # Output column of each (input column, category), -1 where the category is the dropped one.
    columns: list[list[int]] = []
    offset = 0
    for j, mapping in enumerate(maps):
        dropped = None if drop is None or drop[j] is None else int(drop[j])
        out = []
        for i in range(len(mapping)):
            if i == dropped:
                out.append(-1)
            else:
                out.append(offset)
                offset += 1
        columns.append(out)
    width = offset

    def op(block: np.ndarray) -> np.ndarray:
        encoded = np.zeros((block.shape[0], width))
        for j, mapping in enumerate(maps):
            targets = columns[j]
            for r, value in enumerate(block[:, j]):
                i = mapping.get(value)
                if i is None:
                    if strict:
                        raise _unknown(value, j)
                    continue
                if targets[i] >= 0:
                    encoded[r, targets[i]] = 1.0
        return encoded

    return op


def _ordinal(encoder: Any) -> Op:
    maps = _category_maps(encoder)
    if encoder.handle_unknown not in ("error", "use_encoded_value"):
        raise Unsupported(f"OrdinalEncoder with handle_unknown={encoder.handle_unknown!r}")
    strict = encoder.handle_unknown == "error"
    unknown_value = encoder.unknown_value

    def op(block: np.ndarray) -> np.ndarray:
        encoded = np.empty(block.shape, dtype=np.float64)
        for j, mapping in enumerate(maps):
            for r, value in enumerate(block[:, j]):
                i = mapping.get(value)
                if i is None:
                    if strict:
                        raise _unknown(value, j)
                    encoded[r, j] = unknown_value
                else:
                    encoded[r, j] = i
        return encoded

    return op


def _final(estimator: Any, method: str) -> Callable[[np.ndarray], np.ndarray]:
    """The final estimator on the compiled matrix: a matrix product for linear models, else its own method."""
    from scipy.special import expit
    from sklearn.linear_model import (
        ElasticNet,
        Lasso,
        LinearRegression,
        LogisticRegression,
        Perceptron,
        Ridge,
        RidgeClassifier,
        SGDClassifier,
        SGDRegressor,
    )
    from sklearn.svm import LinearSVC, LinearSVR
    from sklearn.utils.extmath import softmax

    kind = type(estimator)

    def finite(features: np.ndarray) -> np.ndarray:
        # What the estimator's own input check would refuse, refused with its message.
        if not np.isfinite(features).all():
            raise ValueError(
                f"Input X contains NaN or infinity; {kind.__name__} does not accept missing values"
            )
        return features

    if kind in (LogisticRegression, RidgeClassifier, SGDClassifier, Perceptron, LinearSVC):
        weights, intercept, classes = estimator.coef_.T, estimator.intercept_, estimator.classes_
        if method == "predict":
            def predict(features: np.ndarray) -> np.ndarray:
                scores = finite(features) @ weights + intercept
                if scores.shape[1] == 1:
                    return classes[(scores[:, 0] > 0).astype(np.intp)]
                return classes[scores.argmax(axis=1)]

            return predict
        if kind is LogisticRegression:
            def proba(features: np.ndarray) -> np.ndarray:
                scores = finite(features) @ weights + intercept
                if scores.shape[1] == 1:
                    positive = expit(scores[:, 0])
                    result = np.stack([1 - positive, positive], axis=1)
                else:
                    result = softmax(scores, copy=False)
                return np.log(result) if method == "predict_log_proba" else result

            return proba
    if kind in (LinearRegression, Ridge, Lasso, ElasticNet, SGDRegressor, LinearSVR) and method == "predict":
        weights, intercept = estimator.coef_, estimator.intercept_

        def regress(features: np.ndarray) -> np.ndarray:
            return finite(features) @ weights.T + intercept

        return regress
    # An estimator fitted on named columns checks them on every call, and a matrix has none.
    if hasattr(estimator, "feature_names_in_"):
        raise Unsupported(f"{kind.__name__} was fitted on named columns and is not compiled")
    return getattr(estimator, method)
