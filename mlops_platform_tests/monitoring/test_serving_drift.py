"""Drift of the served traffic: requests logged to a real inference_log Delta table, against a known reference."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_platform.defs.monitoring.inputs import served_records
from mlops_platform.monitoring.drift import DriftResult
from mlops_platform.monitoring.serving_drift import serving_drift
from mlops_platform.resources.warehouse import DeltaWarehouse
from mlops_platform.serving.inference_table import (
    DAY,
    INFERENCE_SCHEMA,
    INFERENCE_TABLE,
    SERVED_VERSION,
    InferenceRecord,
    json_objects,
    to_table,
)
from mlops_platform.settings import load_settings

CALM, SHIFTED, QUIET_DAY = dt.date(2013, 6, 1), dt.date(2013, 6, 2), dt.date(2013, 6, 3)
MODEL = "flights_delay"
NUMERICAL = ["dep_hour", "temp"]
CATEGORICAL = ["carrier"]


def features(rng: np.random.Generator, rows: int, *, shift: float) -> pd.DataFrame:
    return pd.DataFrame({
        "dep_hour": rng.normal(13 + shift, 3, rows),
        "temp": rng.normal(60 + 10 * shift, 8, rows),
        "carrier": rng.choice(["UA", "AA", "B6", "DL"] if shift == 0 else ["WN", "EV"], rows),
    })


def requests(day: dt.date, frame: pd.DataFrame, *, model: str = MODEL, status: int = 200) -> list[InferenceRecord]:
    """One request per 10 records, timestamped within ``day`` (UTC)."""
    noon = int(dt.datetime.combine(day, dt.time(12), dt.UTC).timestamp() * 1_000_000)
    names = list(frame.columns)
    chunks = [frame.iloc[start:start + 10] for start in range(0, len(frame), 10)]
    return [InferenceRecord(
        f"{day}-{model}-{status}-{index}", None, noon + index * 1_000_000, status, 3.5, "{}", "{}", "champion",
        "127.0.0.1", "flights", "flights-delay", model, "4", json_objects(names, chunk.itertuples(index=False)), 0,
    ) for index, chunk in enumerate(chunks)]


@pytest.fixture
def logged(tmp_path):
    rng = np.random.default_rng(7)
    warehouse = DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="local")
    reference = features(rng, 4_000, shift=0)
    records = [*requests(CALM, features(rng, 600, shift=0)), *requests(SHIFTED, features(rng, 600, shift=1.5)),
               # Neither another model's traffic nor failed requests are the monitored model's inputs.
               *requests(CALM, features(rng, 200, shift=3), model="other_model"),
               *requests(CALM, features(rng, 200, shift=3), status=400)]
    warehouse.append(INFERENCE_SCHEMA, INFERENCE_TABLE, to_table(records))
    return warehouse, reference


def model_config():
    return load_settings("local").usecases["flights"].models["delay"].model_copy(update={"categorical": CATEGORICAL})


def test_served_records_are_the_models_answered_records_by_day(logged):
    warehouse, _ = logged
    served = served_records(warehouse, MODEL, CALM, QUIET_DAY, [*NUMERICAL, *CATEGORICAL, "not_logged"])

    assert served.groupby(DAY).size().to_dict() == {CALM: 600, SHIFTED: 600}
    assert list(served.columns) == [DAY, SERVED_VERSION, *NUMERICAL, *CATEGORICAL]
    assert set(served[SERVED_VERSION]) == {"4"}


def test_calm_traffic_does_not_drift_and_shifted_traffic_does(logged):
    warehouse, reference = logged
    served = served_records(warehouse, MODEL, CALM, QUIET_DAY, [*NUMERICAL, *CATEGORICAL])
    decide = lambda day: serving_drift(served, day, reference, model_config(), NUMERICAL, CATEGORICAL,
                                       threshold=None, drift_share=0.5)

    calm, shifted = decide(CALM), decide(SHIFTED)

    assert isinstance(calm, DriftResult) and not calm.dataset_drifted and calm.share_drifted == 0
    assert isinstance(shifted, DriftResult) and shifted.dataset_drifted
    assert {c.column for c in shifted.columns if c.drifted} == {"dep_hour", "temp", "carrier"}
    assert decide(QUIET_DAY) == "skipped: no served requests on 2013-06-03"


def test_without_an_inference_table_the_serving_scope_is_skipped(tmp_path):
    warehouse = DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="local")
    served = served_records(warehouse, MODEL, CALM, CALM, NUMERICAL)

    assert served is None
    assert serving_drift(served, CALM, pd.DataFrame(), model_config(), NUMERICAL, [], threshold=None,
                         drift_share=0.5) == "skipped: no monitoring.inference_log table"
