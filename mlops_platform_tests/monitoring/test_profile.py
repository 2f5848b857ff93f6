"""Profile metrics: what each column of a day looked like, numbers people can check by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mlops_platform.monitoring.profile import profile


def test_numerical_and_categorical_columns_get_their_metrics_with_nulls_and_infinities_left_out():
    frame = pd.DataFrame({"temp": [10.0, 20.0, np.nan, np.inf], "carrier": ["UA", "AA", "UA", None]})

    rows = {(row["column"], row["metric"]): row["value"] for row in profile(frame, ["temp"], ["carrier"])}

    assert rows[("temp", "count")] == 2
    assert rows[("temp", "null_share")] == 0.25
    assert rows[("temp", "mean")] == 15.0
    assert math.isclose(rows[("temp", "std")], math.sqrt(50.0))
    assert (rows[("temp", "min")], rows[("temp", "max")]) == (10.0, 20.0)
    assert rows[("carrier", "count")] == 3
    assert rows[("carrier", "null_share")] == 0.25
    assert rows[("carrier", "distinct")] == 2


def test_a_column_without_values_is_profiled_as_empty_not_refused():
    rows = {row["metric"]: row["value"] for row in profile(pd.DataFrame({"gust": [np.nan, np.nan]}), ["gust"], [])}

    assert rows["count"] == 0 and rows["null_share"] == 1.0
    assert all(math.isnan(rows[name]) for name in ("mean", "std", "min", "max"))
