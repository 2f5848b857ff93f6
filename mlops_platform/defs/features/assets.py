"""Feature tables (Delta, upserted on their primary keys) and the point-in-time training set built from them."""

import json

import dagster as dg
import polars as pl

from mlops_platform.defs.quality import KEYS_UNIQUE, check_spec, unique_keys_result
from mlops_platform.defs.tables import (
    BACKFILL_POLICY,
    column_schema,
    daily_partitions,
    days_of_run,
    table_metadata,
)
from mlops_platform.features import build_feature_rows, build_training_set, feature_columns, input_tables
from mlops_platform.resources.engine import ComputeEngine
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.settings import FeatureTableConfig, UseCaseConfig
from mlops_platform.transforms.features import SPLIT

SPLITS_LABELLED = "splits_labelled"


def _source_dep(usecase: UseCaseConfig, spec: FeatureTableConfig) -> dg.AssetDep:
    key = dg.AssetKey([spec.layer, spec.source])
    if spec.kind == "rolling":
        # Feature date D reads the source's days D-N .. D-1: the lineage Dagster shows and schedules by.
        mapping = dg.TimeWindowPartitionMapping(start_offset=-max(spec.windows_days), end_offset=-1,
                                                allow_nonexistent_upstream_partitions=True)
        return dg.AssetDep(key, partition_mapping=mapping)
    return dg.AssetDep(key)


def _is_daily(usecase: UseCaseConfig, spec: FeatureTableConfig) -> bool:
    return spec.kind == "rolling" or usecase.sources[spec.source].is_daily


def _feature_asset(usecase: UseCaseConfig, name: str, spec: FeatureTableConfig) -> dg.AssetsDefinition:
    key = dg.AssetKey(["features", name])
    daily = _is_daily(usecase, spec)
    grain = ", ".join(spec.keys)
    users = ", ".join(f"models/{model}" for model in usecase.models) or "no model yet"

    @dg.asset(
        key=key,
        deps=[_source_dep(usecase, spec)],
        description=f"{spec.description} Primary key ({grain})"
        + (f", timestamp key {spec.timestamp_key}" if spec.timestamp_key else "")
        + f". Upserted on its keys. Used by the training set and the online store of {users}.",
        group_name="features",
        kinds={"delta", "feature-store"},
        owners=usecase.owners,
        tags={"usecase": usecase.name},
        metadata={"primary_keys": spec.keys, "timestamp_key": spec.timestamp_key or "",
                  "dagster/column_schema": dg.TableSchema(columns=[
                      dg.TableColumn(column, description=text) for column, text in spec.columns.items()])},
        partitions_def=daily_partitions(usecase) if daily else None,
        backfill_policy=BACKFILL_POLICY if daily else None,
        check_specs=[check_spec(KEYS_UNIQUE, key, f"one row per {grain}")],
    )
    def feature_table(context: dg.AssetExecutionContext, warehouse: Warehouse, engine: ComputeEngine
                      ) -> dg.MaterializeResult:
        runner = engine.engine()
        days = days_of_run(context, spec.timestamp_key or "feature_date") if daily else None
        rows = build_feature_rows(usecase, name, runner, warehouse, days)
        write = warehouse.merge("features", name, rows, spec.keys)
        metadata = table_metadata(write, rows, engine=runner.name)
        metadata["dagster/column_schema"] = column_schema(write.schema, spec.columns)
        return dg.MaterializeResult(metadata=metadata, check_results=[unique_keys_result(key, rows, spec.keys)])

    return feature_table


def _training_set_asset(usecase: UseCaseConfig) -> dg.AssetsDefinition:
    spec = usecase.training_set
    assert spec is not None
    key = dg.AssetKey(["training", usecase.name])
    gold = usecase.gold[spec.source]
    models = ", ".join(f"models/{model}" for model in usecase.models)

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(list(location)) for location in input_tables(usecase).values()],
        description=f"Training set of the {usecase.name} use case: one row per gold {spec.source} row of the newest "
        f"{spec.window_days} days ({', '.join(gold.keys)}), its labels ({', '.join(spec.labels)}) and every "
        f"feature looked up point-in-time, split by date into train / validation / test. Records the Delta version "
        f"of each input so it can be rebuilt exactly. Read by {models}.",
        group_name="training",
        kinds={"delta", "feature-store"},
        owners=usecase.owners,
        tags={"usecase": usecase.name},
        check_specs=[
            check_spec(KEYS_UNIQUE, key, "one row per gold key"),
            check_spec(SPLITS_LABELLED, key, "train, validation and test each hold labelled rows"),
        ],
    )
    def training_set(context: dg.AssetExecutionContext, warehouse: Warehouse, engine: ComputeEngine
                     ) -> dg.MaterializeResult:
        runner = engine.engine()
        build = build_training_set(usecase, runner, warehouse)
        write = warehouse.overwrite("training", usecase.name, build.rows,
                                    commit_metadata={"input_versions": json.dumps(build.input_versions)})
        counted = dict(pl.from_arrow(build.rows.select([SPLIT])).group_by(SPLIT).len().iter_rows())
        per_split = {split: counted.get(split, 0) for split in ("train", "validation", "test")}
        context.log.info(f"training set {build.first_day}..{build.last_day}: {per_split}")
        return dg.MaterializeResult(
            metadata=table_metadata(
                write, build.rows,
                input_versions=dg.MetadataValue.json(build.input_versions),
                rows_per_split=dg.MetadataValue.json(per_split),
                window=f"{build.first_day} .. {build.last_day} (validation from {build.validation_start}, "
                       f"test from {build.test_start})",
                features=dg.MetadataValue.json(feature_columns(usecase)),
            ),
            check_results=[
                unique_keys_result(key, build.rows, list(dict.fromkeys([gold.partition_column, *gold.keys]))),
                dg.AssetCheckResult(check_name=SPLITS_LABELLED, passed=all(per_split.values()),
                                    metadata={"rows_per_split": dg.MetadataValue.json(per_split)}),
            ],
        )

    return training_set


def feature_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    assets = [_feature_asset(usecase, name, spec) for name, spec in usecase.features.items()]
    if usecase.training_set is not None:
        assets.append(_training_set_asset(usecase))
    return assets
