"""Profile metrics: what each column of a day looked like, numbers people can check by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mlops_platform.monitoring.profile import profile


def test_numerical_and_categorical_columns_get_their_metrics_with_nulls_and_infinities_left_out():
    frame = pd.DataFrame({"temp": [10.0, 20.0, np.nan, np.inf], "carrier": ["UA", "AA", "UA", None]})

    temp, carrier = profile(frame, ["temp"], ["carrier"])

    assert (temp["column"], temp["kind"], temp["count"], temp["num_nulls"]) == ("temp", "numerical", 2, 1)
    assert temp["percent_null"] == 25.0 and temp["distinct_count"] == 2
    assert temp["avg"] == 15.0
    assert math.isclose(temp["stddev"], math.sqrt(50.0))
    assert (temp["min"], temp["max"]) == (10.0, 20.0)
    assert (carrier["kind"], carrier["count"], carrier["num_nulls"]) == ("categorical", 3, 1)
    assert carrier["percent_null"] == 25.0 and carrier["distinct_count"] == 2
    assert carrier["avg"] is None and carrier["max"] is None


def test_a_column_without_values_is_profiled_as_empty_not_refused():
    (gust,) = profile(pd.DataFrame({"gust": [np.nan, np.nan]}), ["gust"], [])

    assert gust["count"] == 0 and gust["num_nulls"] == 2 and gust["percent_null"] == 100.0
    assert all(gust[name] is None for name in ("avg", "stddev", "min", "max"))
