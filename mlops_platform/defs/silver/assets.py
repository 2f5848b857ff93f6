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
    KEYS_CONSISTENT,
    KEYS_UNIQUE,
    QUARANTINE_SHARE,
    ROWS_RECONCILE,
    check_spec,
    consistent_keys_result,
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
                         f"({grain}). Read by gold and the feature tables.", **common),
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
        bronze = runner.read(warehouse, *bronze_table, bronze_days)
        conformed = conformed_tables(runner, bronze, spec)
        silver_rows, quarantined = conformed.silver, conformed.quarantine
        bronze_rows = runner.to_arrow(bronze.select(nw.len())).column(0)[0].as_py()

        if partitioned:
            silver_days = DayRange(spec.partition.column, bronze_days.first, bronze_days.last)
            write = warehouse.replace_days(*silver_table, silver_rows, silver_days)
            quarantine_write = warehouse.replace_days(*quarantine_table, quarantined, bronze_days)
        else:
            write = warehouse.overwrite(*silver_table, silver_rows)
            quarantine_write = warehouse.overwrite(*quarantine_table, quarantined)

        # Every bronze row is either quarantined or clean; clean rows not in silver were superseded duplicates.
        duplicates = bronze_rows - quarantined.num_rows - silver_rows.num_rows
        share = quarantined.num_rows / bronze_rows if bronze_rows else 0.0
        if quarantined.num_rows:
            context.log.warning(f"{quarantined.num_rows} {name} rows quarantined in {quarantine_write.full_name}")
        yield dg.MaterializeResult(
            asset_key=silver_key,
            metadata=table_metadata(write, silver_rows, quarantined_rows=quarantined.num_rows,
                                    duplicates_removed=duplicates, engine=runner.name),
        )
        yield dg.MaterializeResult(asset_key=quarantine_key, metadata=table_metadata(quarantine_write, quarantined))
        yield unique_keys_result(silver_key, silver_rows, spec.keys)
        yield consistent_keys_result(silver_key, conformed.conflicts, spec.keys, spec.conflict_severity)
        yield reconcile_result(
            silver_key, expected=bronze_rows,
            actual=write.rows_written + quarantine_write.rows_written + duplicates,
            explanation=f"{bronze_rows} bronze = {write.rows_written} silver + {quarantine_write.rows_written} "
                        f"quarantined + {duplicates} duplicates",
        )
        by_rule = pl.from_arrow(quarantined).group_by(RULE_COLUMN).len().sort("len", descending=True)
        yield dg.AssetCheckResult(
            asset_key=silver_key, check_name=QUARANTINE_SHARE, passed=share <= spec.max_quarantine_share,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"quarantined_rows": quarantined.num_rows, "quarantine_share": share,
                      "by_rule": dg.MetadataValue.json(by_rule.to_dicts()),
                      "sample": sample_rows(pl.from_arrow(quarantined),
                                        [RULE_COLUMN, RULE_DETAIL_COLUMN, SOURCE_FILE, SOURCE_ROW, SOURCE_LINE])},
        )

    return silver


def silver_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    return [_silver_asset(usecase, name, spec) for name, spec in usecase.sources.items()]
