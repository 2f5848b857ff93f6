"""Per-column data drift with the decisions of Evidently 0.7.23's ``DataDriftPreset``, at a fraction of its cost.

Compatibility contract
----------------------
Given the same reference and current data, column kinds and threshold, ``detect_drift`` returns for every column the
method, threshold and drifted flag that ``Report([DataDriftPreset()]).run(current_data=..., reference_data=...)``
reports in its ``ValueDrift`` metrics, a score equal to Evidently's up to floating-point summation order, and the
dataset verdict of its ``DriftedColumnsCount``. What is mirrored, by Evidently module and function:

- Columns and kinds (``core/datasets.py``, ``infer_column_type``), read from the *current* data because the report's
  ``Context.data_definition`` is its first input's: float -> numerical; signed int -> categorical with at most 10
  distinct values, else numerical; str (``string`` or ``object`` holding str) -> categorical, or text when more
  than half of the non-null values are distinct; bool and category -> categorical. Everything else (unsigned and
  nullable extension dtypes, datetimes, lists) is not compared. Numerical columns come first, then categorical,
  as in ``DataDriftPreset.generate_metrics``. Polars and Arrow inputs get the kind Evidently would infer after
  ``to_pandas()`` (an integer column with nulls becomes float64, a bool column with nulls an object column).
  Explicit ``numerical`` / ``categorical`` lists behave like ``DataDefinition``'s: a list left as None is
  inferred from the columns not named in the other.
- Cleaning (``legacy/calculations/data_drift.py``, ``get_one_column_drift``): each side drops NaN, None and +/-inf
  on its own; a side left empty is an error.
- Method (``legacy/calculations/stattests/registry.py``, ``_get_default_stattest``), with n the cleaned reference
  size and k the number of distinct values in both cleaned sides together:
  n <= 1000: numerical with k > 5 -> K-S; otherwise, and for categorical, k > 2 -> chi-square, else Z-test.
  n > 1000: numerical with k > 5 -> Wasserstein distance normed by the reference std; otherwise Jensen-Shannon.
- Scores and verdicts (``legacy/calculations/stattests/``): K-S drifts when p <= threshold; chi-square and Z-test
  when p < threshold; Wasserstein and Jensen-Shannon when the distance >= threshold. Defaults: 0.05 for p-values,
  0.1 for distances. Jensen-Shannon compares value frequencies: the default selection only sends it categorical
  columns or numerical ones with at most 5 values, so the Sturges-histogram branch of ``get_binned_data`` never
  runs.
- Dataset (``get_dataset_drift``): drifted when the share of drifted columns is >= ``drift_share``.

Not mirrored: Evidently's text-content drift, which trains a classifier. A column Evidently would read as text
raises ``ValueError``: name it in ``categorical`` or leave it out.

Where the time goes instead: one column at a time on numpy arrays taken from the frame without copying it, value
counts by hashing in pandas or Arrow, and a Wasserstein distance from two in-place sorts and a linear merge rather
than SciPy's argsort and binary searches. Polars columns are read through Arrow.
"""

from __future__ import annotations

import math
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import polars as pl

# SciPy is imported inside the tests that use it: the definitions import this module, and SciPy costs them a
# third of a second at load.

# The folder beside Evidently's pages that holds the one copy of its script library they load.
EVIDENTLY_LIBRARY_DIR = "js"

Kind = Literal["numerical", "categorical"]
Frame = Union[pd.DataFrame, "pl.DataFrame", pa.Table]

# Evidently's display names: its ValueDrift metrics report these strings as their method.
WASSERSTEIN = "Wasserstein distance (normed)"
JENSEN_SHANNON = "Jensen-Shannon distance"
KOLMOGOROV_SMIRNOV = "K-S p_value"
CHI_SQUARE = "chi-square p_value"
Z_TEST = "Z-test p_value"

DEFAULT_THRESHOLDS: dict[str, float] = {
    WASSERSTEIN: 0.1,
    JENSEN_SHANNON: 0.1,
    KOLMOGOROV_SMIRNOV: 0.05,
    CHI_SQUARE: 0.05,
    Z_TEST: 0.05,
}

