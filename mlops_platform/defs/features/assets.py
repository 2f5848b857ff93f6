"""Feature tables (Delta, upserted on their primary keys) and the point-in-time training set built from them."""

import json

import dagster as dg
import polars as pl

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.quality import KEYS_UNIQUE, check_spec, committed_rows, unique_keys_result
from mlops_platform.defs.tables import column_schema, days_of_run, partitioning, table_metadata
from mlops_platform.features import (
    build_feature_rows,
    build_training_set,
    feature_columns,
    row_keys,
)
from mlops_platform.names import SPLIT, SPLITS
from mlops_platform.resources.engine import ComputeEngine
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.settings import FeatureTableConfig, UseCaseConfig

SPLITS_LABELLED = "splits_labelled"


def _source_dep(usecase: UseCaseConfig, spec: FeatureTableConfig) -> dg.AssetDep:
    key = stages.table_key(usecase, spec.layer, spec.source)
    if spec.kind == "rolling":
        # Feature date D reads the source's days D-N .. D-1: the lineage Dagster shows and schedules by.
        mapping = dg.TimeWindowPartitionMapping(start_offset=-max(spec.windows_days), end_offset=-1,
                                                allow_nonexistent_upstream_partitions=True)
        return dg.AssetDep(key, partition_mapping=mapping)
    return dg.AssetDep(key)


def is_daily_feature(usecase: UseCaseConfig, spec: FeatureTableConfig) -> bool:
    return spec.kind == "rolling" or usecase.partition_column(spec.layer, spec.source) is not None


def _feature_asset(usecase: UseCaseConfig, name: str, spec: FeatureTableConfig) -> dg.AssetsDefinition:
    key = stages.feature_key(usecase, name)
    table = names.table(usecase.name, names.FEATURES, name)
    daily = is_daily_feature(usecase, spec)
    grain = ", ".join(spec.keys)
    users = ", ".join(stages.model_key(usecase, model).to_user_string() for model in usecase.models) or "no model yet"

    @dg.asset(
        key=key,
        deps=[_source_dep(usecase, spec)],
        description=f"{spec.description} Primary key ({grain})"
        + (f", timestamp key {spec.timestamp_key}" if spec.timestamp_key else "")
        + f". Upserted on its keys. Used by the training set and the online store of {users}.",
        kinds={"delta", "feature-store"},
        metadata={"primary_keys": spec.keys, "timestamp_key": spec.timestamp_key or "",
                  "dagster/column_schema": dg.TableSchema(columns=[
                      dg.TableColumn(column, description=text) for column, text in spec.columns.items()])},
        **stages.placement(usecase, names.FEATURES),
        **partitioning(usecase, daily),
        check_specs=[check_spec(KEYS_UNIQUE, key, f"one row per {grain}")],
    )
    def feature_table(context: dg.AssetExecutionContext, warehouse: Warehouse, engine: ComputeEngine
                      ) -> dg.MaterializeResult:
        runner = engine.engine()
        days = days_of_run(context, spec.date_key) if daily else None
        rows = build_feature_rows(usecase, name, runner, warehouse, days)
        write = warehouse.merge(*table, rows, spec.keys)
        metadata = table_metadata(write, rows, engine=runner.name)
        metadata["dagster/column_schema"] = column_schema(write.schema, spec.columns)
        # Judged on the whole table as just committed: the primary key must hold across every merge, not only in the
        # frame handed to this one.
        committed = committed_rows(warehouse, table, None, version=write.version, columns=spec.keys)
        return dg.MaterializeResult(metadata=metadata, check_results=[unique_keys_result(key, committed, spec.keys)])

    return feature_table


def _training_set_asset(usecase: UseCaseConfig) -> dg.AssetsDefinition:
    spec = usecase.training_set
    assert spec is not None
    key = stages.training_set_key(usecase)
    table = names.training_set_table(usecase.name)
    gold = usecase.gold[spec.source]
    models = ", ".join(stages.model_key(usecase, model).to_user_string() for model in usecase.models)
    inputs = [stages.table_key(usecase, names.GOLD, spec.source),
              *(stages.feature_key(usecase, lookup.table) for lookup in spec.lookups)]
    split = spec.split
    how = (f"the newest {split.window_days} days, split by date into train / validation / test"
           if split.by == "time" else f"split {split.by} ({split.validation_fraction:.0%} validation, "
                                      f"{split.test_fraction:.0%} test, seed {split.seed})")

    @dg.asset(
        key=key,
        deps=inputs,
        description=f"Training set of the {usecase.name} use case: one row per gold {spec.source} row "
        f"({', '.join(gold.keys)}) of {how}, with its labels ({', '.join(spec.labels)}) and every feature looked up "
        f"point-in-time. Records the Delta version of each input and its split so it can be rebuilt exactly. "
        f"Read by {models}.",
        kinds={"delta", "feature-store"},
        **stages.placement(usecase, names.TRAINING),
        check_specs=[
            check_spec(KEYS_UNIQUE, key, "one row per gold key"),
            check_spec(SPLITS_LABELLED, key, "train, validation and test each hold labelled rows"),
        ],
    )
    def training_set(context: dg.AssetExecutionContext, warehouse: Warehouse, engine: ComputeEngine
                     ) -> dg.MaterializeResult:
        runner = engine.engine()
        build = build_training_set(usecase, runner, warehouse)
        write = warehouse.overwrite(
            *table, build.rows, allow_evolution=spec.allow_schema_evolution,
            commit_metadata={"input_versions": json.dumps(build.input_versions), "split": json.dumps(build.split)})
        # The checks read back the version just committed, not the frame handed to the writer.
        committed = committed_rows(warehouse, table, None, version=write.version,
                                   columns=list(dict.fromkeys([*row_keys(usecase), SPLIT, *spec.labels])))
        labelled = pl.from_arrow(committed.select([SPLIT, *spec.labels])).filter(
            pl.any_horizontal(pl.col(label).is_not_null() for label in spec.labels))
        counted = dict(labelled.group_by(SPLIT).len().iter_rows())
        per_split = {name: counted.get(name, 0) for name in SPLITS}
        context.log.info(f"training set {build.describe()}: {per_split}")
        return dg.MaterializeResult(
            metadata=table_metadata(
                write, build.rows,
                input_versions=dg.MetadataValue.json(build.input_versions),
                rows_per_split=dg.MetadataValue.json(per_split),
                split=dg.MetadataValue.json(build.split),
                window=build.describe(),
                features=dg.MetadataValue.json(feature_columns(usecase)),
            ),
            check_results=[
                unique_keys_result(key, committed, row_keys(usecase)),
                dg.AssetCheckResult(check_name=SPLITS_LABELLED, passed=all(per_split.values()),
                                    metadata={"labelled_rows_per_split": dg.MetadataValue.json(per_split)}),
            ],
        )

    return training_set


def feature_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    assets = [_feature_asset(usecase, name, spec) for name, spec in usecase.features.items()]
    if usecase.training_set is not None:
        assets.append(_training_set_asset(usecase))
    return assets
