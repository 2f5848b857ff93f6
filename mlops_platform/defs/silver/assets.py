"""Silver: typed, validated, deduplicated tables, and a quarantine table beside each for the rows that broke a rule.

Nothing is dropped silently: every bronze row of the run's days is in silver, in quarantine (with the rule it
broke, its file and row number, and its raw values), or counted as a duplicate superseded by a later copy. The
``rows_reconcile`` check proves it on each run.
"""


import dagster as dg
import narwhals as nw
import polars as pl

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.quality import (
    BATCH_STAMP,
    DAYS_STAMP,
    KEYS_CONSISTENT,
    KEYS_UNIQUE,
    QUARANTINE_SHARE,
    ROWS_RECONCILE,
    check_spec,
    committed_rows,
    consistent_keys_result,
    days_label,
    freshness_policy,
    guard_replacement,
    interrupted_batch,
    reconcile_result,
    sample_rows,
    unique_keys_result,
)
from mlops_platform.defs.tables import days_of_run, partitioning, table_metadata
from mlops_platform.resources.engine import ComputeEngine
from mlops_platform.resources.warehouse import DayRange, Warehouse
from mlops_platform.settings import SourceConfig, UseCaseConfig
from mlops_platform.transforms.conform import (
    LANDING_DATE,
    RULE_COLUMN,
    RULE_DETAIL_COLUMN,
    SOURCE_FILE,
    SOURCE_LINE,
    SOURCE_ROW,
    conformed_tables,
)