_SMALL_REFERENCE_ROWS = 1000
_FEW_VALUES = 5
_BINARY_VALUES = 2
_INTEGER_CARDINALITY_LIMIT = 10
_TEXT_DISTINCT_SHARE = 0.5
_MIN_WASSERSTEIN_NORM = 0.001
# Distinct values among this many leading values of each side settle "more than 5 distinct" for most numerical
# columns without a full pass.
_CARDINALITY_PROBE = 256


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift verdict, named and scored as Evidently's ValueDrift metric would."""

    column: str
    kind: Kind
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Per-column verdicts and the dataset verdict (drifted when ``share_drifted >= drift_share``)."""

    columns: list[ColumnDrift]
    share_drifted: float
    dataset_drifted: bool

    def to_rows(self) -> list[dict[str, Any]]:
        """One row per column for the monitoring table: column, method, score, threshold, drifted."""
        return [
            {
                "column": c.column,
                "method": c.method,
                "score": c.score,
                "threshold": c.threshold,
                "drifted": c.drifted,
            }
            for c in self.columns
        ]


def detect_drift(
    reference: Frame,
    current: Frame,
    *,
    numerical: list[str] | None = None,
    categorical: list[str] | None = None,
    threshold: float | None = None,
    drift_share: float = 0.5,
) -> DriftResult:
    """Decide, per column, whether ``current`` drifted from ``reference``, as Evidently's DataDriftPreset would.

    ``reference`` and ``current`` may be pandas or polars DataFrames or pyarrow Tables. Column kinds are inferred
    from ``current`` like Evidently does unless given. ``threshold`` replaces every method's default, like the
    preset's ``threshold``. Raises ``ValueError`` for a missing or empty column, a non-numeric column named
    numerical, or a column Evidently would treat as text.
    """
    ref = _Side(reference, "reference")
    cur = _Side(current, "current")
    columns = _resolve_columns(ref, cur, numerical, categorical)
    verdicts = [_column_drift(name, kind, ref, cur, threshold) for name, kind in columns]
    share = sum(v.drifted for v in verdicts) / len(verdicts)
    return DriftResult(columns=verdicts, share_drifted=share, dataset_drifted=share >= drift_share)


def render_html_report(
    reference: Frame,
    current: Frame,
    path: str | Path,
    *,
    numerical: list[str] | None = None,
    categorical: list[str] | None = None,
    sample_rows: int = 50_000,
    seed: int = 0,
) -> Path:
    """Write Evidently's own DataDriftPreset HTML page for people to browse, and return its path.

    Decisions come from ``detect_drift``; this page is for people. It runs the real Evidently report on a uniform
    random sample of at most ``sample_rows`` rows of each side, so it stays cheap, and its scores may differ from
    the full-data verdicts (a sample of 1,000 rows or fewer even switches Evidently to p-value tests). Columns and
    kinds are resolved on the full data, as ``detect_drift`` does, and handed to Evidently explicitly.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref = _Side(reference, "reference")
    cur = _Side(current, "current")
    columns = _resolve_columns(ref, cur, numerical, categorical)
    names = [name for name, _ in columns]
    num = [name for name, kind in columns if kind == "numerical"]
    cat = [name for name, kind in columns if kind == "categorical"]
    rng = np.random.default_rng(seed)

    def dataset(side: _Side) -> Dataset:
        return Dataset.from_pandas(
            side.sample_pandas(names, sample_rows, rng),
            data_definition=DataDefinition(numerical_columns=num, categorical_columns=cat),
        )

    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        current_data=dataset(cur), reference_data=dataset(ref)
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_sharing_library(snapshot.get_html_str(as_iframe=False), out.parent), encoding="utf-8")
    return out


def _sharing_library(page: str, folder: Path) -> str:
    """``page`` loading Evidently's script library from one copy in ``folder/js`` instead of inlining it.

    The library is 3.5 MB of the 5.6 MB of each page: six months of daily pages held 45 copies of it. The pages of
    a folder share one copy, as Evidently's legacy "folder" save mode did; a page is left whole if Evidently
    changes how it inlines the library.
    """
    import evidently

    library = Path(evidently.__file__).parent / "nbextension" / "static" / "index.js"
    inline = f"<script>{library.read_text(encoding='utf-8')}</script>"
    if inline not in page:
        return page
    shared = folder / EVIDENTLY_LIBRARY_DIR / f"evidently-{evidently.__version__}.js"
    if not shared.exists():
        shared.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name first: a page opened meanwhile never loads half a library.
        partial = shared.with_suffix(f".{uuid.uuid4().hex}.tmp")
        shutil.copyfile(library, partial)
        partial.replace(shared)
    return page.replace(inline, f'<script src="{EVIDENTLY_LIBRARY_DIR}/{shared.name}"></script>', 1)


