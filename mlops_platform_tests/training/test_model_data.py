"""The rows the gate compares models on, built from the test split alone, are the rows built from the whole table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlops_platform.ml.model_data import held_out, held_out_frame, model_frame
from mlops_platform_tests.training.conftest import ORDER_BY


@pytest.mark.parametrize("model", ["delay", "arrival_delay"])
def test_the_held_out_frame_is_the_test_split_of_the_whole_model_frame(usecase, training_table, features, model):
    config = usecase.models[model]
    # Rows in another order, as another Delta file order would return them.
    shuffled = training_table.take(pa.array(np.random.default_rng(3).permutation(training_table.num_rows)))

    expected = held_out(model_frame(training_table, config, features, ORDER_BY))
    actual = held_out_frame(shuffled, config, features, ORDER_BY)

    assert len(actual) > 0
    pd.testing.assert_frame_equal(actual, expected)
