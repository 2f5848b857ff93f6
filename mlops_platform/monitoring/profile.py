"""Profile metrics of a day's model inputs and outputs: the counterpart of Lakehouse Monitoring's profile table.

One row per column and metric. Numerical columns get their count, share of nulls, mean, standard deviation,
minimum and maximum; categorical ones their count, share of nulls and number of distinct values. Drift says that a
column moved; the profile says where to, and trends of it are a query over the days.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

NUMERICAL_METRICS = ("count", "null_share", "mean", "std", "min", "max")
CATEGORICAL_METRICS = ("count", "null_share", "distinct")


def profile(frame: pd.DataFrame, numerical: Sequence[str], categorical: Sequence[str]) -> list[dict[str, object]]:
    """``{"column", "kind", "metric", "value"}`` for every metric of every column; NaN where a metric is undefined."""
    rows = []
    total = len(frame)
    for column in numerical:
        values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        finite = values[np.isfinite(values)]
        stats = {
            "count": float(finite.size),
            "null_share": float(values.isna().mean()) if total else float("nan"),
            "mean": float(finite.mean()) if finite.size else float("nan"),
            "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
            "min": float(finite.min()) if finite.size else float("nan"),
            "max": float(finite.max()) if finite.size else float("nan"),
        }
        rows += [{"column": column, "kind": "numerical", "metric": name, "value": stats[name]}
                 for name in NUMERICAL_METRICS]
    for column in categorical:
        values = frame[column]
        stats = {
            "count": float(values.notna().sum()),
            "null_share": float(values.isna().mean()) if total else float("nan"),
            "distinct": float(values.nunique(dropna=True)),
        }
        rows += [{"column": column, "kind": "categorical", "metric": name, "value": stats[name]}
                 for name in CATEGORICAL_METRICS]
    return rows