class _Side:
    """One input frame, read a column at a time so that no whole-frame copy is ever made."""

    def __init__(self, frame: Frame, label: str) -> None:
        self.label = label
        if isinstance(frame, (pd.DataFrame, pa.Table)):
            self._frame: Any = frame
        elif type(frame).__module__.partition(".")[0] == "polars" and hasattr(frame, "get_column"):
            self._frame = frame
        else:
            raise TypeError(
                f"{label} must be a pandas DataFrame, a polars DataFrame or a pyarrow Table, "
                f"got {type(frame).__name__}"
            )
        names = frame.column_names if isinstance(frame, pa.Table) else frame.columns
        self.names: list[str] = [str(name) for name in names]

    def column(self, name: str) -> pd.Series | pa.ChunkedArray:
        frame = self._frame
        if isinstance(frame, pd.DataFrame):
            return frame[name]
        if isinstance(frame, pa.Table):
            return frame.column(name)
        array = frame.get_column(name).to_arrow()
        return array if isinstance(array, pa.ChunkedArray) else pa.chunked_array([array])

    def kind(self, name: str) -> str:
        column = self.column(name)
        if isinstance(column, pd.Series):
            return _pandas_kind(column)
        return _arrow_kind(column)

    def finite_values(self, name: str) -> np.ndarray:
        """The column as float64 without NaN, None or inf: always a fresh array, which callers may sort."""
        column = self.column(name)
        if isinstance(column, pd.Series):
            if not pd.api.types.is_numeric_dtype(column.dtype):
                raise ValueError(
                    f"Column '{name}' in {self.label} data should contain numerical values only."
                )
            values = (
                column.to_numpy()
                if isinstance(column.dtype, np.dtype)
                else column.to_numpy(dtype=np.float64, na_value=np.nan)
            )
        else:
            kind = column.type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
                raise ValueError(
                    f"Column '{name}' in {self.label} data should contain numerical values only."
                )
            values = column.cast(pa.float64()).to_numpy()
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise ValueError(
                f"Column '{name}' has no finite values in the {self.label} data: Evidently refuses an empty "
                "column, so fix the data or leave the column out."
            )
        return finite

    def value_counts(self, name: str) -> dict[Any, int]:
        """Counts of each value present, missing values and +/-inf left out as Evidently drops them."""
        column = self.column(name)
        if isinstance(column, pd.Series):
            counted = column.value_counts(dropna=True, sort=False)
            keys, counts = counted.index.tolist(), counted.to_numpy().tolist()
        else:
            counted = pc.value_counts(column)
            keys, counts = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
        # Unobserved categories of a category dtype come back with count 0; Evidently never sees them.
        present = {key: count for key, count in zip(keys, counts) if count > 0 and not _is_missing(key)}
        if not present:
            raise ValueError(
                f"Column '{name}' has only missing values in the {self.label} data: Evidently refuses an empty "
                "column, so fix the data or leave the column out."
            )
        return present

    def sample_pandas(self, names: Sequence[str], rows: int, rng: np.random.Generator) -> pd.DataFrame:
        frame = self._frame
        total = frame.shape[0]
        picked = np.sort(rng.choice(total, size=rows, replace=False)) if total > rows else np.arange(total)
        if isinstance(frame, pd.DataFrame):
            return frame.iloc[picked, frame.columns.get_indexer(names)]
        table = frame if isinstance(frame, pa.Table) else frame.select(list(names)).to_arrow()
        return table.select(list(names)).take(pa.array(picked)).to_pandas()