def _silver_asset(usecase: UseCaseConfig, name: str, spec: SourceConfig) -> dg.AssetsDefinition:
    silver_key = stages.source_key(usecase, names.SILVER, name)
    quarantine_key = stages.quarantine_key(usecase, name)
    bronze_table = names.table(usecase.name, names.BRONZE, name)
    silver_table = names.table(usecase.name, names.SILVER, name)
    quarantine_table = names.table(usecase.name, names.SILVER, names.quarantine(name))
    grain = f"one row per {', '.join(spec.keys)}"
    common = {"kinds": {"delta"}, "deps": [stages.source_key(usecase, names.BRONZE, name)],
              **stages.placement(usecase, names.SILVER)}
    partitioned = spec.is_daily

    @dg.multi_asset(
        name=f"{usecase.name}_silver_{name}",
        specs=[
            dg.AssetSpec(silver_key, description=f"{spec.description} Typed, validated and deduplicated "
                         f"({grain}). Read by gold and the feature tables.",
                         freshness_policy=freshness_policy(usecase) if partitioned else None, **common),
            dg.AssetSpec(quarantine_key, description=f"{name} rows that broke a quality rule, with the rule, "
                         "the source file and row number, and the raw values. Read by people fixing the source.",
                         skippable=True, **common),
        ],
        check_specs=[
            check_spec(KEYS_UNIQUE, silver_key, f"one row per natural key ({', '.join(spec.keys)})"),
            check_spec(ROWS_RECONCILE, silver_key, "bronze rows = silver + quarantined + removed duplicates"),
            check_spec(QUARANTINE_SHARE, silver_key,
                       f"at most {spec.max_quarantine_share:.1%} of bronze rows quarantined", "WARN"),
            check_spec(KEYS_CONSISTENT, silver_key, "copies of a natural key agree on every value (the copy "
                       "landed last is kept)", spec.conflict_severity),
        ],
        **partitioning(usecase, partitioned),
    )
    def silver(context: dg.AssetExecutionContext, warehouse: Warehouse, engine: ComputeEngine):
        runner = engine.engine()
        bronze_days = days_of_run(context, LANDING_DATE) if partitioned else None
        silver_days = DayRange(spec.partition.column, bronze_days.first, bronze_days.last) if partitioned else None
        bronze_version = warehouse.version(*bronze_table)
        bronze = runner.read(warehouse, *bronze_table, bronze_days)
        conformed = conformed_tables(runner, bronze, spec)
        silver_rows, quarantined = conformed.silver, conformed.quarantine
        bronze_rows = runner.to_arrow(bronze.select(nw.len())).column(0)[0].as_py()
        guard_replacement(context, usecase.replace_guard, warehouse, silver_table, silver_days,
                          new_rows=silver_rows.num_rows, quarantined=quarantined.num_rows, source_rows=bronze_rows)

        label = days_label(bronze_days)
        interrupted = interrupted_batch(warehouse, silver_table, quarantine_table, label)
        if interrupted:
            context.log.warning(f"run {interrupted} committed {quarantine_table.table} for {label} but never "
                                f"{silver_table.table} (it died between the two commits): this run rewrites both")
        # Quarantine first, silver last: silver's commit completes the batch, so a crash between the two leaves
        # silver's previous rows in place and a stamp mismatch the next run reports while it rewrites both.
        stamp = {BATCH_STAMP: context.run_id, DAYS_STAMP: label}
        if partitioned:
            quarantine_write = warehouse.replace_days(*quarantine_table, quarantined, bronze_days,
                                                      commit_metadata=stamp)
            write = warehouse.replace_days(*silver_table, silver_rows, silver_days, commit_metadata=stamp)
        else:
            quarantine_write = warehouse.overwrite(*quarantine_table, quarantined, commit_metadata=stamp)
            write = warehouse.overwrite(*silver_table, silver_rows, commit_metadata=stamp)

        # Each side counted on its own: silver and quarantine as committed (read back from the versions just
        # written), duplicates as the clean rows' copies beyond one per key. None is derived from another.
        in_silver = committed_rows(warehouse, silver_table, silver_days, version=write.version, columns=spec.keys)
        in_quarantine = committed_rows(warehouse, quarantine_table, bronze_days, version=quarantine_write.version,
                                       columns=[SOURCE_ROW]).num_rows
        duplicates = conformed.clean_rows - conformed.clean_keys
        share = in_quarantine / bronze_rows if bronze_rows else 0.0
        if in_quarantine:
            context.log.warning(f"{in_quarantine} {name} rows quarantined in {quarantine_write.full_name}")
        yield dg.MaterializeResult(
            asset_key=silver_key,
            metadata=table_metadata(write, silver_rows, quarantined_rows=in_quarantine,
                                    duplicates_removed=duplicates, engine=runner.name, batch_id=context.run_id,
                                    bronze_version=bronze_version if bronze_version is not None else "none",
                                    healed_batch=interrupted or "none"),
        )
        yield dg.MaterializeResult(asset_key=quarantine_key, metadata=table_metadata(
            quarantine_write, quarantined, batch_id=context.run_id))
        yield unique_keys_result(silver_key, in_silver, spec.keys)
        yield consistent_keys_result(silver_key, conformed.conflicts, spec.keys, spec.conflict_severity)
        yield reconcile_result(
            silver_key, expected=bronze_rows,
            actual=in_silver.num_rows + in_quarantine + duplicates,
            explanation=f"{bronze_rows} bronze rows read = {in_silver.num_rows} silver + {in_quarantine} quarantined "
                        f"(both as committed) + {duplicates} duplicates ({conformed.clean_rows} clean rows, "
                        f"{conformed.clean_keys} distinct keys)",
            versions={"bronze": bronze_version, "silver": write.version, "quarantine": quarantine_write.version},
        )
        by_rule = pl.from_arrow(quarantined).group_by(RULE_COLUMN).len().sort("len", descending=True)
        yield dg.AssetCheckResult(
            asset_key=silver_key, check_name=QUARANTINE_SHARE, passed=share <= spec.max_quarantine_share,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"quarantined_rows": in_quarantine, "quarantine_share": share,
                      "by_rule": dg.MetadataValue.json(by_rule.to_dicts()),
                      "sample": sample_rows(pl.from_arrow(quarantined),
                                        [RULE_COLUMN, RULE_DETAIL_COLUMN, SOURCE_FILE, SOURCE_ROW, SOURCE_LINE])},
        )

    return silver


def silver_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    return [_silver_asset(usecase, name, spec) for name, spec in usecase.sources.items()]
