"""No good day replaced by a worse one: hand-written landing files that would shrink a processed day are refused.

Each test processes a real day first, then lands a bad file for the same day by hand (empty, header only, dates in
another format) and runs again. The run must fail with the numbers, and every table of the day must stay at the
version it had; with the operator's explicit allowance (run tag or ``--allow-shrink``) the same run goes through.
On the flights use case (the job from landing to gold) and on seattle_weather (one row a day, a date column).
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from mlops_platform import names
from mlops_platform.defs import build_definitions
from mlops_platform.guard import judge_replacement
from mlops_platform.landing import files_for_day, land_days
from mlops_platform.replay import failure_messages
from mlops_platform.settings import ReplaceGuard, Settings
from mlops_platform_tests.conftest import FIRST_DAY, QUIET, flights_table, run_day

ALLOW = {names.ALLOW_SHRINK_TAG: "true"}
FLIGHT_TABLES = [flights_table("bronze", "flights"), flights_table("silver", "flights"),
                 flights_table("silver", "flights_quarantine"), flights_table("gold", "flights")]


def _state(warehouse, tables, column_of) -> dict[str, tuple[int | None, int]]:
    """Each table's version and its row count for the day."""
    return {table.table + "@" + table.schema: (warehouse.version(*table),
                                               warehouse.read(*table, filters=[(column_of(table), "=", FIRST_DAY)])
                                               .num_rows)
            for table in tables}


def _flight_day_column(table: names.TableName) -> str:
    return "_landing_date" if "bronze" in table.schema or "quarantine" in table.table else "flight_date"


def _landed_file(settings: Settings, usecase: str, source: str, day: dt.date):
    spec = settings.usecases[usecase].sources[source]
    (path,) = files_for_day(settings.landing_dir, usecase, source, spec, day)
    return path


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(failure_messages(result))


def test_pure_guard_refuses_an_empty_day_that_had_rows_and_accepts_a_new_one():
    limits = ReplaceGuard()
    refused = judge_replacement("t", "2013-01-01", old_rows=915, new_rows=0, limits=limits)
    assert refused.refused and "915" in refused.message and "100.0% drop" in refused.message
    assert not judge_replacement("t", "2013-01-01", old_rows=0, new_rows=0, limits=limits).refused
    assert not judge_replacement("t", "d", old_rows=915, new_rows=460, limits=limits).refused
    assert judge_replacement("t", "d", old_rows=915, new_rows=457, limits=limits).refused
    shares = judge_replacement("t", "d", old_rows=10, new_rows=8, quarantined=3, source_rows=11, limits=limits)
    assert shares.refused and "27.3%" in shares.message


@pytest.mark.parametrize("bad", ["header_only", "empty", "other_date_format"])
def test_a_bad_flights_file_cannot_replace_a_processed_day(landed_settings, bad):
    definitions = build_definitions(landed_settings)
    warehouse = definitions.resources["warehouse"]
    instance = dg.DagsterInstance.ephemeral()
    assert run_day(definitions, FIRST_DAY, instance).success
    before = _state(warehouse, FLIGHT_TABLES, _flight_day_column)
    assert before["flights@flights_gold"][1] > 800

    path = _landed_file(landed_settings, "flights", "flights", FIRST_DAY)
    lines = path.read_text().splitlines(keepends=True)
    if bad == "header_only":
        path.write_text(lines[0])
    elif bad == "empty":
        path.write_bytes(b"")
    else:
        # time_hour in another format: every row fails its type and would be quarantined.
        header = lines[0].rstrip("\n").split(",")
        column = header.index("time_hour")

        def reformat(line: str) -> str:
            fields = line.rstrip("\n").split(",")
            fields[column] = fields[column].replace("-", "/")
            return ",".join(fields) + "\n"

        path.write_text(lines[0] + "".join(reformat(line) for line in lines[1:]))

    refused = run_day(definitions, FIRST_DAY, instance)
    assert not refused.success
    message = _failure(refused)
    assert "refusing to replace 2013-01-01" in message and "--allow-shrink" in message
    assert ("drop" in message) if bad != "other_date_format" else ("quarantined" in message)
    assert _state(warehouse, FLIGHT_TABLES, _flight_day_column) == before

    accepted = definitions.resolve_job_def("flights_daily").execute_in_process(
        partition_key=FIRST_DAY.isoformat(), instance=instance, raise_on_error=False, run_config=QUIET, tags=ALLOW)
    assert accepted.success or bad == "other_date_format", _failure(accepted)
    after = _state(warehouse, FLIGHT_TABLES, _flight_day_column)
    assert after["flights@flights_bronze"][0] == before["flights@flights_bronze"][0] + 1
    assert after["flights@flights_bronze"][1] == (0 if bad != "other_date_format" else before["flights@flights_bronze"][1])


