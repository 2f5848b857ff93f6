"""Crash hygiene: a run killed (``kill -9``) after any commit of a day (bronze, quarantine or silver) loses no good
row, and one killed between the quarantine and silver commits is detected and healed.

Silver's asset writes quarantine first and silver last, both commits stamped with the run's batch id and days. A
real subprocess runs the bronze and silver assets and kills itself with SIGKILL right after the quarantine commit,
as the kernel's OOM killer or a lost node would. The test then shows: no good row left silver, the stamps disagree,
and the next ordinary run reports the interrupted batch, rewrites both tables and reconciles.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from mlops_platform import names
from mlops_platform.defs.bronze.assets import bronze_assets
from mlops_platform.defs.quality import BATCH_STAMP, DAYS_STAMP
from mlops_platform.defs.silver.assets import silver_assets
from mlops_platform.resources.engine import ComputeEngine
from mlops_platform.resources.landing_zone import LandingZone
from mlops_platform.resources.spark import spark_sessions
from mlops_platform.resources.warehouse import DeltaWarehouse
from mlops_platform.settings import PROJECT_ROOT, ReplaceGuard
from mlops_platform_tests.conftest import QUIET
from mlops_platform_tests.medallion.test_checks_can_fail import FIRST_DELIVERY, _stations_run
from mlops_platform_tests.medallion.test_fault_injection import (
    CSV_SOURCE,
    DAY,
    HEADER,
    SOURCE,
    _stations,
    csv_bytes,
    day_file,
    land,
)

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    import dagster as dg
    from mlops_platform.defs.bronze.assets import bronze_assets
    from mlops_platform.defs.silver.assets import silver_assets
    from mlops_platform.resources.engine import ComputeEngine
    from mlops_platform.resources.landing_zone import LandingZone
    from mlops_platform.resources.spark import spark_sessions
    from mlops_platform.resources.warehouse import DeltaWarehouse
    from mlops_platform_tests.medallion.test_crash import usecase

    class DiesAfterQuarantine(DeltaWarehouse):
        def replace_days(self, schema, table, data, days, **kwargs):
            write = super().replace_days(schema, table, data, days, **kwargs)
            if f"{schema}.{table}".endswith(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)
            return write

    root = sys.argv[1]
    dg.materialize([*bronze_assets(usecase()), *silver_assets(usecase())], partition_key=sys.argv[2],
                   resources={"warehouse": DiesAfterQuarantine(root=root + "/warehouse", catalog="faults"),
                              "landing": LandingZone(root=root + "/landing"),
                              "engine": ComputeEngine(kind="polars", pyspark=spark_sessions())},
                   instance=dg.DagsterInstance.ephemeral())
""")


def usecase():
    # A toy day of a few rows: two bad ones of eight are a quarantine share the default guard would refuse.
    return _stations(CSV_SOURCE).model_copy(update={"replace_guard": ReplaceGuard(max_quarantine_share=0.5)})


def _table(tmp_path: Path, name: str) -> pl.DataFrame:
    return pl.from_arrow(DeltaTable(str(tmp_path / "warehouse" / "stations_silver" / name)).to_pyarrow_table())


def _stamp(tmp_path: Path, name: str) -> dict:
    return DeltaTable(str(tmp_path / "warehouse" / "stations_silver" / name)).history(limit=1)[0]


def _next_run(tmp_path: Path, warehouse: DeltaWarehouse) -> dg.ExecuteInProcessResult:
    """The ordinary run of the day after the crash: bronze and silver, as the daily job runs them."""
    stations = usecase()
    return dg.materialize(
        [*bronze_assets(stations), *silver_assets(stations)], partition_key=DAY.isoformat(),
        resources={"warehouse": warehouse, "landing": LandingZone(root=str(tmp_path / "landing")),
                   "engine": ComputeEngine(kind="polars", pyspark=spark_sessions())},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, run_config=QUIET,
    )


