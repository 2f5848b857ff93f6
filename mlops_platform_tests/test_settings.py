"""Configuration: a wrong value fails before anything runs, naming the file, the field and what was expected;
``MLOPS_ENV`` picks the environment and ``MLOPS_DATA_DIR`` relocates the data."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mlops_platform.resources import build_resources
from mlops_platform.settings import (
    CONFIG_DIR_ENV,
    DATA_DIR_ENV,
    ENV_VAR,
    PROJECT_ROOT,
    ConfigError,
    load_settings,
)


@pytest.fixture(autouse=True)
def _no_ambient_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the shell running the tests exports must not decide the outcome.
    for name in (ENV_VAR, DATA_DIR_ENV, CONFIG_DIR_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A private copy of the project's config/ that a test may break."""
    return Path(shutil.copytree(PROJECT_ROOT / "config", tmp_path / "config"))


def _edit(path: Path, old: str, new: str) -> Path:
    """Replace one exact snippet, so the rest of the file stays as shipped (and the test fails if it moved)."""
    text = path.read_text()
    assert text.count(old) >= 1, f"{old!r} is no longer in {path}: update this test"
    path.write_text(text.replace(old, new, 1))
    return path


def _error(config_dir: Path, environment: str = "local") -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(environment, config_dir=config_dir)
    return str(caught.value)


def test_the_shipped_configuration_loads(config_dir):
    settings = load_settings("local", config_dir=config_dir)

    assert settings.environment.engine == "polars"
    assert set(settings.usecases["flights"].daily_sources) == {"flights", "weather"}


def test_a_wrong_engine_names_the_file_the_field_and_the_choices(config_dir):
    path = _edit(config_dir / "environments" / "local.yaml", "engine: polars", "engine: duckdb")

    message = _error(config_dir)

    assert message.startswith(f"{path}: invalid EnvironmentConfig")
    assert "field 'engine'" in message
    assert "'polars' or 'spark'" in message
    assert "'duckdb'" in message


def test_an_unknown_field_is_refused_rather_than_ignored(config_dir):
    path = _edit(config_dir / "usecases" / "flights.yaml", "freshness_hours: 36", "freshnes_hours: 36")

    message = _error(config_dir)

    assert message.startswith(f"{path}: invalid UseCaseConfig")
    assert "field 'freshnes_hours': Extra inputs are not permitted" in message


def test_a_rule_on_an_unknown_column_names_the_source_rule_and_column(config_dir):
    path = _edit(
        config_dir / "usecases" / "flights.yaml",
        "{name: carrier_present, kind: not_null, column: carrier}",
        "{name: carrier_present, kind: not_null, column: carrier_code}",
    )

    message = _error(config_dir)

    assert message.startswith(f"{path}: invalid UseCaseConfig")
    assert "field 'sources.flights.rules.0.column': rule 'carrier_present' names unknown column 'carrier_code'" in (
        message)


def test_a_range_rule_without_bounds_names_the_rule_and_what_it_needs(config_dir):
    path = _edit(
        config_dir / "usecases" / "flights.yaml",
        "{name: scheduled_time_valid, kind: range, column: sched_dep_time, min: 0, max: 2359}",
        "{name: scheduled_time_valid, kind: range, column: sched_dep_time}",
    )

    message = _error(config_dir)

    assert message.startswith(f"{path}: invalid UseCaseConfig")
    assert re.search(r"field 'sources\.flights\.rules\.\d+\.min': rule 'scheduled_time_valid': a range rule needs "
                     r"min, max or both", message)


def test_a_wrongly_typed_value_names_the_field_and_the_expected_type(config_dir):
    path = _edit(config_dir / "usecases" / "flights.yaml", "max_quarantine_share: 0.01", "max_quarantine_share: lots")

    message = _error(config_dir)

    assert message.startswith(f"{path}: invalid UseCaseConfig")
    assert "field 'sources.flights.max_quarantine_share'" in message
    assert "valid number" in message
    assert "'lots'" in message


