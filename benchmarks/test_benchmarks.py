"""The benchmarks' own measuring parts, on workloads whose answer is known: the stack sampler and its rules, the
no-op twin of a job, and the peak RSS of a child process.

    .venv/bin/pytest -q -n 0 benchmarks/test_benchmarks.py
"""

from __future__ import annotations

import sys
import time

import dagster as dg
import pytest

from benchmarks import profiling
from benchmarks.harness import noop_twin, step_stages
from benchmarks.measure import timed_child
from benchmarks.profiling import (
    COMPUTE,
    DAGSTER_STORAGE,
    DELTA_READS,
    DELTA_WRITES,
    EVALUATION,
    IMPORTS,
    MLFLOW,
    MODEL_LOADING,
    ORCHESTRATION,
    REPORT,
    RUN_END,
    RUN_START,
    Sample,
    Split,
    StackSampler,
    Window,
    classify,
    hotspots,
)

SITE = "/venv/lib/python3.11/site-packages/"
DAGSTER_RUN = (SITE + "dagster/_core/execution/api.py", "execute_run_iterator", 1)
DAGSTER_STEP = (SITE + "dagster/_utils/__init__.py", "iterate_with_context", 1)
ASSET = (profiling.PLATFORM_DIR + "defs/monitoring/assets.py", "monitoring", 1)
DRIVER = (profiling.PLATFORM_DIR + "replay.py", "Replay.day", 1)


def frame(path: str, function: str) -> profiling.Frame:
    return (SITE + path, function, 1)


@pytest.mark.parametrize(("inner", "expected"), [
    ([frame("evidently/core/report.py", "Report.run"), frame("pandas/core/frame.py", "DataFrame.copy")], REPORT),
    ([frame("mlflow/sklearn/__init__.py", "load_model"), frame("mlflow/store/x.py", "get")], MODEL_LOADING),
    ([frame("deltalake/writer/writer.py", "write_deltalake")], DELTA_WRITES),
    ([frame("deltalake/table.py", "TableMerger.execute")], DELTA_WRITES),
    ([frame("deltalake/table.py", "DeltaTable.to_pyarrow_table")], DELTA_READS),
    ([frame("polars/io/delta/functions.py", "read_delta")], DELTA_READS),
    ([(profiling.PLATFORM_DIR + "storage/delta.py", "DeltaTables.read", 1),
      frame("pyarrow/dataset.py", "Dataset.to_table")], DELTA_READS),
    ([frame("mlflow/tracking/client.py", "MlflowClient.get_run")], MLFLOW),
    ([frame("mlflow/models/evaluation/base.py", "evaluate"), frame("sklearn/metrics/_ranking.py", "roc_auc_score")],
     EVALUATION),
    ([frame("polars/dataframe/frame.py", "DataFrame.filter")], COMPUTE),
    ([("<frozen importlib._bootstrap>", "_find_and_load", 1)], IMPORTS),
])
def test_a_sample_in_a_step_is_classified_by_what_runs_under_the_asset(inner, expected) -> None:
    assert classify((DRIVER, DAGSTER_RUN, DAGSTER_STEP, ASSET, *inner)) == expected


def test_dagster_alone_is_orchestration_or_storage() -> None:
    assert classify((DRIVER, DAGSTER_RUN, DAGSTER_STEP)) == ORCHESTRATION
    storage = frame("dagster/_core/storage/event_log/sql_event_log.py", "SqlEventLogStorage.store_event")
    assert classify((DRIVER, DAGSTER_RUN, storage)) == DAGSTER_STORAGE
    # The replay driver is not a step's compute even though it is the platform's code.
    assert classify((DRIVER, DAGSTER_RUN)) == ORCHESTRATION


def test_samples_outside_steps_fall_in_run_start_between_or_end() -> None:
    stack = (DRIVER, DAGSTER_RUN, DAGSTER_STEP, ASSET)
    samples = [Sample(at, 1.0, stack) for at in (0.5, 1.5, 2.5, 3.5, 4.5)]
    split = Split()
    split.add(samples, [Window("bronze", 1.0, 2.0), Window("monitoring", 3.0, 4.0)])
    assert split.by_stage() == {"bronze": 1.0, "monitoring": 1.0, RUN_START: 1.0, "(between)": 1.0, RUN_END: 1.0}
    assert split.total == 5.0


