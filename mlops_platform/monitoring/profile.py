"""Profile metrics of a day's model inputs and outputs: the counterpart of data profiling's profile table.

One row per column with data profiling's metric names: ``count`` (non-null values; finite ones for a numerical
column), ``num_nulls``, ``percent_null`` (a percentage, as Databricks reports it), ``distinct_count``, and for a
numerical column ``avg``, ``stddev``, ``min`` and ``max`` (None where undefined). Drift says that a column moved;
the profile says where to, and trends of it are a query over the days.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

NUMERICAL = "numerical"
CATEGORICAL = "categorical"


def _or_none(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def profile(frame: pd.DataFrame, numerical: Sequence[str], categorical: Sequence[str]) -> list[dict[str, object]]:
    """``{"column", "kind", "count", "num_nulls", "percent_null", "distinct_count", "avg", "stddev", "min", "max"}``
    for every column."""
    rows = []
    total = len(frame)

    def nulls(values: pd.Series) -> dict[str, object]:
        missing = int(values.isna().sum())
        return {"num_nulls": missing, "percent_null": 100.0 * missing / total if total else None}

    for column in numerical:
        values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        finite = values[np.isfinite(values)].to_numpy()
        rows.append({
            "column": column, "kind": NUMERICAL, "count": int(finite.size), **nulls(values),
            "distinct_count": int(np.unique(finite).size),
            "avg": _or_none(finite.mean()) if finite.size else None,
            "stddev": _or_none(finite.std(ddof=1)) if finite.size > 1 else None,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
        })
    for column in categorical:
        values = frame[column]
        rows.append({"column": column, "kind": CATEGORICAL, "count": int(values.notna().sum()), **nulls(values),
                     "distinct_count": int(values.nunique(dropna=True)), "avg": None, "stddev": None, "min": None,
                     "max": None})
    return rows
