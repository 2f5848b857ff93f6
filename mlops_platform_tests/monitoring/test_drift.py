"""detect_drift against the real Evidently 0.7.23 DataDriftPreset, run on the same data in the same test.

Every expected method, threshold, verdict and score comes from Evidently's snapshot; the only other expectations
are facts built into the data (a column shifted on purpose drifts, identical data does not). Each scenario runs
with a reference of at most 1,000 rows (p-value tests) and one above (distance tests).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import evidently
import numpy as np
import pandas as pd
import polars as pl
import pytest
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from mlops_platform.monitoring.drift import (
    CHI_SQUARE,
    EVIDENTLY_LIBRARY_DIR,
    JENSEN_SHANNON,
    KOLMOGOROV_SMIRNOV,
    WASSERSTEIN,
    Z_TEST,
    DriftResult,
    detect_drift,
    render_html_report,
)

SIZES = {"small": (600, 500), "large": (1500, 1200)}


class EvidentlyColumn(NamedTuple):
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


class EvidentlyResult(NamedTuple):
    columns: list[EvidentlyColumn]
    share_drifted: float
    dataset_drifted: bool


def evidently_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numerical: list[str] | None = None,
    categorical: list[str] | None = None,
    threshold: float | None = None,
) -> EvidentlyResult:
    """Evidently's per-column ValueDrift results and its DriftedColumnsCount verdict, read from the snapshot."""
    if numerical is not None or categorical is not None:
        reference, current = (
            Dataset.from_pandas(
                frame,
                data_definition=DataDefinition(numerical_columns=numerical, categorical_columns=categorical),
            )
            for frame in (reference, current)
        )
    snapshot = Report([DataDriftPreset(threshold=threshold)], include_tests=True).run(
        current_data=current, reference_data=reference
    )
    result = snapshot.dict()
    failed = {test["metric_config"]["metric_id"]: test["status"] == "FAIL" for test in result["tests"]}
    columns = []
    share, dataset_drifted = None, None
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"] == "evidently:metric_v2:ValueDrift":
            columns.append(
                EvidentlyColumn(
                    config["column"],
                    config["method"],
                    metric["value"],
                    config["threshold"],
                    failed[metric["id"]],
                )
            )
        elif config["type"] == "evidently:metric_v2:DriftedColumnsCount":
            share, dataset_drifted = metric["value"]["share"], failed[metric["id"]]
    assert share is not None, "the snapshot has no DriftedColumnsCount metric"
    return EvidentlyResult(columns, share, dataset_drifted)


def assert_same_as_evidently(ours: DriftResult, theirs: EvidentlyResult) -> None:
    assert [c.column for c in ours.columns] == [c.column for c in theirs.columns]
    for mine, their in zip(ours.columns, theirs.columns):
        assert (mine.method, mine.threshold, mine.drifted) == (
            their.method,
            their.threshold,
            their.drifted,
        ), mine.column
        assert mine.score == pytest.approx(their.score, rel=1e-6, abs=0), mine.column
    assert ours.share_drifted == pytest.approx(theirs.share_drifted)
    assert ours.dataset_drifted == theirs.dataset_drifted