def test_gold_reading_an_unknown_source_names_the_table_and_the_source(config_dir):
    path = _edit(config_dir / "usecases" / "flights.yaml",
                 "inputs: [flights, weather, planes, airlines]", "inputs: [flights, weather, planes, radar]")

    message = _error(config_dir)

    assert message.startswith(f"{path}: invalid UseCaseConfig")
    assert "field 'gold.flights.inputs.3': gold table 'flights' reads unknown source 'radar'" in message
    # The field at fault is named, not the whole use case dumped as "(top level)".
    assert "(top level)" not in message and "description" not in message


@pytest.mark.parametrize(("old", "new", "field", "says"), [
    ("model: delay\n  # One day's", "model: dealy\n  # One day's", "monitoring.model",
     "monitoring watches unknown model 'dealy'"),
    ("    label: is_delayed", "    label: is_late", "models.delay.label", "label 'is_late' is not a training_set label"),
    ("{table: route_delays, keys: {origin: origin, dest: dest, flight_date: feature_date}}",
     "{table: route_delay, keys: {origin: origin, dest: dest, flight_date: feature_date}}",
     "training_set.lookups.1.table", "unknown feature table 'route_delay'"),
    ("estimator: hist_gradient_boosting      # or", "estimator: xgboost      # or", "models.delay.estimator",
     ("unknown estimator 'xgboost'; known: ['hist_gradient_boosting', 'linear_regression', 'logistic_regression', "
     "'random_forest']")),
    ("    estimator: hist_gradient_boosting\n    task: regression",
     "    estimator: logistic_regression\n    task: regression", "models.arrival_delay.estimator",
     ("'logistic_regression' cannot learn regression; choose among ['hist_gradient_boosting', 'linear_regression', "
     "'random_forest']")),
    ("    task: classification", "    task: classification\n    registered_name: my_model", "models.delay.registered_name",
     "is derived from the use case and model names ('flights_delay'): remove it"),
    ("split: {by: time, window_days: 120", "split: {by: time, stratify_by: is_delayed, window_days: 120",
     "training_set.split.stratify_by", "stratify_by applies to random splits, not 'time'"),
    ("      staging: {name: flights-delay-staging}", "      staging: {name: flights-delay}",
     "serving.delay.stages.production.name", "staging and production need different endpoint names"),
])
def test_a_check_across_fields_names_the_field_at_fault(config_dir, old, new, field, says):
    path = _edit(config_dir / "usecases" / "flights.yaml", old, new)

    message = _error(config_dir)

    assert message.startswith(f"{path}: invalid UseCaseConfig")
    assert f"field '{field}': {says}" in message, message
    assert "(top level)" not in message


def test_registered_models_and_tables_are_prefixed_by_the_use_case(config_dir):
    from mlops_platform import names

    usecase = load_settings("local", config_dir=config_dir).usecases["flights"]

    assert {key: model.registered_name for key, model in usecase.models.items()} == {
        "delay": "flights_delay", "arrival_delay": "flights_arrival_delay"}
    assert names.table("flights", names.SILVER, "flights").qualified("local") == "local.flights_silver.flights"
    # In Unity Catalog the models live in the environment's catalog and model schema.
    prod = load_settings("prod", config_dir=config_dir).usecases["flights"]
    assert prod.models["delay"].registered_name == "mlops_prod.models.flights_delay"


def test_a_use_case_whose_module_does_not_exist_names_the_use_case_and_the_file(config_dir):
    path = _edit(config_dir / "usecases" / "flights.yaml", "module: mlops_platform.usecases.flights",
                 "module: mlops_platform.usecases.flightz")

    assert _error(config_dir) == (f"{path}: field 'module': use case 'flights' names module "
                                  "'mlops_platform.usecases.flightz', which is not importable (a Python module path, "
                                  "e.g. mlops_platform.usecases.flights)")