def test_the_guard_limits_and_the_allowance_come_from_the_use_case(landed_settings):
    definitions = build_definitions(landed_settings)
    assert run_day(definitions, FIRST_DAY).success
    path = _landed_file(landed_settings, "flights", "flights", FIRST_DAY)
    path.write_text(path.read_text().splitlines(keepends=True)[0])
    usecase = landed_settings.usecases["flights"]
    allowed = usecase.model_copy(update={"replace_guard": ReplaceGuard(allow_shrink=True)})
    settings = landed_settings.model_copy(update={"usecases": {**landed_settings.usecases, "flights": allowed}})
    assert run_day(build_definitions(settings), FIRST_DAY).success
    assert definitions.resources["warehouse"].read(*flights_table("silver", "flights"),
                                                   filters=[("flight_date", "=", FIRST_DAY)]).num_rows == 0


SEATTLE_DAY = dt.date(2012, 1, 1)


@pytest.mark.parametrize("bad", ["header_only", "empty", "other_date_format"])
def test_a_bad_seattle_weather_file_cannot_replace_a_processed_day(settings, bad):
    usecase = settings.usecases["seattle_weather"]
    land_days(usecase, settings.landing_dir, [SEATTLE_DAY])
    definitions = build_definitions(settings)
    warehouse = definitions.resources["warehouse"]
    instance = dg.DagsterInstance.ephemeral()
    job = definitions.resolve_job_def(names.daily_job(usecase.name))

    def run(**kwargs) -> dg.ExecuteInProcessResult:
        return job.execute_in_process(partition_key=SEATTLE_DAY.isoformat(), instance=instance,
                                      raise_on_error=False, run_config=QUIET, **kwargs)

    tables = [names.table(usecase.name, "bronze", "weather"), names.table(usecase.name, "silver", "weather"),
              names.table(usecase.name, "gold", "days")]
    first = run()
    assert warehouse.exists(*tables[2]), _failure(first)
    before = {table: (warehouse.version(*table), warehouse.read(*table).num_rows) for table in tables}
    assert before[tables[1]][1] == 1

    path = _landed_file(settings, usecase.name, "weather", SEATTLE_DAY)
    header, row = path.read_text().splitlines()
    if bad == "header_only":
        path.write_text(header + "\n")
    elif bad == "empty":
        path.write_bytes(b"")
    else:
        path.write_text(header + "\n" + row.replace("2012-01-01", "01/01/2012") + "\n")

    refused = run()
    assert not refused.success
    assert "refusing to replace 2012-01-01" in _failure(refused)
    assert {table: (warehouse.version(*table), warehouse.read(*table).num_rows) for table in tables} == before

    run(tags=ALLOW)
    assert warehouse.version(*tables[0]) == before[tables[0]][0] + 1


@pytest.mark.parametrize("flag, allowed", [([], False), (["--allow-shrink"], True)])
def test_mlops_run_allow_shrink_reaches_the_use_case_the_assets_are_built_from(settings, tmp_path, monkeypatch,
                                                                                flag, allowed):
    from mlops_platform import cli, replay

    seen = {}

    def fake_replay(settings_, usecase, definitions, *args, **kwargs):
        seen["usecase"], seen["settings"] = usecase, settings_
        return []

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setattr(replay, "replay", fake_replay)
    monkeypatch.setattr(replay, "layer_counts", lambda *args: {})
    monkeypatch.setattr(replay, "champions", lambda *args: [])
    assert cli.main(["run", "--usecase", "seattle_weather", "--days", "1", "--skip-training", *flag]) == 0
    assert seen["usecase"].replace_guard.allow_shrink is allowed
    assert seen["settings"].usecases["seattle_weather"].replace_guard.allow_shrink is allowed
