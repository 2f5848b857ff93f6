"""Every table check can fail: a writer that corrupts one side of what a check compares makes that check fail.

The checks count what was committed (read back from the Delta version just written), each side on its own, so a
writer that loses, duplicates or alters rows after the frame left the asset cannot hide. Each test runs the real
asset with a warehouse that corrupts one table's commit while reporting the frame it was given as written, the way
a faulty writer would, and asserts the one check that must notice. The first runs show the same assets passing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from mlops_platform import names
from mlops_platform.defs.bronze.assets import bronze_assets
from mlops_platform.defs.silver.assets import silver_assets
from mlops_platform.resources.engine import ComputeEngine
from mlops_platform.resources.landing_zone import LandingZone
from mlops_platform.resources.spark import spark_sessions
from mlops_platform.resources.warehouse import DayRange, DeltaWarehouse, TableWrite
from mlops_platform.transforms import conform as conform_module
from mlops_platform_tests.conftest import FIRST_DAY, QUIET, check_results, flights_key, run_day
from mlops_platform_tests.medallion.test_fault_injection import (
    CSV_SOURCE,
    DAY,
    HEADER,
    R1,
    R2,
    R3,
    SOURCE,
    _stations,
    csv_bytes,
    day_file,
    land,
)


class FaultyWarehouse(DeltaWarehouse):
    """Commits ``table`` corrupted (``fault``: lose the last row or repeat the first) while answering, as a faulty
    writer would, that it wrote the frame it was given."""

    table: str
    fault: str

    def _corrupt(self, data: pa.Table) -> pa.Table:
        if self.fault == "lose":
            return data.slice(0, data.num_rows - 1)
        return pa.concat_tables([data, data.slice(0, 1)])

    def replace_days(self, schema: str, table: str, data: pa.Table, days: DayRange, **kwargs) -> TableWrite:
        if table != self.table:
            return super().replace_days(schema, table, data, days, **kwargs)
        write = super().replace_days(schema, table, self._corrupt(data), days, **kwargs)
        return dataclasses.replace(write, rows_written=data.num_rows)

    def merge(self, schema: str, table: str, data: pa.Table, keys) -> TableWrite:
        write = super().merge(schema, table, data, keys)
        if table != self.table:
            return write
        repeated = super().append(schema, table, data.slice(0, 1))
        return dataclasses.replace(write, version=repeated.version)


EXTRA = "KLGA,2,2013,3,10,2013-03-10T03:15:00Z,1.5,2013-03-01,false,"
BAD_VALUE = "KEWR,1,2013,3,10,2013-03-10T04:15:00Z,999,2013-03-01,true,"
FIRST_DELIVERY = csv_bytes(HEADER, R1, R2, R3, R1, EXTRA, BAD_VALUE)


def _stations_run(tmp_path: Path, warehouse: DeltaWarehouse) -> dict[str, dg.AssetCheckEvaluation]:
    """Bronze and silver of the hand-written stations day: 5 rows, one duplicate, one quarantined."""
    land(tmp_path, {day_file(): FIRST_DELIVERY})
    usecase = _stations(CSV_SOURCE)
    result = dg.materialize(
        [*bronze_assets(usecase), *silver_assets(usecase)], partition_key=DAY.isoformat(),
        resources={"warehouse": warehouse, "landing": LandingZone(root=str(tmp_path / "landing")),
                   "engine": ComputeEngine(kind="polars", pyspark=spark_sessions())},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, run_config=QUIET,
    )
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def _faulty(tmp_path: Path, table: str, fault: str) -> FaultyWarehouse:
    return FaultyWarehouse(root=str(tmp_path / "warehouse"), catalog="faults", table=table, fault=fault)


def test_the_silver_checks_pass_on_an_honest_writer(tmp_path):
    checks = _stations_run(tmp_path, DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="faults"))
    reconcile = checks["rows_reconcile"]
    assert reconcile.passed and checks["keys_unique"].passed and checks["has_rows"].passed
    assert reconcile.metadata["expected_rows"].value == 6
    assert "4 silver" in reconcile.metadata["how"].value and "1 quarantined" in reconcile.metadata["how"].value
    assert "1 duplicates (5 clean rows, 4 distinct keys)" in reconcile.metadata["how"].value


@pytest.mark.parametrize("table", [SOURCE, f"{SOURCE}_quarantine"], ids=["silver", "quarantine"])
def test_reconcile_fails_when_silver_or_quarantine_commits_a_row_less_than_it_reports(tmp_path, table):
    checks = _stations_run(tmp_path, _faulty(tmp_path, table, "lose"))
    reconcile = checks["rows_reconcile"]
    assert not reconcile.passed
    assert reconcile.metadata["difference"].value == -1


def test_reconcile_fails_when_conform_loses_a_clean_row_that_the_old_duplicate_count_would_have_absorbed(
        tmp_path, monkeypatch):
    """Duplicates are counted on the clean rows, never as bronze - quarantine - silver: a lost row stays lost."""
    honest = conform_module.conformed_tables

    def losing(engine, bronze, source):
        tables = honest(engine, bronze, source)
        return dataclasses.replace(tables, silver=tables.silver.slice(0, tables.silver.num_rows - 1))

    monkeypatch.setattr("mlops_platform.defs.silver.assets.conformed_tables", losing)
    checks = _stations_run(tmp_path, DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="faults"))
    assert not checks["rows_reconcile"].passed


def test_keys_unique_fails_when_silver_commits_a_key_twice(tmp_path):
    checks = _stations_run(tmp_path, _faulty(tmp_path, SOURCE, "repeat"))
    assert not checks["keys_unique"].passed
    assert not checks["rows_reconcile"].passed


def test_has_rows_fails_when_bronze_commits_nothing_of_what_it_read(tmp_path):
    class EmptyBronze(DeltaWarehouse):
        def replace_days(self, schema, table, data, days, **kwargs):
            if schema.endswith("bronze"):
                return dataclasses.replace(super().replace_days(schema, table, data.slice(0, 0), days, **kwargs),
                                           rows_written=data.num_rows)
            return super().replace_days(schema, table, data, days, **kwargs)

    checks = _stations_run(tmp_path, EmptyBronze(root=str(tmp_path / "warehouse"), catalog="faults"))
    assert not checks["has_rows"].passed
    assert checks["has_rows"].metadata["rows_read"].value == 6


# --- gold and the feature tables of the flights use case --------------------------------------------------------------

def _rerun(definitions: dg.Definitions, key: dg.AssetKey, warehouse: DeltaWarehouse
           ) -> dict[str, dg.AssetCheckEvaluation]:
    result = dg.materialize(
        [definitions.get_assets_def(key)], selection=[key], partition_key=FIRST_DAY.isoformat(),
        resources={**definitions.resources, "warehouse": warehouse},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, run_config=QUIET,
    )
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


@pytest.fixture
def processed_day(landed_settings, definitions):
    result = run_day(definitions, FIRST_DAY)
    assert result.success
    assert all(evaluation.passed for (_, name), evaluation in check_results(result).items()
               if name in ("rows_reconcile", "keys_unique", "scheduled_hour_present", "label_consistent"))
    return definitions


def _warehouse_like(definitions: dg.Definitions, table: str, fault: str) -> FaultyWarehouse:
    honest = definitions.resources["warehouse"]
    return FaultyWarehouse(root=honest.root, catalog=honest.catalog, table=table, fault=fault)


@pytest.mark.parametrize("fault, check", [("lose", "rows_reconcile"), ("repeat", "keys_unique")])
def test_gold_checks_fail_when_gold_commits_other_rows_than_it_built(processed_day, fault, check):
    checks = _rerun(processed_day, flights_key("gold", "flights"), _warehouse_like(processed_day, "flights", fault))
    assert not checks[check].passed


def test_a_gold_rule_judges_the_committed_values(processed_day):
    class AlteredGold(FaultyWarehouse):
        def _corrupt(self, data: pa.Table) -> pa.Table:
            field = data.schema.field("scheduled_hour")
            return data.set_column(data.schema.get_field_index(field.name), field, pa.nulls(data.num_rows, field.type))

    honest = processed_day.resources["warehouse"]
    checks = _rerun(processed_day, flights_key("gold", "flights"),
                    AlteredGold(root=honest.root, catalog=honest.catalog, table="flights", fault="alter"))
    assert not checks["scheduled_hour_present"].passed
    assert checks["scheduled_hour_present"].metadata["failing_share"].value == 1.0


def test_a_feature_table_keys_check_reads_the_committed_merge(processed_day):
    checks = _rerun(processed_day, dg.AssetKey(names.asset_path("flights", names.FEATURES, "origin_weather")),
                    _warehouse_like(processed_day, "origin_weather", "repeat"))
    assert not checks["keys_unique"].passed

