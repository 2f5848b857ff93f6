"""No good day replaced by a worse one: the decision taken before a write replaces days that already hold rows.

A landing file that arrives empty, cut short or in another date format is ingested like any other; what must not
happen is that its day, already processed with hundreds of good rows, silently becomes a day of zero rows or a day
of quarantine. So before bronze, silver or gold replaces days, the writer compares the new version with the rows
the table holds for them now and refuses beyond the use case's ``replace_guard`` limits. Plain Python: the assets
raise its refusal as the run's failure, before any table of the day is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlops_platform.settings import ReplaceGuard


class ShrinkRefused(ValueError):
    """A write would replace days holding rows with a much smaller or mostly quarantined version of them."""

    def __init__(self, verdict: Replacement) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


@dataclass(frozen=True)
class Replacement:
    """A proposed replacement of some days of a table, and what the guard found wrong with it."""

    table: str
    days: str
    old_rows: int
    new_rows: int
    quarantined: int
    source_rows: int
    problems: tuple[str, ...]

    @property
    def drop(self) -> float:
        return (self.old_rows - self.new_rows) / self.old_rows if self.old_rows else 0.0

    @property
    def quarantine_share(self) -> float:
        return self.quarantined / self.source_rows if self.source_rows else 0.0

    @property
    def refused(self) -> bool:
        return bool(self.problems)

    @property
    def message(self) -> str:
        if not self.problems:
            return f"{self.table} {self.days}: {self.new_rows} rows replace {self.old_rows}"
        return (f"refusing to replace {self.days} of {self.table}: {'; '.join(self.problems)}. Nothing was written: "
                f"every table keeps its previous version. If the new data is right, re-run with --allow-shrink "
                f"(or the run tag mlops/allow_shrink=true, or replace_guard.allow_shrink in the use case)")

    def metadata(self) -> dict[str, object]:
        return {"table": self.table, "days": self.days, "old_rows": self.old_rows, "new_rows": self.new_rows,
                "row_drop": round(self.drop, 4), "quarantined_rows": self.quarantined,
                "quarantine_share": round(self.quarantine_share, 4), "problems": list(self.problems)}


def judge_replacement(table: str, days: str, *, old_rows: int, new_rows: int, limits: ReplaceGuard,
                      quarantined: int = 0, source_rows: int | None = None) -> Replacement:
    """What replacing ``old_rows`` with ``new_rows`` (of which ``quarantined`` of ``source_rows`` read went to
    quarantine) would do, and the limits it breaks. A table or day without rows yet accepts anything: there is
    nothing good to lose. An empty new version of a day with rows is a 100% drop."""
    source = new_rows if source_rows is None else source_rows
    verdict = Replacement(table, days, old_rows, new_rows, quarantined, source, ())
    if old_rows == 0:
        return verdict
    problems = []
    if verdict.drop > limits.max_row_drop:
        empty = " (the new files hold no rows)" if source == 0 else ""
        problems.append(f"{new_rows} rows would replace {old_rows}, a {verdict.drop:.1%} drop{empty} (limit "
                        f"{limits.max_row_drop:.0%})")
    if verdict.quarantine_share > limits.max_quarantine_share:
        problems.append(f"{quarantined} of the {source} rows read would be quarantined ({verdict.quarantine_share:.1%}, "
                        f"limit {limits.max_quarantine_share:.0%})")
    return Replacement(table, days, old_rows, new_rows, quarantined, source, tuple(problems))
