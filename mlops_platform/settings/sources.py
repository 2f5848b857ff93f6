"""Sources the landing zone receives and the gold tables built from them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from mlops_platform.settings.base import ColumnType, Severity, _Strict


class Rule(_Strict):
    """A row-level data-quality rule. Nulls pass ``range`` and ``accepted_values``; ``not_null`` catches them."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["not_null", "range", "accepted_values"]
    column: str
    min: float | None = None
    max: float | None = None
    values: list[str | int | float | bool] | None = None
    severity: Severity = "ERROR"
    # A table-level check built from the rule passes while at most this share of rows breaks it.
    max_failing_share: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _arguments_fit_kind(self) -> Rule:
        if self.kind == "range" and self.min is None and self.max is None:
            raise ValueError(f"rule '{self.name}': a range rule needs min, max or both")
        if self.kind == "accepted_values" and not self.values:
            raise ValueError(f"rule '{self.name}': an accepted_values rule needs a non-empty 'values' list")
        return self


class DailyPartition(_Strict):
    """How a source's rows map to a day: the date is assembled from year/month/day columns."""

    column: str
    from_parts: Annotated[list[str], Field(min_length=3, max_length=3)]


class SourceConfig(_Strict):
    """A source the landing zone receives: its file format, typed columns, natural keys and quality rules."""

    description: str
    format: Literal["csv", "jsonl"]
    columns: dict[str, ColumnType]
    keys: list[str] = Field(min_length=1)
    partition: DailyPartition | None = None
    rules: list[Rule] = []
    max_quarantine_share: float = Field(default=0.01, ge=0.0, le=1.0)
    # Copies of a natural key that disagree on a value: the latest landed wins, and the check reports them.
    conflict_severity: Severity = "WARN"
    allow_schema_evolution: bool = False

    @model_validator(mode="after")
    def _columns_exist(self) -> SourceConfig:
        known = set(self.columns) | ({self.partition.column} if self.partition else set())
        for name in self.keys:
            if name not in known:
                raise ValueError(f"key column '{name}' is not among the declared columns")
        for rule in self.rules:
            if rule.column not in known:
                raise ValueError(f"rule '{rule.name}' names unknown column '{rule.column}'")
        if self.partition:
            missing = [p for p in self.partition.from_parts if p not in self.columns]
            if missing:
                raise ValueError(f"partition parts {missing} are not among the declared columns")
        return self

    @property
    def is_daily(self) -> bool:
        return self.partition is not None


class GoldConfig(_Strict):
    """A gold table built by a function of the use case's module from silver tables."""

    description: str
    builder: str
    inputs: list[str] = Field(min_length=1)
    partition_column: str
    keys: list[str] = Field(min_length=1)
    reconcile_with: str
    checks: list[Rule] = []

