"""Feature tables and the training set that looks them up."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlops_platform.settings.base import FieldError, _Strict


class FeatureTableConfig(_Strict):
    """A governed feature table. Two kinds, both pure configuration:

    - ``rolling``: aggregates of a daily table (silver or gold, by its name) over windows of days strictly before
      each day, per ``group_by`` (or over all rows of those days without it); keyed by ``group_by`` + the timestamp
      key. Knowable before any row of that day.
    - ``lookup``: columns of a silver or gold table by its keys (``rename`` maps source to feature column names).
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
            for field in ("prefix", "windows_days", "aggregations"):
                if not getattr(self, field):
                    raise FieldError(field, f"a rolling feature table needs {field}")
            expected = [*self.group_by, self.date_key]
            if self.keys != expected:
                raise FieldError("keys", f"a rolling table is keyed by its group_by and timestamp key: {expected}",
                                 self.keys)
            produced = set(self.rolling_columns())
            if produced != set(self.columns):
                raise FieldError("columns", f"columns must describe exactly the produced features {sorted(produced)}",
                                 sorted(self.columns))
        return self

    @property
    def date_key(self) -> str:
        """The column holding the day a rolling feature row describes."""
        return self.timestamp_key or "feature_date"

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


class SplitConfig(_Strict):
    """How the training rows are divided into train / validation / test.

    - ``time`` (the default): the newest ``test_days`` are test, the ``validation_days`` before them validation, the
      rest of ``window_days`` train. Needs a day-partitioned source.
    - ``random``: a seeded draw per row, in the fractions given; stratified by the ``stratify_by`` label when set, so
      every split keeps the class balance.
    - ``hash``: by a hash of ``hash_keys`` (default: the source's keys), so a row keeps its split as the table grows.
    """

    by: Literal["time", "random", "hash"] = "time"
    window_days: int = Field(default=120, gt=0, description="time: days of history, ending at the newest day")
    validation_days: int = Field(default=7, gt=0)
    test_days: int = Field(default=7, gt=0)
    validation_fraction: float = Field(default=0.15, gt=0, lt=1)
    test_fraction: float = Field(default=0.15, gt=0, lt=1)
    seed: int = 42
    stratify_by: str | None = None
    hash_keys: list[str] = []

    @model_validator(mode="after")
    def _fits(self) -> SplitConfig:
        if self.validation_fraction + self.test_fraction >= 1:
            raise FieldError("test_fraction", "validation_fraction + test_fraction must leave rows to train on",
                             self.test_fraction)
        if self.stratify_by and self.by != "random":
            raise FieldError("stratify_by", f"stratify_by applies to random splits, not '{self.by}'",
                             self.stratify_by)
        if self.hash_keys and self.by != "hash":
            raise FieldError("hash_keys", f"hash_keys apply to hash splits, not '{self.by}'", self.hash_keys)
        return self


class TrainingSetConfig(_Strict):
    source: str = Field(description="gold table holding the labels and the request-time fields")
    lookups: list[FeatureLookup] = Field(default=[], description="feature tables joined by key (none: only the "
                                                                 "source's own columns are features)")
    request_fields: list[str] = Field(description="columns of the source a caller knows at request time, used as "
                                                  "features as they are")
    labels: list[str] = Field(min_length=1)
    split: SplitConfig = SplitConfig()
    allow_schema_evolution: bool = Field(
        default=True, description="a changed schema starts a new table version; false refuses the change")
