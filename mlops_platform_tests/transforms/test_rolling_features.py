"""Rolling features on a fixture small enough to compute by hand: the expected rows are written out, not re-derived
with a second implementation of the same logic."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from mlops_platform.settings import FeatureTableConfig
from mlops_platform.transforms.engine import PolarsEngine
from mlops_platform.transforms.features import rolling_features, window_pairs

JAN_1, JAN_2, JAN_3 = dt.date(2013, 1, 1), dt.date(2013, 1, 2), dt.date(2013, 1, 3)
AGGREGATIONS = {"dep_delay": "mean", "is_cancelled": "sum", "distance": "max", "air_time": "count"}
SPEC = FeatureTableConfig(
    description="a carrier's recent flights", kind="rolling", source="flights", group_by=["carrier"],
    prefix="carrier", keys=["carrier", "feature_date"], timestamp_key="feature_date", windows_days=[1, 2],
    aggregations=AGGREGATIONS,
    columns={f"carrier_{c}_{a}_{w}d": "-" for w in (1, 2) for c, a in AGGREGATIONS.items()}
    | {f"carrier_rows_{w}d": "-" for w in (1, 2)},
)
FLIGHTS = pa.table({
    "flight_date": pa.array([JAN_1, JAN_1, JAN_1, JAN_2, JAN_3], pa.date32()),
    "carrier": ["AA", "AA", "UA", "AA", "UA"],
    "dep_delay": [10.0, None, 4.0, 20.0, -2.0],          # the cancelled AA flight has no delay
    "is_cancelled": [False, True, False, False, False],
    "distance": [100.0, 200.0, 300.0, 150.0, 500.0],
    "air_time": [50.0, None, 60.0, 40.0, 70.0],
})
COLUMNS = ["dep_delay_mean", "is_cancelled_sum", "distance_max", "air_time_count", "rows"]


def row(carrier: str, day: dt.date, one_day: tuple, two_days: tuple) -> dict:
    values = {"carrier": carrier, "feature_date": day}
    for days, numbers in ((1, one_day), (2, two_days)):
        values |= {f"carrier_{column}_{days}d": number for column, number in zip(COLUMNS, numbers, strict=True)}
    return values


# By hand, each window strictly before the feature date (1 day: the day before; 2 days: the two days before):
#                                  mean delay  cancelled  max distance  air times  rows
EXPECTED = [
    row("AA", JAN_2, one_day=(10.0, 1.0, 200.0, 1.0, 2), two_days=(10.0, 1.0, 200.0, 1.0, 2)),
    row("AA", JAN_3, one_day=(20.0, 0.0, 150.0, 1.0, 1), two_days=(15.0, 1.0, 200.0, 2.0, 3)),
    row("UA", JAN_2, one_day=(4.0, 0.0, 300.0, 1.0, 1), two_days=(4.0, 0.0, 300.0, 1.0, 1)),
    # UA flew nothing on Jan 2: an empty 1-day window has no mean and no max, zero sums and counts. Its Jan 3
    # flight is on the feature date itself and counts nowhere.
    row("UA", JAN_3, one_day=(None, 0.0, None, 0.0, 0), two_days=(4.0, 0.0, 300.0, 1.0, 1)),
]


def test_rolling_features_match_rows_computed_by_hand():
    engine = PolarsEngine()
    pairs = engine.from_arrow(window_pairs([JAN_2, JAN_3], SPEC.windows_days))

    built = engine.to_arrow(rolling_features(engine.from_arrow(FLIGHTS), SPEC, "flight_date", pairs))

    assert sorted(built.to_pylist(), key=lambda r: (r["carrier"], r["feature_date"])) == EXPECTED
    assert built.column_names == ["carrier", "feature_date", *SPEC.rolling_columns()]
