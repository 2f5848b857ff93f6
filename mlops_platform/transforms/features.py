"""Feature tables and the point-in-time training set, engine-agnostic (narwhals over lazy frames, no Dagster).

Point-in-time correctness is structural: a rolling feature for ``feature_date`` D aggregates source rows of the
days D-N .. D-1 only, so joining it to a flight on its own date can never see that day or later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from hashlib import blake2b

import narwhals as nw
import numpy as np
import pyarrow as pa

from mlops_platform.names import SPLIT
from mlops_platform.settings import FeatureTableConfig, SplitConfig, TrainingSetConfig, UseCaseConfig

SOURCE_DATE = "_source_date"
# Between key values in a hash split, so ("a", "bc") and ("ab", "c") hash differently.
UNIT_SEPARATOR = "\x1f"


def feature_columns(usecase: UseCaseConfig) -> list[str]:
    """A model's inputs, in order: the request-time fields, then every looked-up feature."""
    spec = usecase.training_set
    if spec is None:
        return []
    looked_up = [column for lookup in spec.lookups for column in usecase.features[lookup.table].columns]
    return list(dict.fromkeys([*spec.request_fields, *looked_up]))


def window_pairs(feature_dates: Sequence[dt.date], windows_days: Sequence[int]) -> pa.Table:
    """Which source day feeds which feature date, and in which windows: one row per (source day, feature date).

    Built in Python because the pairs are few (days x longest window) and date arithmetic differs per engine.
    """
    longest = max(windows_days)
    rows: dict[str, list] = {SOURCE_DATE: [], "feature_date": [], **{f"_in_{w}d": [] for w in windows_days}}
    for feature_date in feature_dates:
        for lag in range(1, longest + 1):
            rows[SOURCE_DATE].append(feature_date - dt.timedelta(days=lag))
            rows["feature_date"].append(feature_date)
            for w in windows_days:
                rows[f"_in_{w}d"].append(lag <= w)
    return pa.table(rows, schema=pa.schema(
        [(SOURCE_DATE, pa.date32()), ("feature_date", pa.date32()), *((f"_in_{w}d", pa.bool_()) for w in windows_days)]
    ))


def rolling_features(source: nw.LazyFrame, spec: FeatureTableConfig, date_column: str, pairs: nw.LazyFrame
                     ) -> nw.LazyFrame:
    """Per group and feature date: each aggregation over each window of days strictly before the feature date."""
    groups = spec.group_by
    # Spark refuses to sum booleans; every aggregated value becomes a float first.
    daily = (
        source.with_columns(*(nw.col(c).cast(nw.Float64).alias(f"_v_{c}") for c in spec.aggregations))
        .with_columns(*((~nw.col(f"_v_{c}").is_null()).cast(nw.Float64).alias(f"_n_{c}")
                        for c in spec.aggregations))
        .group_by(*groups, date_column)
        .agg(
            nw.len().alias("_rows"),
            *(nw.col(f"_v_{c}").sum().alias(f"_sum_{c}") for c in spec.aggregations),
            *(nw.col(f"_n_{c}").sum().alias(f"_n_{c}") for c in spec.aggregations),
            *(nw.col(f"_v_{c}").max().alias(f"_max_{c}") for c, agg in spec.aggregations.items() if agg == "max"),
        )
        .rename({date_column: SOURCE_DATE})
        .join(pairs, on=SOURCE_DATE, how="inner")
    )
    windowed = []
    for w in spec.windows_days:
        inside = nw.col(f"_in_{w}d")
        windowed.append(nw.when(inside).then(nw.col("_rows")).otherwise(0).alias(f"_rows_{w}"))
        for c, agg in spec.aggregations.items():
            windowed.append(nw.when(inside).then(nw.col(f"_sum_{c}")).otherwise(0.0).alias(f"_sum_{c}_{w}"))
            windowed.append(nw.when(inside).then(nw.col(f"_n_{c}")).otherwise(0.0).alias(f"_n_{c}_{w}"))
            if agg == "max":
                windowed.append(nw.when(inside).then(nw.col(f"_max_{c}")).alias(f"_max_{c}_{w}"))
    totals = (
        daily.with_columns(*windowed)
        .group_by(*groups, "feature_date")
        .agg(
            *(nw.col(f"_rows_{w}").sum() for w in spec.windows_days),
            *(nw.col(f"_sum_{c}_{w}").sum() for w in spec.windows_days for c in spec.aggregations),
            *(nw.col(f"_n_{c}_{w}").sum() for w in spec.windows_days for c in spec.aggregations),
            *(nw.col(f"_max_{c}_{w}").max() for w in spec.windows_days
              for c, agg in spec.aggregations.items() if agg == "max"),
        )
    )

    def feature(c: str, agg: str, w: int) -> nw.Expr:
        total, count = nw.col(f"_sum_{c}_{w}"), nw.col(f"_n_{c}_{w}")
        if agg == "mean":
            return nw.when(count > 0).then(total / count)
        if agg == "sum":
            return total
        if agg == "count":
            return count
        return nw.col(f"_max_{c}_{w}")

    features = []
    for w in spec.windows_days:
        features += [feature(c, agg, w).alias(f"{spec.prefix}_{c}_{agg}_{w}d") for c, agg in spec.aggregations.items()]
        features.append(nw.col(f"_rows_{w}").cast(nw.Int64).alias(f"{spec.prefix}_rows_{w}d"))
    return totals.select(*groups, nw.col("feature_date").alias(spec.timestamp_key or "feature_date"), *features)