def _resolve_columns(
    ref: _Side, cur: _Side, numerical: list[str] | None, categorical: list[str] | None
) -> list[tuple[str, Kind]]:
    clash = set(numerical or ()) & set(categorical or ())
    if clash:
        raise ValueError(f"Columns named both numerical and categorical: {sorted(clash)}")
    num = list(numerical) if numerical is not None else []
    cat = list(categorical) if categorical is not None else []
    if numerical is None or categorical is None:
        named = set(num) | set(cat)
        inferred: dict[str, list[str]] = {"numerical": [], "categorical": [], "text": []}
        for name in cur.names:
            if name not in named:
                inferred.setdefault(cur.kind(name), []).append(name)
        if inferred["text"]:
            raise ValueError(
                f"Evidently would treat {inferred['text']} as text (more than half of the values distinct) and "
                "run its text-content drift test, which detect_drift does not reproduce. Pass numerical= and "
                "categorical= explicitly, naming these columns as categorical or leaving them out."
            )
        if numerical is None:
            num = inferred["numerical"]
        if categorical is None:
            cat = inferred["categorical"]
    columns: list[tuple[str, Kind]] = [(n, "numerical") for n in num] + [(c, "categorical") for c in cat]
    for side in (ref, cur):
        missing = [name for name, _ in columns if name not in side.names]
        if missing:
            raise ValueError(f"Columns {missing} are missing from the {side.label} data.")
    if not columns:
        raise ValueError("There is no numerical or categorical column to compare.")
    return columns


def _pandas_kind(column: pd.Series) -> str:
    dtype = column.dtype.name
    if dtype.startswith("float"):
        return "numerical"
    if dtype.startswith("int"):
        return "categorical" if column.nunique() <= _INTEGER_CARDINALITY_LIMIT else "numerical"
    if dtype in ("string", "str"):
        return _text_or_categorical(column.nunique(), column.count())
    if dtype == "object":
        present = column.dropna()
        if len(present) and isinstance(present.iloc[0], str) and isinstance(present.iloc[-1], str):
            return _text_or_categorical(column.nunique(), column.count())
        return "other"
    if dtype in ("bool", "category"):
        return "categorical"
    return "other"


def _arrow_kind(column: pa.ChunkedArray) -> str:
    """The kind Evidently infers for this column after ``to_pandas()``, read from the Arrow type."""
    kind = column.type
    if pa.types.is_floating(kind):
        return "numerical"
    if pa.types.is_integer(kind):
        if column.null_count:
            # to_pandas() stores an integer column with nulls as float64.
            return "numerical"
        if pa.types.is_unsigned_integer(kind):
            return "other"
        return "categorical" if _arrow_distinct(column) <= _INTEGER_CARDINALITY_LIMIT else "numerical"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        present = len(column) - column.null_count
        return _text_or_categorical(_arrow_distinct(column), present) if present else "other"
    if pa.types.is_boolean(kind):
        # to_pandas() stores a bool column with nulls as objects, which Evidently leaves out.
        return "other" if column.null_count else "categorical"
    if pa.types.is_dictionary(kind):
        return "categorical"
    return "other"


def _arrow_distinct(column: pa.ChunkedArray) -> int:
    # count_distinct has no kernel for string_view; value_counts covers every type.
    return pc.sum(pc.value_counts(column).field("values").is_valid()).as_py() or 0


def _text_or_categorical(distinct: int, present: int) -> str:
    return "text" if distinct > present * _TEXT_DISTINCT_SHARE else "categorical"


def _is_missing(key: Any) -> bool:
    if isinstance(key, (float, np.floating)):
        return not math.isfinite(key)
    return key is None or key is pd.NA or key is pd.NaT


def _column_drift(name: str, kind: Kind, ref: _Side, cur: _Side, threshold: float | None) -> ColumnDrift:
    if kind == "numerical":
        ref_values = ref.finite_values(name)
        cur_values = cur.finite_values(name)
        few = _few_value_counts(ref_values, cur_values)
        if few is None:
            if ref_values.size <= _SMALL_REFERENCE_ROWS:
                method = KOLMOGOROV_SMIRNOV
                from scipy import stats

                score = float(stats.ks_2samp(ref_values, cur_values).pvalue)
            else:
                method = WASSERSTEIN
                score = _wasserstein_normed(ref_values, cur_values)
            return _verdict(name, kind, method, score, threshold)
        keys, ref_counts, cur_counts = few
    else:
        keys, ref_counts, cur_counts = _aligned_counts(ref.value_counts(name), cur.value_counts(name))

    if ref_counts.sum() <= _SMALL_REFERENCE_ROWS:
        if len(keys) > _BINARY_VALUES:
            return _verdict(name, kind, CHI_SQUARE, _chi_square(ref_counts, cur_counts), threshold)
        return _verdict(name, kind, Z_TEST, _z_test(keys, ref_counts, cur_counts), threshold)
    return _verdict(name, kind, JENSEN_SHANNON, _jensen_shannon(ref_counts, cur_counts), threshold)