def test_a_missing_builder_names_the_use_case_the_file_and_the_field(config_dir):
    from mlops_platform.defs import build_definitions

    path = _edit(config_dir / "usecases" / "flights.yaml", "builder: build_gold_flights",
                 "builder: build_gold_flightz")
    settings = load_settings("local", config_dir=config_dir)

    with pytest.raises(ConfigError) as caught:
        build_definitions(settings)

    assert str(caught.value) == (f"{path}: field 'gold.flights.builder': use case 'flights': module "
                                 "mlops_platform.usecases.flights has no function 'build_gold_flightz'")


def test_a_use_case_named_unlike_its_file_is_refused(config_dir):
    path = _edit(config_dir / "usecases" / "flights.yaml", "name: flights", "name: flight")

    assert _error(config_dir) == f"{path}: field 'name': must be the file's name 'flights' (got 'flight')"


def test_two_use_cases_may_not_share_an_endpoint_name(config_dir):
    twin = config_dir / "usecases" / "flights_copy.yaml"
    twin.write_text((config_dir / "usecases" / "flights.yaml").read_text().replace("name: flights\n",
                                                                                     "name: flights_copy\n"))
    _edit(config_dir / "environments" / "local.yaml", "usecases: [flights", "usecases: [flights_copy, flights")

    message = _error(config_dir)

    assert "field 'serving.delay.stages.staging.name': endpoint name 'flights-delay-staging' is already used by " \
           "use case 'flights_copy'" in message


def test_a_file_that_is_not_a_mapping_is_refused(config_dir):
    path = config_dir / "usecases" / "flights.yaml"
    path.write_text("- flights\n- weather\n")

    assert _error(config_dir) == f"{path}: expected a mapping at the top level, got list"


def test_a_file_that_is_not_yaml_is_refused(config_dir):
    path = _edit(config_dir / "environments" / "local.yaml", "seattle_weather]", "seattle_weather")

    message = _error(config_dir)

    assert message.startswith(f"{path}: not valid YAML")


def test_a_missing_use_case_file_is_named(config_dir):
    _edit(config_dir / "environments" / "local.yaml", "usecases: [flights,", "usecases: [flights, radar,")

    assert _error(config_dir) == f"{config_dir / 'usecases' / 'radar.yaml'}: no such configuration file"


def test_a_missing_environment_file_is_named(config_dir, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "qa")

    with pytest.raises(ConfigError, match=re.escape(f"{config_dir / 'environments' / 'qa.yaml'}: no such")):
        load_settings(config_dir=config_dir)


def test_mlops_env_picks_the_environment(monkeypatch):
    assert load_settings().environment.name == "local"

    monkeypatch.setenv(ENV_VAR, "staging")
    staging = load_settings()

    assert (staging.environment.name, staging.environment.engine, staging.environment.catalog) == (
        "staging", "spark", "mlops_staging",
    )
    assert staging.environment.databricks is not None
    # An explicit argument still wins over the variable (what tests and the CLI's --env rely on).
    assert load_settings("prod").environment.catalog == "mlops_prod"


def test_mlops_config_dir_points_at_another_config_tree(config_dir, monkeypatch):
    _edit(config_dir / "environments" / "local.yaml", "catalog: local", "catalog: elsewhere")
    monkeypatch.setenv(CONFIG_DIR_ENV, str(config_dir))

    assert load_settings().environment.catalog == "elsewhere"


def test_mlops_data_dir_relocates_all_data(tmp_path, monkeypatch):
    assert load_settings().data_dir == PROJECT_ROOT / "data"  # relative in the file, anchored at the project

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    settings = load_settings()

    assert settings.data_dir == tmp_path / "elsewhere"
    assert settings.landing_dir == tmp_path / "elsewhere" / "landing"
    assert settings.warehouse_dir == tmp_path / "elsewhere" / "warehouse"
    assert settings.mlflow_dir == tmp_path / "elsewhere" / "mlflow"
    resources = build_resources(settings)
    assert resources["warehouse"].root == str(tmp_path / "elsewhere" / "warehouse")
    assert resources["landing"].root == str(tmp_path / "elsewhere" / "landing")