def lookup_features(source: nw.LazyFrame, spec: FeatureTableConfig) -> nw.LazyFrame:
    """A lookup table's keys and features, renamed from its source's columns."""
    return source.rename(spec.rename).select(*spec.keys, *spec.columns)


def split_by_date(date: nw.Expr, validation_start: dt.date, test_start: dt.date) -> nw.Expr:
    return (
        nw.when(date >= nw.lit(test_start)).then(nw.lit("test"))
        .otherwise(nw.when(date >= nw.lit(validation_start)).then(nw.lit("validation")).otherwise(nw.lit("train")))
    )


def with_features(rows: nw.LazyFrame, features: Mapping[str, nw.LazyFrame], usecase: UseCaseConfig,
                  keys: Sequence[str]) -> nw.LazyFrame:
    """``rows`` (gold rows: keys, request fields, labels) joined with every feature lookup by key.

    The one join that both training and batch scoring use, so a model is scored on exactly what it learnt from.
    """
    spec: TrainingSetConfig = usecase.training_set  # type: ignore[assignment]
    frame = rows
    for lookup in spec.lookups:
        to_row_names = {feature_key: row_key for row_key, feature_key in lookup.keys.items()}
        columns = usecase.features[lookup.table].columns
        frame = frame.join(
            features[lookup.table].rename(to_row_names).select(*to_row_names.values(), *columns),
            on=list(lookup.keys), how="left",
        )
    labels = [label for label in spec.labels if label in frame.columns]
    return frame.select(*dict.fromkeys([*keys, *feature_columns(usecase), *labels]))


def assign_split(rows: pa.Table, split: SplitConfig, hash_keys: Sequence[str]) -> pa.Table:
    """``rows`` with a ``split`` column drawn as ``split`` says (random, stratified random, or by key hash).

    Random draws follow the rows' order, which the caller makes the key order, so the same rows and seed give the
    same splits. A stratified split takes the fractions of every class of ``stratify_by`` separately (a row without
    that label is drawn as its own class). A hash split gives a row the same split whatever else the table holds.
    """
    count = rows.num_rows
    assigned = np.full(count, "train", dtype=object)
    if split.by == "hash":
        values = zip(*(rows.column(key).to_pylist() for key in hash_keys), strict=True)
        digests = (blake2b(UNIT_SEPARATOR.join(map(str, (split.seed, *row))).encode(), digest_size=8).digest()
                   for row in values)
        draws = np.fromiter((int.from_bytes(d, "big") / 2**64 for d in digests), dtype=np.float64, count=count)
        assigned[draws < split.test_fraction + split.validation_fraction] = "validation"
        assigned[draws < split.test_fraction] = "test"
    else:
        rng = np.random.default_rng(split.seed)
        classes = (np.asarray(rows.column(split.stratify_by).to_pylist(), dtype=object) if split.stratify_by
                   else np.zeros(count, dtype=object))
        for value in dict.fromkeys(classes.tolist()):
            members = rng.permutation(np.flatnonzero(classes == value))
            tests = round(len(members) * split.test_fraction)
            validations = round(len(members) * split.validation_fraction)
            assigned[members[:tests]] = "test"
            assigned[members[tests:tests + validations]] = "validation"
    return rows.append_column(SPLIT, pa.array(assigned.tolist(), pa.large_string()))
