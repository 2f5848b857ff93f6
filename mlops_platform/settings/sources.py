"""Sources the landing zone receives and the gold tables built from them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlops_platform.settings.base import TEMPORAL_TYPES, ColumnType, FieldError, Severity, _Strict


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
            raise FieldError("min", f"rule '{self.name}': a range rule needs min, max or both")
        if self.kind == "accepted_values" and not self.values:
            raise FieldError("values", f"rule '{self.name}': an accepted_values rule needs a non-empty 'values' list")
        return self


class Partition(_Strict):
    """How a source's rows map to a day, the unit its tables are partitioned and replaced by. The day is

    - ``from_parts``: assembled from year / month / day columns (integers);
    - ``from_column``: the date of a declared ``date`` or ``datetime`` column;
    - neither: ``column`` itself, a declared ``date`` column.

    Silver holds the day in ``column`` (added when it is not a declared column).
    """

    column: str
    from_parts: list[str] | None = Field(default=None, min_length=3, max_length=3)
    from_column: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Partition:
        if self.from_parts and self.from_column:
            raise FieldError("from_column", "give from_parts or from_column, not both", self.from_column)
        return self

    @property
    def day_column(self) -> str | None:
        """The declared column the day is the date of; None when it is assembled from parts."""
        return None if self.from_parts else (self.from_column or self.column)


class ReplaceGuard(_Strict):
    """How much worse a new version of a day may be than the one it replaces before the run refuses it.

    Applies when the day already holds rows: a drop beyond ``max_row_drop`` (share of the old rows) or a new
    version with more than ``max_quarantine_share`` of its rows quarantined fails the run, and every table keeps
    its previous version. ``allow_shrink`` (or the run tag ``mlops/allow_shrink``, or ``mlops run --allow-shrink``)
    accepts it once an operator has looked.
    """

    max_row_drop: float = Field(default=0.5, ge=0.0, le=1.0)
    max_quarantine_share: float = Field(default=0.2, ge=0.0, le=1.0)
    allow_shrink: bool = False


class SourceConfig(_Strict):
    """A source the landing zone receives: its file format, typed columns, natural keys and quality rules.

    Without a ``partition`` it is a snapshot source: every delivery is a full export, the newest replaces the rest.
    """

    description: str
    format: Literal["csv", "jsonl"]
    columns: dict[str, ColumnType]
    keys: list[str] = Field(min_length=1)
    partition: Partition | None = None
    rules: list[Rule] = []
    max_quarantine_share: float = Field(default=0.01, ge=0.0, le=1.0)
    # Copies of a natural key that disagree on a value: the latest landed wins, and the check reports them.
    conflict_severity: Severity = "WARN"
    allow_schema_evolution: bool = False

    @model_validator(mode="after")
    def _columns_exist(self) -> SourceConfig:
        known = set(self.columns) | ({self.partition.column} if self.partition else set())
        for i, name in enumerate(self.keys):
            if name not in known:
                raise FieldError(("keys", i), f"key column '{name}' is not among the declared columns", name)
        for i, rule in enumerate(self.rules):
            if rule.column not in known:
                raise FieldError(("rules", i, "column"), f"rule '{rule.name}' names unknown column '{rule.column}'",
                                 rule.column)
        partition = self.partition
        if partition and partition.from_parts:
            wrong = [p for p in partition.from_parts if self.columns.get(p) != "int"]
            if wrong:
                raise FieldError("partition.from_parts", f"partition parts {wrong} are not declared int columns",
                                 partition.from_parts)
        elif partition:
            day = partition.day_column
            field = "partition.from_column" if partition.from_column else "partition.column"
            if self.columns.get(day) not in TEMPORAL_TYPES:
                raise FieldError(field, f"'{day}' must be a declared date or datetime column (declared: "
                                        f"{self.columns.get(day, 'not declared')})", day)
            if not partition.from_column and self.columns[day] != "date":
                raise FieldError(field, f"'{day}' is a datetime: name the day column and give from_column: {day}",
                                 day)
        return self

    @property
    def is_daily(self) -> bool:
        return self.partition is not None


class GoldConfig(_Strict):
    """A gold table built by a function of the use case's module from silver tables.

    With a ``partition_column`` it is replaced day by day from its daily inputs; without one it is rebuilt whole
    from snapshot inputs. ``reconcile_with`` names the input it must hold exactly one row per row of.
    """

    description: str
    builder: str
    inputs: list[str] = Field(min_length=1)
    partition_column: str | None = None
    keys: list[str] = Field(min_length=1)
    reconcile_with: str | None = None
    checks: list[Rule] = []
    allow_schema_evolution: bool = False

    @property
    def is_daily(self) -> bool:
        return self.partition_column is not None