def test_a_run_killed_between_the_quarantine_and_silver_commits_is_healed_by_the_next_run(tmp_path):
    warehouse = DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="faults")
    first = _stations_run(tmp_path, warehouse)
    assert first["rows_reconcile"].passed
    good = _table(tmp_path, SOURCE).select("station", "reading_id", "value").sort("station", "reading_id")
    assert good.height == 4

    # A second delivery for the day beside the first: one new good row and one more bad one.
    land(tmp_path, {day_file(): FIRST_DELIVERY,
                    day_file(part=2): csv_bytes(HEADER, "KLGA,3,2013,3,10,2013-03-10T05:15:00Z,2.5,2013-03-01,true,",
                                                "KEWR,9,2013,3,10,2013-03-10T06:15:00Z,abc,2013-03-01,true,")})
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path), DAY.isoformat(), "_quarantine"],
                            cwd=PROJECT_ROOT, check=False, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    # Dead between the commits: quarantine holds the new batch, silver still every good row of the old one.
    quarantine_stamp, silver_stamp = _stamp(tmp_path, f"{SOURCE}_quarantine"), _stamp(tmp_path, SOURCE)
    assert quarantine_stamp[BATCH_STAMP] != silver_stamp[BATCH_STAMP]
    assert quarantine_stamp[DAYS_STAMP] == silver_stamp[DAYS_STAMP] == DAY.isoformat()
    assert _table(tmp_path, SOURCE).select("station", "reading_id", "value").sort("station", "reading_id"
                                                                                  ).equals(good)

    healed = _next_run(tmp_path, warehouse)
    assert healed.success
    silver_meta = next(event.materialization.metadata for event in healed.get_asset_materialization_events()
                       if event.asset_key.path[-2:] == [names.SILVER, SOURCE])
    assert silver_meta["healed_batch"].value == quarantine_stamp[BATCH_STAMP]
    checks = {evaluation.check_name: evaluation for evaluation in healed.get_asset_check_evaluations()}
    assert checks["rows_reconcile"].passed
    assert _stamp(tmp_path, f"{SOURCE}_quarantine")[BATCH_STAMP] == _stamp(tmp_path, SOURCE)[BATCH_STAMP]

    silver = _table(tmp_path, SOURCE)
    assert silver.height == 5 and ("KLGA", 3) in set(silver.select("station", "reading_id").rows())
    assert _table(tmp_path, f"{SOURCE}_quarantine").height == 2


@pytest.mark.parametrize("commit", [f"stations_bronze.{SOURCE}", f"stations_silver.{names.quarantine(SOURCE)}",
                                    f"stations_silver.{SOURCE}"])
def test_a_run_killed_after_any_commit_loses_no_good_row_and_the_next_run_completes_the_day(tmp_path, commit):
    warehouse = DeltaWarehouse(root=str(tmp_path / "warehouse"), catalog="faults")
    _stations_run(tmp_path, warehouse)
    good = set(_table(tmp_path, SOURCE).select("station", "reading_id").rows())
    land(tmp_path, {day_file(): FIRST_DELIVERY,
                    day_file(part=2): csv_bytes(HEADER, "KLGA,3,2013,3,10,2013-03-10T05:15:00Z,2.5,2013-03-01,true,",
                                                "KEWR,9,2013,3,10,2013-03-10T06:15:00Z,abc,2013-03-01,true,")})

    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path), DAY.isoformat(), commit],
                            cwd=PROJECT_ROOT, check=False, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert good <= set(_table(tmp_path, SOURCE).select("station", "reading_id").rows())

    rerun = _next_run(tmp_path, warehouse)
    assert rerun.success
    assert all(evaluation.passed for evaluation in rerun.get_asset_check_evaluations()
               if evaluation.check_name == "rows_reconcile")
    assert set(_table(tmp_path, SOURCE).select("station", "reading_id").rows()) == good | {("KLGA", 3)}
    assert _table(tmp_path, f"{SOURCE}_quarantine").height == 2

