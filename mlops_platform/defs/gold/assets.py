"""Gold: business tables assembled by the use case's own builder function from silver tables."""


import importlib

import dagster as dg
import narwhals as nw

from mlops_platform.defs.quality import (
    KEYS_UNIQUE,
    ROWS_RECONCILE,
    check_spec,
    reconcile_result,
    rule_check_spec,
    rule_result,
    unique_keys_result,
)
from mlops_platform.defs.tables import BACKFILL_POLICY, daily_partitions, days_of_run, table_metadata
from mlops_platform.resources.engine import ComputeEngine, Engine
from mlops_platform.resources.warehouse import DayRange, Warehouse
from mlops_platform.settings import GoldConfig, UseCaseConfig


def read_inputs(usecase: UseCaseConfig, spec: GoldConfig, runner: Engine, warehouse: Warehouse,
                days: DayRange) -> dict[str, nw.LazyFrame]:
    """The silver inputs of a gold table for ``days``: daily sources for those days, reference tables whole."""
    frames = {}
    for name in spec.inputs:
        source = usecase.sources[name]
        if source.partition is None:
            frames[name] = runner.read(warehouse, "silver", name)
            continue
        frames[name] = runner.read(warehouse, "silver", name, DayRange(source.partition.column, days.first, days.last))
    return frames


def builder(usecase: UseCaseConfig, spec: GoldConfig):
    module = importlib.import_module(usecase.module)
    try:
        return getattr(module, spec.builder)
    except AttributeError as exc:
        raise AttributeError(f"use case '{usecase.name}': module {usecase.module} has no builder "
                             f"'{spec.builder}' (config gold.*.builder)") from exc


def _gold_asset(usecase: UseCaseConfig, table: str, spec: GoldConfig) -> dg.AssetsDefinition:
    key = dg.AssetKey(["gold", table])
    build = builder(usecase, spec)
    grain = ", ".join(spec.keys)

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["silver", name]) for name in spec.inputs],
        description=f"{spec.description} Grain: one row per {grain}. Read by the feature tables and training set.",
        group_name="gold",
        kinds={"delta"},
        owners=usecase.owners,
        tags={"usecase": usecase.name},
        partitions_def=daily_partitions(usecase),
        backfill_policy=BACKFILL_POLICY,
        check_specs=[
            check_spec(KEYS_UNIQUE, key, f"one row per {grain}"),
            check_spec(ROWS_RECONCILE, key, f"one row per silver {spec.reconcile_with} row"),
            *(rule_check_spec(rule, key) for rule in spec.checks),
        ],
    )
    def gold(context: dg.AssetExecutionContext, warehouse: Warehouse, engine: ComputeEngine
             ) -> dg.MaterializeResult:
        runner = engine.engine()
        days = days_of_run(context, spec.partition_column)
        inputs = read_inputs(usecase, spec, runner, warehouse, days)
        rows = runner.to_arrow(build(inputs))
        write = warehouse.replace_days("gold", table, rows, days)
        expected = runner.to_arrow(inputs[spec.reconcile_with].select(nw.len())).column(0)[0].as_py()
        return dg.MaterializeResult(
            metadata=table_metadata(write, rows, engine=runner.name),
            check_results=[
                unique_keys_result(key, rows, spec.keys),
                reconcile_result(key, expected=expected, actual=write.rows_written,
                                 explanation=f"silver {spec.reconcile_with} rows of the run's days"),
                *(rule_result(rule, key, rows, spec.keys) for rule in spec.checks),
            ],
        )

    return gold


def gold_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    return [_gold_asset(usecase, table, spec) for table, spec in usecase.gold.items()]
