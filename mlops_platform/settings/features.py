"""Feature tables and the training set that looks them up."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlops_platform.settings.base import _Strict


class FeatureTableConfig(_Strict):
    """A governed feature table. Two kinds, both pure configuration:

    - ``rolling``: aggregates of a daily ``source`` table over windows of days strictly before each day, per
      ``group_by``; keyed by ``group_by`` + ``feature_date``. Knowable before any flight of ``feature_date``.
    - ``lookup``: columns of a silver table by its keys (``rename`` maps source to feature column names).
    """

    description: str
    kind: Literal["rolling", "lookup"]
    source: str
    layer: Literal["silver", "gold"] = "gold"
    keys: list[str] = Field(min_length=1)
    timestamp_key: str | None = None
    group_by: list[str] = []
    prefix: str = ""
    windows_days: list[int] = []
    aggregations: dict[str, Literal["mean", "sum", "count", "max"]] = {}
    rename: dict[str, str] = {}
    columns: dict[str, str] = Field(min_length=1, description="feature column -> description")

    @model_validator(mode="after")
    def _kind_arguments(self) -> FeatureTableConfig:
        if self.kind == "rolling":
            if not (self.group_by and self.prefix and self.windows_days and self.aggregations):
                raise ValueError("a rolling feature table needs group_by, prefix, windows_days and aggregations")
            produced = set(self.rolling_columns())
            if produced != set(self.columns):
                raise ValueError(f"columns must describe exactly the produced features {sorted(produced)}")
        return self

    def rolling_columns(self) -> list[str]:
        """Names of a rolling table's features: ``<prefix>_<column>_<agg>_<N>d`` and ``<prefix>_flights_<N>d``."""
        return [
            name
            for days in self.windows_days
            for name in [
                *(f"{self.prefix}_{column}_{agg}_{days}d" for column, agg in self.aggregations.items()),
                f"{self.prefix}_rows_{days}d",
            ]
        ]


class FeatureLookup(_Strict):
    """Join a feature table into the training set: ``keys`` maps training-set columns to the table's keys."""

    table: str
    keys: dict[str, str] = Field(min_length=1)


class TrainingSetConfig(_Strict):
    source: str = Field(description="gold table holding the labels and request-time fields")
    lookups: list[FeatureLookup] = Field(min_length=1)
    request_fields: list[str] = Field(description="columns a caller knows at request time, used as features")
    labels: list[str] = Field(min_length=1)
    window_days: int = Field(default=120, gt=0, description="days of history, ending at the newest gold day")
    validation_days: int = Field(default=7, gt=0)
    test_days: int = Field(default=7, gt=0)