def test_hotspots_charge_a_library_only_with_what_runs_outside_the_platform() -> None:
    delta = frame("deltalake/writer/writer.py", "write_deltalake")
    samples = [Sample(0.0, 3.0, (DRIVER, DAGSTER_RUN, DAGSTER_STEP, ASSET)),
               Sample(0.0, 1.0, (DRIVER, DAGSTER_RUN, DAGSTER_STEP, ASSET, delta)),
               Sample(0.0, 2.0, (DRIVER, DAGSTER_RUN, DAGSTER_STEP))]
    seconds = {spot["function"]: spot["seconds"] for spot in hotspots(samples)}
    assert seconds["monitoring"] == 4.0
    assert seconds["write_deltalake"] == 1.0
    assert seconds["iterate_with_context"] == 2.0  # not the 4 s the asset body took under it
    assert "Replay.day" not in seconds


def _in_file(function, path: str):
    """``function`` as if it were defined in ``path``: its frames carry that file name, as a library's would."""
    function.__code__ = function.__code__.replace(co_filename=path)
    return function


def _sleep() -> None:
    time.sleep(0.4)


def _spin() -> None:
    end = time.perf_counter() + 0.4
    while time.perf_counter() < end:
        pass


def test_the_sampler_adds_up_to_wall_time_and_finds_where_it_went() -> None:
    write = _in_file(_sleep, SITE + "deltalake/writer/writer.py")
    busy = _in_file(_spin, profiling.PLATFORM_DIR + "defs/gold/assets.py")
    with StackSampler(0.005) as sampler:
        begin, clock = time.time(), time.perf_counter()
        write()
        busy()
        wall, end = time.perf_counter() - clock, time.time()
    split = Split()
    split.add(sampler.between(begin, end), [])
    by_category = split.by_category()
    assert split.total == pytest.approx(wall, rel=0.1)
    assert by_category[DELTA_WRITES] == pytest.approx(0.4, rel=0.2)
    assert by_category[COMPUTE] == pytest.approx(0.4, rel=0.2)


def _graph() -> dg.Definitions:
    @dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="source")], group_name="bronze")
    def source():
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name="positive", passed=True)

    @dg.asset(deps=[source], group_name="gold")
    def target() -> None:
        time.sleep(0.5)

    @dg.asset_check(asset=target)
    def fresh() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    return dg.Definitions(assets=[source, target], asset_checks=[fresh],
                          jobs=[dg.define_asset_job("both", selection=[source, target])])


def test_the_noop_twin_has_the_same_steps_and_does_none_of_the_work() -> None:
    definitions = _graph()
    job = definitions.resolve_job_def("both")
    twin = noop_twin(definitions, job)
    assert len(twin.graph.nodes) == len(job.graph.nodes) == 3
    assert step_stages(definitions, job) == {"source": "bronze", "target": "gold", "target_fresh": "gold checks"}
    result = twin.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    keys = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert keys == {"noop/source", "noop/target"}
    assert len(result.get_asset_check_evaluations()) == 2


def test_a_child_reports_its_own_peak_memory_not_its_parents() -> None:
    held = bytearray(300 * 1024 * 1024)
    held[::4096] = b"x" * len(held[::4096])
    small = timed_child([sys.executable, "-c", "pass"])
    large = timed_child([sys.executable, "-c", "x = bytearray(200 * 1024 * 1024); x[::4096] = b'x' * len(x[::4096])"])
    assert small.returncode == large.returncode == 0
    assert small.peak_rss_mb < 100
    assert large.peak_rss_mb > 200
    del held


def test_the_training_job_bench_calls_any_difference_in_what_was_decided() -> None:
    from benchmarks.bench_training_job import DECISIONS, same

    decided = {"best_params": {"max_iter": 120}, "test_metrics": {"test_roc_auc": 0.61329}, "gate_passed": False,
               "gate_candidate": {"roc_auc": 0.61329}, "gate_champion": {"roc_auc": 0.61287}, "champions": "1"}
    reference = {"models": {"delay": decided}}
    assert same([reference, reference], reference) == dict.fromkeys(DECISIONS, True)
    for what, other in (("gate_candidate", {"roc_auc": 0.61330}), ("gate_passed", True), ("champions", "2")):
        moved = {"models": {"delay": {**decided, what: other}}}
        assert same([reference, moved], reference) == {name: name != what for name in DECISIONS}
