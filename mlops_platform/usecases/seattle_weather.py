"""The Seattle weather use case's own logic: where its data comes from and how its gold table is assembled.

A daily time series with one row a day: Seattle's weather of 2012-2015 (the ``vega_datasets`` package ships it).
Everything else is configuration in ``config/usecases/seattle_weather.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping

import narwhals as nw
import polars as pl


def source_data() -> dict[str, pl.DataFrame]:
    """One observation per day: precipitation (mm), highest and lowest temperature (C), wind (m/s), and a word."""
    from vega_datasets import local_data

    weather = pl.from_pandas(local_data.seattle_weather())
    return {"weather": weather.with_columns(pl.col("date").cast(pl.Date))}


def build_gold_days(tables: Mapping[str, nw.LazyFrame]) -> nw.LazyFrame:
    """One row per day: its weather, and the calendar a forecaster knows in advance (month, day of the year)."""
    day = nw.col("date")
    return tables["weather"].select(
        "date", "precipitation", "temp_max", "temp_min", "wind", "weather",
        day.dt.month().alias("month"), day.dt.ordinal_day().alias("day_of_year"),
    )
