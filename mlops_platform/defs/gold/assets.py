"""Gold: business tables assembled by the use case's own builder function from silver tables.

A gold table with a partition column is replaced day by day from its daily inputs (snapshot inputs read whole); one
without is rebuilt whole from snapshot inputs whenever they change.
"""


import dagster as dg
import narwhals as nw

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.quality import (
    KEYS_UNIQUE,
    ROWS_RECONCILE,
    check_spec,
    committed_rows,
    freshness_policy,
    guard_replacement,
    reconcile_result,
    rule_check_spec,
    rule_result,
    unique_keys_result,
)
from mlops_platform.defs.tables import days_of_run, partitioning, table_metadata
from mlops_platform.resources.engine import ComputeEngine, Engine
from mlops_platform.resources.warehouse import DayRange, Warehouse
from mlops_platform.settings import GoldConfig, UseCaseConfig, usecase_function


def read_inputs(usecase: UseCaseConfig, spec: GoldConfig, runner: Engine, warehouse: Warehouse,
                days: DayRange | None) -> dict[str, nw.LazyFrame]:
    """The silver inputs of a gold table: daily sources for ``days``, snapshot sources whole."""
    frames = {}
    for name in spec.inputs:
        partition = usecase.sources[name].partition
        source_days = DayRange(partition.column, days.first, days.last) if partition and days else None
        frames[name] = runner.read(warehouse, *names.table(usecase.name, names.SILVER, name), source_days)
    return frames


def builder(usecase: UseCaseConfig, table: str, spec: GoldConfig):
    return usecase_function(usecase, spec.builder, f"gold.{table}.builder")


def _gold_asset(usecase: UseCaseConfig, table: str, spec: GoldConfig) -> dg.AssetsDefinition:
    key = stages.table_key(usecase, names.GOLD, table)
    location = names.table(usecase.name, names.GOLD, table)
    build = builder(usecase, table, spec)
    grain = ", ".join(spec.keys)
    checks = [check_spec(KEYS_UNIQUE, key, f"one row per {grain}"), *(rule_check_spec(rule, key) for rule in spec.checks)]
    if spec.reconcile_with:
        checks.append(check_spec(ROWS_RECONCILE, key, f"one row per silver {spec.reconcile_with} row"))

    @dg.asset(
        key=key,
        deps=[stages.source_key(usecase, names.SILVER, name) for name in spec.inputs],
        description=f"{spec.description} Grain: one row per {grain}. Read by the feature tables and training set.",
        kinds={"delta"},
        **stages.placement(usecase, names.GOLD),
        **partitioning(usecase, spec.is_daily),
        freshness_policy=freshness_policy(usecase) if spec.is_daily else None,
        check_specs=checks,
    )
    def gold(context: dg.AssetExecutionContext, warehouse: Warehouse, engine: ComputeEngine
             ) -> dg.MaterializeResult:
        runner = engine.engine()
        days = days_of_run(context, spec.partition_column) if spec.is_daily else None
        inputs = read_inputs(usecase, spec, runner, warehouse, days)
        rows = runner.to_arrow(build(inputs))
        guard_replacement(context, usecase.replace_guard, warehouse, location, days, new_rows=rows.num_rows,
                          count_column=None if days else spec.keys[0])
        evolve = spec.allow_schema_evolution
        write = (warehouse.replace_days(*location, rows, days, allow_evolution=evolve) if days
                 else warehouse.overwrite(*location, rows, allow_evolution=evolve))
        # The checks judge the version just committed, read back, not the frame handed to the writer.
        committed = committed_rows(warehouse, location, days, version=write.version)
        results = [unique_keys_result(key, committed, spec.keys),
                   *(rule_result(rule, key, committed, spec.keys) for rule in spec.checks)]
        if spec.reconcile_with:
            expected = runner.to_arrow(inputs[spec.reconcile_with].select(nw.len())).column(0)[0].as_py()
            results.append(reconcile_result(key, expected=expected, actual=committed.num_rows,
                                            explanation=f"{expected} silver {spec.reconcile_with} rows of the run's "
                                                        f"days = {committed.num_rows} gold rows as committed",
                                            versions={"gold": write.version}))
        return dg.MaterializeResult(metadata=table_metadata(write, rows, engine=runner.name), check_results=results)

    return gold


def gold_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    return [_gold_asset(usecase, table, spec) for table, spec in usecase.gold.items()]
