"""The served traffic as monitoring sees it: one row per scored record of the inference table, by day.

A request's day is the UTC date it was answered, which is when the model's inputs were what they were. Only answered
requests (status 200) of the monitored registered model count; each of their records contributes the features the
model scored. The table is read through ``serving/inference_table.py``, the one reader of the local log and of a
Databricks AI Gateway inference table; ``defs/monitoring/inputs.py`` reads it and hands the records in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd

from mlops_platform.ml.scoring import feature_frame
from mlops_platform.monitoring.drift import DriftResult, detect_drift
from mlops_platform.serving.inference_table import DAY, INFERENCE_SCHEMA, INFERENCE_TABLE
from mlops_platform.settings import ModelConfig


def serving_drift(served: pd.DataFrame | None, day: dt.date, reference: pd.DataFrame, config: ModelConfig,
                  numerical: Sequence[str], categorical: Sequence[str], *, threshold: float | None,
                  drift_share: float) -> DriftResult | str:
    """The day's served records (``serving.inference_table.served_records``) against ``reference``, the same typed training
    reference the batch scope uses, on the features the endpoint logs; or why there is nothing to compare."""
    if served is None:
        return f"skipped: no {INFERENCE_SCHEMA}.{INFERENCE_TABLE} table"
    today = served[served[DAY] == day]
    if today.empty:
        return f"skipped: no served requests on {day.isoformat()}"
    logged = [column for column in reference.columns if column in today.columns]
    if not logged:
        return "skipped: the endpoint logs none of the model's features"
    return detect_drift(reference[logged], feature_frame(today, config, logged),
                        numerical=[c for c in numerical if c in logged],
                        categorical=[c for c in categorical if c in logged], threshold=threshold,
                        drift_share=drift_share)