def numeric_shift(rng: np.random.Generator, n_ref: int, n_cur: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    def frame(n: int, shift: float) -> pd.DataFrame:
        return pd.DataFrame({"shifted": rng.normal(shift, 1.0, n), "steady": rng.normal(5.0, 2.0, n)})

    return frame(n_ref, 0.0), frame(n_cur, 0.8)


def scale_change(rng: np.random.Generator, n_ref: int, n_cur: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    def frame(n: int, scale: float) -> pd.DataFrame:
        return pd.DataFrame({"scaled": rng.normal(3.0, scale, n), "steady": rng.exponential(2.0, n)})

    return frame(n_ref, 1.0), frame(n_cur, 2.0)


def categorical_frequency(
    rng: np.random.Generator, n_ref: int, n_cur: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    plans = ["basic", "plus", "pro", "team"]

    def frame(n: int, plan_p: list[float], churn: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "plan": rng.choice(plans, n, p=plan_p),
                "churned": rng.random(n) < churn,
                "region": rng.choice(["north", "south", "east"], n),
            }
        )

    return frame(n_ref, [0.4, 0.3, 0.2, 0.1], 0.2), frame(n_cur, [0.1, 0.2, 0.3, 0.4], 0.45)


def no_drift(rng: np.random.Generator, n_ref: int, n_cur: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    def frame(n: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "amount": rng.gamma(2.0, 3.0, n),
                "score": rng.normal(size=n),
                "colour": rng.choice(list("rgb"), n),
            }
        )

    return frame(n_ref), frame(n_cur)


def nans_present(rng: np.random.Generator, n_ref: int, n_cur: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    def frame(n: int, shift: float, missing: float) -> pd.DataFrame:
        gappy = rng.normal(shift, 1.0, n)
        gappy[rng.random(n) < 0.2] = np.nan
        gappy[:3] = [np.inf, -np.inf, np.nan]
        # Mostly missing: at 1,500 rows the reference keeps under 1,000 values, so Evidently picks K-S here
        # while it picks Wasserstein for the other numerical columns of the same frame.
        sparse = rng.normal(0.0, 1.0, n)
        sparse[rng.random(n) < missing] = np.nan
        label = rng.choice(np.array(["a", "b", "c", None], dtype=object), n)
        return pd.DataFrame({"shifted_with_gaps": gappy, "mostly_missing": sparse, "label": label})

    return frame(n_ref, 0.0, 0.7), frame(n_cur, 1.0, 0.3)


def low_cardinality_integers(
    rng: np.random.Generator, n_ref: int, n_cur: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    def frame(n: int, rating_p: list[float], count_low: int, flag_p: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                # int with <= 10 distinct values: Evidently infers categorical.
                "rating": rng.choice([1, 2, 3, 4], n, p=rating_p),
                "bucket": rng.integers(0, 8, n),
                # int with more than 10 values: numerical, with many ties.
                "count": rng.integers(count_low, count_low + 40, n),
                # floats with 2 and 3 distinct values: numerical, but tested as categorical (k <= 5).
                "flag": (rng.random(n) < flag_p).astype(float),
                "level": rng.choice([1.5, 2.5, 3.5], n),
            }
        )

    return frame(n_ref, [0.1, 0.2, 0.3, 0.4], 0, 0.3), frame(n_cur, [0.4, 0.3, 0.2, 0.1], 10, 0.6)


Scenario = Callable[[np.random.Generator, int, int], tuple[pd.DataFrame, pd.DataFrame]]
SCENARIOS: dict[str, tuple[Scenario, set[str]]] = {
    "numeric_shift": (numeric_shift, {"shifted"}),
    "scale_change": (scale_change, {"scaled"}),
    "categorical_frequency": (categorical_frequency, {"plan", "churned"}),
    "no_drift": (no_drift, set()),
    "nans_present": (nans_present, {"shifted_with_gaps"}),
    "low_cardinality_integers": (low_cardinality_integers, {"rating", "count", "flag"}),
}


def build(scenario: str, size: str, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    make, _ = SCENARIOS[scenario]
    return make(np.random.default_rng(seed), *SIZES[size])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_matches_evidently(scenario: str, size: str) -> None:
    reference, current = build(scenario, size)
    assert_same_as_evidently(detect_drift(reference, current), evidently_drift(reference, current))


def test_scenarios_reach_every_default_method() -> None:
    """Guards the comparison above: between them the scenarios must take every branch of Evidently's selection."""
    methods = {
        column.method
        for scenario in SCENARIOS
        for size in SIZES
        for column in detect_drift(*build(scenario, size)).columns
    }
    assert methods == {WASSERSTEIN, JENSEN_SHANNON, KOLMOGOROV_SMIRNOV, CHI_SQUARE, Z_TEST}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("scenario", [name for name, (_, shifted) in SCENARIOS.items() if shifted])
def test_shifted_columns_are_flagged(scenario: str, size: str) -> None:
    _, shifted = SCENARIOS[scenario]
    result = detect_drift(*build(scenario, size))
    assert shifted <= {c.column for c in result.columns if c.drifted}


@pytest.mark.parametrize("size", SIZES)
def test_identical_data_is_not_flagged(size: str) -> None:
    reference = pd.concat([build(name, size)[0].add_prefix(f"{name}.") for name in SCENARIOS], axis=1)
    result = detect_drift(reference, reference.copy())
    assert [c.column for c in result.columns if c.drifted] == []
    assert result.share_drifted == 0.0
    assert not result.dataset_drifted


def test_dataset_verdict_follows_drift_share() -> None:
    reference, current = build("low_cardinality_integers", "large")
    share = detect_drift(reference, current).share_drifted
    assert 0.0 < share < 1.0
    assert detect_drift(reference, current, drift_share=share).dataset_drifted
    assert not detect_drift(reference, current, drift_share=share + 0.01).dataset_drifted


@pytest.mark.parametrize("size", SIZES)
def test_explicit_kinds_and_threshold_match_evidently(size: str) -> None:
    reference, current = build("low_cardinality_integers", size)
    kinds = {"numerical": ["rating", "count"], "categorical": ["bucket", "level", "flag"]}
    ours = detect_drift(reference, current, threshold=0.2, **kinds)
    theirs = evidently_drift(reference, current, threshold=0.2, **kinds)
    assert {c.threshold for c in ours.columns} == {0.2}
    assert_same_as_evidently(ours, theirs)


def polars_frame(rng: np.random.Generator, n: int, shift: float) -> pl.DataFrame:
    with_gaps = rng.integers(0, 5, n).astype(float) + shift
    return pl.DataFrame(
        {
            # Integers with nulls: to_pandas() makes them float64, so Evidently sees a numerical column.
            "visits": pl.Series(rng.integers(0, 4, n), dtype=pl.Int64).scatter(np.arange(0, n, 7), None),
            "tier": pl.Series(rng.integers(1, 4, n), dtype=pl.Int32),
            "unsigned": pl.Series(rng.integers(0, 200, n), dtype=pl.UInt8),
            "city": pl.Series(rng.choice(["paris", "lyon", "nice"], n)).scatter([1, 5], None),
            "vip": rng.random(n) < 0.1 + shift / 10,
            "spend": pl.Series(rng.lognormal(3.0 + shift / 4, 1.0, n)),
            "ticket": with_gaps,
        }
    ).with_columns(pl.col("city").cast(pl.Categorical).alias("city_code"))


@pytest.mark.parametrize("size", SIZES)
def test_polars_and_arrow_inputs_match_evidently_on_their_pandas_form(size: str) -> None:
    rng = np.random.default_rng(3)
    n_ref, n_cur = SIZES[size]
    reference, current = polars_frame(rng, n_ref, 0.0), polars_frame(rng, n_cur, 1.0)
    theirs = evidently_drift(reference.to_pandas(), current.to_pandas())
    assert "unsigned" not in {c.column for c in theirs.columns}
    assert_same_as_evidently(detect_drift(reference, current), theirs)
    assert_same_as_evidently(detect_drift(reference.to_arrow(), current.to_arrow()), theirs)


def test_text_column_is_refused_unless_named() -> None:
    rng = np.random.default_rng(5)
    # 300 draws from 300 notes leave about 190 distinct values: more than half, so Evidently reads text.
    notes = [f"note {i}" for i in range(300)]
    reference = pd.DataFrame({"x": rng.normal(size=400), "comment": rng.choice(notes, 400)})
    current = pd.DataFrame({"x": rng.normal(size=300), "comment": rng.choice(notes, 300)})
    with pytest.raises(ValueError, match="comment"):
        detect_drift(reference, current)
    kinds = {"numerical": ["x"], "categorical": ["comment"]}
    assert_same_as_evidently(
        detect_drift(reference, current, **kinds), evidently_drift(reference, current, **kinds)
    )


def test_empty_column_is_an_error_as_in_evidently() -> None:
    reference = pd.DataFrame({"x": np.arange(2000.0), "y": np.arange(2000.0)})
    current = pd.DataFrame({"x": np.full(1500, np.nan), "y": np.arange(1500.0)})
    with pytest.raises(ValueError, match="empty"):
        evidently_drift(reference, current)
    with pytest.raises(ValueError, match="'x'"):
        detect_drift(reference, current)


def test_to_rows_has_one_row_per_column() -> None:
    result = detect_drift(*build("categorical_frequency", "large"))
    rows = result.to_rows()
    assert [row["column"] for row in rows] == [c.column for c in result.columns]
    assert rows[0] == {
        "column": result.columns[0].column,
        "method": result.columns[0].method,
        "score": result.columns[0].score,
        "threshold": result.columns[0].threshold,
        "drifted": result.columns[0].drifted,
    }


def test_render_html_report_writes_evidently_page_from_a_sample(tmp_path) -> None:
    reference, current = build("numeric_shift", "large")
    path = render_html_report(reference, current, tmp_path / "reports" / "drift.html", sample_rows=800)
    html = path.read_text(encoding="utf-8")
    assert path.stat().st_size > 100_000
    assert "<html" in html.lower() and "shifted" in html
    # The page loads Evidently's library from the folder's one copy, identical to the library it would inline.
    library = Path(evidently.__file__).parent / "nbextension" / "static" / "index.js"
    shared = tmp_path / "reports" / EVIDENTLY_LIBRARY_DIR / f"evidently-{evidently.__version__}.js"
    assert f'<script src="{EVIDENTLY_LIBRARY_DIR}/{shared.name}"></script>' in html
    assert shared.read_bytes() == library.read_bytes()
    assert path.stat().st_size < library.stat().st_size
    # 800 sampled reference rows put Evidently on its p-value branch, where the full 1,500 rows would not be.
    assert KOLMOGOROV_SMIRNOV in html and WASSERSTEIN not in html