def _verdict(name: str, kind: Kind, method: str, score: float, threshold: float | None) -> ColumnDrift:
    limit = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
    if method == KOLMOGOROV_SMIRNOV:
        drifted = score <= limit
    elif method in (CHI_SQUARE, Z_TEST):
        drifted = score < limit
    else:
        drifted = score >= limit
    return ColumnDrift(
        column=name, kind=kind, method=method, score=score, threshold=limit, drifted=bool(drifted)
    )


def _few_value_counts(ref: np.ndarray, cur: np.ndarray) -> tuple[list[Any], np.ndarray, np.ndarray] | None:
    """Aligned value counts when both sides together hold at most 5 distinct values, else None."""
    probe = np.unique(np.concatenate((ref[:_CARDINALITY_PROBE], cur[:_CARDINALITY_PROBE])))
    if probe.size > _FEW_VALUES:
        return None
    ref_keys, ref_n = np.unique(ref, return_counts=True)
    if ref_keys.size > _FEW_VALUES:
        return None
    cur_keys, cur_n = np.unique(cur, return_counts=True)
    keys = np.union1d(ref_keys, cur_keys)
    if keys.size > _FEW_VALUES:
        return None
    ref_counts = np.zeros(keys.size, dtype=np.int64)
    cur_counts = np.zeros(keys.size, dtype=np.int64)
    ref_counts[np.searchsorted(keys, ref_keys)] = ref_n
    cur_counts[np.searchsorted(keys, cur_keys)] = cur_n
    return keys.tolist(), ref_counts, cur_counts


def _aligned_counts(ref: dict[Any, int], cur: dict[Any, int]) -> tuple[list[Any], np.ndarray, np.ndarray]:
    keys = list(ref) + [key for key in cur if key not in ref]
    ref_counts = np.fromiter((ref.get(key, 0) for key in keys), dtype=np.int64, count=len(keys))
    cur_counts = np.fromiter((cur.get(key, 0) for key in keys), dtype=np.int64, count=len(keys))
    return keys, ref_counts, cur_counts


def _chi_square(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    from scipy import stats

    expected = ref_counts * (cur_counts.sum() / ref_counts.sum())
    # A value absent from the reference expects 0: the statistic is inf and p is 0, as in Evidently.
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(stats.chisquare(cur_counts, expected).pvalue)


def _z_test(keys: list[Any], ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    ref_present = np.flatnonzero(ref_counts)
    cur_present = np.flatnonzero(cur_counts)
    if ref_present.size == 1 and cur_present.size == 1 and ref_present[0] == cur_present[0]:
        return 1.0
    # Evidently compares the share of values other than the smallest key, in this order of operations.
    first = keys.index(min(keys))
    n1, n2 = int(ref_counts.sum()), int(cur_counts.sum())
    p1 = float(n1 - int(ref_counts[first])) / n1
    p2 = float(n2 - int(cur_counts[first])) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    from scipy import stats

    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def _jensen_shannon(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    from scipy.spatial import distance

    return float(distance.jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()))


def _wasserstein_normed(ref: np.ndarray, cur: np.ndarray) -> float:
    norm = max(float(np.std(ref)), _MIN_WASSERSTEIN_NORM)
    return _wasserstein(ref, cur) / norm


def _wasserstein(u: np.ndarray, v: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance(u, v)``, sorting ``u`` and ``v`` in place.

    The distance is the integral of |U - V| between consecutive merged values. Once both sides are sorted, a
    stable argsort of their concatenation only merges two runs, which timsort does in linear time, and the
    running count of u values gives n*m*(U - V) exactly in integers, so rounding enters only in the final dot.
    """
    u.sort()
    v.sort()
    n, m = u.size, v.size
    merged = np.concatenate((u, v))
    order = np.argsort(merged, kind="stable")
    merged = merged[order]
    gaps = np.diff(merged)
    del merged
    # At merged position k: n*m*(U - V) = (#u)*m - (#v)*n with #v = k + 1 - #u, i.e. (#u)*(n + m) - (k + 1)*n.
    scaled = np.cumsum(order[:-1] < n, dtype=np.int64)
    del order
    scaled *= n + m
    scaled -= np.arange(n, n * (n + m), n, dtype=np.int64)
    np.abs(scaled, out=scaled)
    return float(np.dot(scaled.astype(np.float64), gaps)) / (n * m)
