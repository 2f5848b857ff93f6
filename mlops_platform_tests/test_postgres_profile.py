"""The production instance profile (config/dagster/postgres.yaml): a real run stored in a throwaway PostgreSQL database.

Needs PostgreSQL on 127.0.0.1:5432 accepting the ``postgres`` user without a password (trust auth); skipped when
nothing listens there.
"""

from __future__ import annotations

import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from psycopg2 import sql

from mlops_platform.settings import PROJECT_ROOT
from mlops_platform_tests.conftest import LANDED_DAYS, flights_key, run_day

PROFILE = PROJECT_ROOT / "config" / "dagster" / "postgres.yaml"
URL_ENV = "DAGSTER_POSTGRES_URL"
HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
DAY = LANDED_DAYS[0]


def _listening() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            return True
    except OSError:
        return False


requires_postgres = pytest.mark.skipif(
    not _listening(), reason=f"no PostgreSQL listening on {HOST}:{PORT}: start one to test {PROFILE.name}"
)


def _admin() -> psycopg2.extensions.connection:
    connection = psycopg2.connect(host=HOST, port=PORT, user=USER, dbname="postgres")
    connection.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return connection


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database with a unique name, dropped afterwards even if the instance still holds connections."""
    name = f"mlops_test_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture
def postgres_instance(database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                      ) -> Iterator[dg.DagsterInstance]:
    # SQLAlchemy 2.1 maps a bare postgresql:// URL to psycopg 3, which is not installed: name the driver.
    url = f"postgresql+psycopg2://{USER}@{HOST}:{PORT}/{database}"
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROFILE, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv(URL_ENV, url)
    instance = dg.DagsterInstance.get()
    try:
        yield instance
    finally:
        instance.dispose()


def _count(database: str, query: str, *params: object) -> int:
    connection = psycopg2.connect(host=HOST, port=PORT, user=USER, dbname=database)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, params)
            (count,) = cursor.fetchone()
    finally:
        connection.close()
    return count


def test_the_profile_reads_the_connection_from_the_environment_only():
    profile = yaml.safe_load(PROFILE.read_text())

    assert profile["storage"] == {"postgres": {"postgres_url": {"env": URL_ENV}}}
    assert "postgresql://" not in PROFILE.read_text()


@requires_postgres
def test_a_run_its_materializations_and_check_results_are_stored_in_postgres(
    landed_settings, definitions, postgres_instance, database
):
    instance = postgres_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)

    result = run_day(definitions, DAY, instance)

    assert result.success
    run_id = result.run_id
    # Through the instance, as the webserver and the sensors read it.
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    gold = instance.fetch_materializations(flights_key("gold", "flights"), limit=5).records
    assert [record.run_id for record in gold] == [run_id]
    assert gold[0].partition_key == DAY.isoformat()
    check = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(flights_key("silver", "flights"), "rows_reconcile")
    )
    assert check is not None and check.run_id == run_id
    assert check.status.value == "SUCCEEDED"

    # And directly in PostgreSQL: the rows are there, not in a file under DAGSTER_HOME.
    materialized = len(result.get_asset_materialization_events())
    evaluations = sum(1 for event in result.all_events if event.event_type_value == "ASSET_CHECK_EVALUATION")
    assert materialized > 0 and evaluations > 0
    assert _count(database, "SELECT count(*) FROM runs WHERE run_id = %s AND status = 'SUCCESS'", run_id) == 1
    assert _count(
        database,
        "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        run_id,
    ) == materialized
    assert _count(
        database,
        "SELECT count(*) FROM asset_check_executions WHERE run_id = %s AND execution_status <> 'PLANNED'",
        run_id,
    ) == evaluations
    assert not list(Path(instance.root_directory).rglob("*.db"))


@requires_postgres
def test_without_the_url_the_instance_fails_naming_the_variable(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROFILE, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv(URL_ENV, raising=False)

    with pytest.raises(Exception, match=URL_ENV):
        dg.DagsterInstance.get()
