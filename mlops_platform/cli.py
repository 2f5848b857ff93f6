"""`mlops`: the command line a platform team uses, thin over the same code the assets run.

Each command is declared on its handler with its options; `mlops COMMAND --help` describes it. Shell completion:
eval "$(_MLOPS_COMPLETE=bash_source mlops)" (zsh_source, fish_source for those shells). Handlers import what they
need when they run, so `mlops --help` stays fast.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import sys
import warnings
from types import SimpleNamespace

import click

from mlops_platform.settings import ConfigError, Settings, UseCaseConfig, load_settings

# A command's options as its handler reads them (``args.usecase``, ``args.start``).
Args = SimpleNamespace

# A use case of snapshots only has no window of days: its replay lands this many daily snapshots by default.
DEFAULT_SNAPSHOT_DAYS = 7


class _Session:
    """What the group passes its commands: the environment named by ``--env``, its settings loaded on first use."""

    def __init__(self, env: str | None) -> None:
        self.env = env
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.env)
        return self._settings


def _handler(function):
    """A command's callback from a handler of ``(args, settings)`` returning the exit code."""

    @click.pass_obj
    @functools.wraps(function)
    def callback(session: _Session, **options) -> int:
        return function(Args(**options), session.settings)

    return callback


# Options several commands share, declared once.
usecase_option = click.option("--usecase", help="use case name (default: the environment's first)")
json_option = click.option("--json", "json", is_flag=True, help="machine-readable output")


def days_options(command):
    command = click.option("--days", type=int, help="number of days (default: the use case's replay window)")(command)
    command = click.option("--start", help="first day, YYYY-MM-DD (default: the use case's replay start)")(command)
    return usecase_option(command)


def range_options(command):
    command = click.option("--end", required=True, help="last day (inclusive), YYYY-MM-DD")(command)
    command = click.option("--start", required=True, help="first day, YYYY-MM-DD")(command)
    return usecase_option(command)


def model_options(command):
    command = usecase_option(command)
    return click.option("--model", required=True, help="model name under the use case's 'models'")(command)


@click.group(name="mlops", help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--env", help="environment name under config/environments (default: $MLOPS_ENV or local)")
@click.pass_context
def cli(context: click.Context, env: str | None) -> None:
    context.obj = _Session(env)


@cli.group(help="monitoring runs")
def monitoring() -> None:
    pass


@cli.group(help="the inference table")
def inference() -> None:
    pass


@cli.group(help="alert sinks")
def alerts() -> None:
    pass


def _usecase(settings: Settings, name: str | None) -> UseCaseConfig:
    if name is None:
        return next(iter(settings.usecases.values()))
    if name not in settings.usecases:
        raise ConfigError(f"use case '{name}' is not enabled in environment '{settings.environment.name}' "
                          f"(enabled: {sorted(settings.usecases)})")
    return settings.usecases[name]


def _days(args: Args, usecase: UseCaseConfig, *, replay: bool) -> list[dt.date]:
    """The days a command covers: ``--start`` / ``--days``, by default the use case's own replay window."""
    from mlops_platform.landing import day_range

    window, defaults = usecase.partitions, usecase.replay
    start = args.start or defaults.start or (window.start if window else dt.datetime.now(dt.UTC).date())
    start = start if isinstance(start, dt.date) else dt.date.fromisoformat(start)
    if args.days is not None:
        days = args.days
    elif replay and defaults.days:
        days = defaults.days
    elif replay and window:
        days = (window.end - start).days
    else:
        days = defaults.bootstrap_days if window else DEFAULT_SNAPSHOT_DAYS
    return day_range(start, days)


@cli.command("land", help="write days of source data into the landing zone")
@days_options
@_handler
def cmd_land(args: Args, settings: Settings) -> int:
    from mlops_platform.landing import land_days

    usecase = _usecase(settings, args.usecase)
    days = _days(args, usecase, replay=False)
    paths = land_days(usecase, settings.landing_dir, days)
    print(f"landed {len(paths)} files for {len(days)} day(s) from {days[0]} under "
          f"{settings.landing_dir / usecase.name}")
    return 0


@cli.command("run", help="replay days: tables, a first champion, scoring, monitoring and drift-triggered "
                         "retraining")
@days_options
@click.option("--skip-training", is_flag=True, help="only the daily job: no champion, no retraining")
@click.option("--allow-shrink", is_flag=True,
              help="accept days replaced by far fewer rows or mostly quarantine (refused by default)")
@click.option("--bootstrap-days", type=int,
              help="days replayed before the first champion is trained (default: the use case's replay)")
@_handler
def cmd_run(args: Args, settings: Settings) -> int:
    # The terminal shows the timeline; MLflow's progress lines (registrations, evaluations, downloads) would bury
    # it, and what they say is in the MLflow UI. Set before MLflow is imported: it configures its loggers then.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.utils.logging_utils import disable_logging

    from mlops_platform.defs import build_definitions
    from mlops_platform.instance import persistent_instance
    from mlops_platform.monitoring.summary import write_replay_summary
    from mlops_platform.replay import champions, layer_counts, replay, succeeded

    disable_logging()
    usecase = _usecase(settings, args.usecase)
    if args.allow_shrink:
        # The operator accepts, for this replay, days replaced by fewer or mostly quarantined rows (replace_guard).
        usecase = usecase.model_copy(update={"replace_guard": usecase.replace_guard.model_copy(
            update={"allow_shrink": True})})
        settings = settings.model_copy(update={"usecases": {**settings.usecases, usecase.name: usecase}})
    instance = persistent_instance(durable=False)
    days = _days(args, usecase, replay=True)
    bootstrap_days = args.bootstrap_days or usecase.replay.bootstrap_days
    bootstrap = None if args.skip_training or not usecase.models else bootstrap_days
    print(f"{usecase.name}: replaying {len(days)} day(s) from {days[0]} on the {settings.environment.engine} engine "
          f"(environment '{settings.environment.name}', Dagster home {os.environ['DAGSTER_HOME']})"
          + (f"; first champion after {bootstrap} days, then drift-triggered retraining" if bootstrap else ""))
    metric = usecase.monitoring.quality_metric if usecase.monitoring else "quality"
    print(f"  {'day':10}  {'run':6}  {'checks':>7}  {'drift':>5}  {metric:>8}  {'champion':>8}")

    def progress(outcome) -> None:
        status = "ok" if outcome.success else "FAILED"
        drift = f"{outcome.drift_share:5.2f}" if outcome.drift_share is not None else f"{'-':>5}"
        quality = f"{outcome.quality:8.3f}" if outcome.quality is not None else f"{'-':>8}"
        champion = f"v{outcome.champion}" if outcome.champion else "-"
        failed = f"  failed: {', '.join(outcome.failed_checks)}" if outcome.failed_checks else ""
        print(f"  {outcome.day}  {status:6}  {outcome.checks['passed']:3}/{outcome.checks['failed']:<3}  {drift}  "
              f"{quality}  {champion:>8}  [{outcome.progress.describe()}]{failed}", flush=True)
        if outcome.retraining:
            print(f"  {'':10}  {outcome.retraining}", flush=True)
        for error in outcome.errors:
            print(f"      {error}", flush=True)

    definitions = build_definitions(settings)
    outcomes = replay(settings, usecase, definitions, instance, days, progress, bootstrap_days=bootstrap)
    counts = layer_counts(definitions.resources["warehouse"], usecase)
    passed = sum(o.checks["passed"] for o in outcomes)
    failed = sum(o.checks["failed"] for o in outcomes)
    wall = sum(o.timing.wall_seconds for o in outcomes)
    compute = sum(o.timing.compute_seconds for o in outcomes)
    print("\nrows per layer: " + ", ".join(f"{layer} {rows:,}" for layer, rows in counts.items()))
    print(f"checks: {passed} passed, {failed} failed; retraining runs: {sum(1 for o in outcomes if o.retraining)}")
    print(f"run time: {wall:.0f} s, {compute:.0f} s in steps, {wall - compute:.0f} s orchestration")
    if failed_training := [str(o.day) for o in outcomes if o.success and o.errors]:
        print(f"training failed after {', '.join(failed_training)} (errors above): the replay exits 1")
    for champion in champions(usecase, definitions):
        metrics = ", ".join(f"{name} {value:.4f}" for name, value in champion.metrics.items())
        print(f"  {champion.model}: champion version {champion.version or '-'}  {metrics}")
    if usecase.monitoring and outcomes:
        from mlops_platform.monitoring.report import compact_name

        reports = definitions.resources["reports"]
        model = usecase.monitoring.model

        def report_for_day(day: dt.date):
            path = reports.path(usecase.name, model, compact_name(day))
            return path if path.exists() else None

        summary = write_replay_summary(
            reports.path(usecase.name, "replay_summary.html"), f"{usecase.name}: replay of {days[0]} to {days[-1]}",
            outcomes, drift_threshold=usecase.monitoring.max_drifted_share, quality_metric=metric,
            report_for_day=report_for_day)
        print(f"summary: {summary}")
    print("\nopen the UI:  make ui   (then http://127.0.0.1:3000);  MLflow:  make mlflow-ui")
    return 0 if succeeded(outcomes) else 1


@cli.command("status", help="tables and their Delta versions, champions, latest drift day")
@usecase_option
@_handler
def cmd_status(args: Args, settings: Settings) -> int:
    from mlops_platform import names
    from mlops_platform.resources import build_resources

    usecase = _usecase(settings, args.usecase)
    resources = build_resources(settings)
    warehouse = resources["warehouse"]
    print(f"{'table':48} {'version':>8}")
    for layer, tables in ((names.BRONZE, usecase.sources), (names.SILVER, usecase.sources),
                          (names.GOLD, usecase.gold)):
        for table in tables:
            location = names.table(usecase.name, layer, table)
            version = warehouse.version(*location)
            print(f"{warehouse.full_name(*location):48} {'-' if version is None else version:>8}")
    _print_model_status(usecase, resources)
    return 0


def _print_model_status(usecase: UseCaseConfig, resources: dict) -> None:
    """Each model's champion and challenger versions and the latest day monitoring covered."""
    from mlops_platform.ml.gate import CHALLENGER, CHAMPION
    from mlops_platform.monitoring.analysis import latest_drift_day

    if not usecase.models:
        return
    print(f"\n{'model':28} {CHAMPION:>9} {CHALLENGER:>11} {'latest drift day':>17}")
    for key, config in usecase.models.items():
        name = config.registered_name
        champion = resources["mlflow"].alias_version(name, CHAMPION)
        challenger = resources["mlflow"].alias_version(name, CHALLENGER)
        latest = latest_drift_day(resources["warehouse"], usecase.name, key)
        print(f"{name:28} {champion or '-':>9} {challenger or '-':>11} {latest.isoformat() if latest else '-':>17}")


@cli.command("features", help="the feature registry: tables, keys, freshness, models")
@usecase_option
@json_option
@_handler
def cmd_features(args: Args, settings: Settings) -> int:
    from mlops_platform.features import feature_registry
    from mlops_platform.resources import build_resources

    usecase = _usecase(settings, args.usecase)
    entries = feature_registry(usecase, build_resources(settings)["warehouse"])
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        print(f"{entry['table']}  ({entry['kind']}, version {entry['version']}, {entry['rows']:,} rows, "
              f"updated {entry['last_updated'] or 'never'})")
        print(f"    keys: {', '.join(entry['keys'])}" + (f"; timestamp key: {entry['timestamp_key']}"
                                                          if entry["timestamp_key"] else ""))
        print(f"    features: {', '.join(entry['features'])}")
        print(f"    used by models: {', '.join(entry['used_by_models']) or '-'}")
    return 0


def _move_champion(args: Args, settings: Settings, action: str) -> int:
    from mlflow.exceptions import MlflowException

    from mlops_platform.ml.gate import RegistryError, promote, rollback
    from mlops_platform.monitoring.alerts import PROMOTION, ROLLBACK, champion_moved_alert
    from mlops_platform.resources import build_resources

    usecase = _usecase(settings, args.usecase)
    if args.model not in usecase.models:
        raise ConfigError(f"use case '{usecase.name}' has no model '{args.model}' (models: {sorted(usecase.models)})")
    name = usecase.models[args.model].registered_name
    resources = build_resources(settings)
    client = resources["mlflow"].client()
    try:
        move = (promote if action == "promote" else rollback)(client, name)
    except (RegistryError, MlflowException) as exc:
        print(f"{action} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: champion {move.previous or 'none'} -> {move.current}  "
          f"(earlier champions: {', '.join(move.history) or 'none'})")
    delivery = resources["alerts"].send(champion_moved_alert(
        usecase.name, name, PROMOTION if action == "promote" else ROLLBACK, move.previous, move.current))
    print(delivery.summary(), file=sys.stderr if delivery.failed else sys.stdout)
    return 0


@cli.command("promote", help="move a model's champion alias to its challenger")
@model_options
@_handler
def cmd_promote(args: Args, settings: Settings) -> int:
    return _move_champion(args, settings, "promote")


@cli.command("rollback", help="move a model's champion alias back to the previous one")
@model_options
@_handler
def cmd_rollback(args: Args, settings: Settings) -> int:
    return _move_champion(args, settings, "rollback")


@cli.command("serve", help="run the local serving process in the foreground (every deployed endpoint)")
@_handler
def cmd_serve(args: Args, settings: Settings) -> int:
    from mlops_platform.resources import serving_target
    from mlops_platform.resources.serving import LocalServing, serve_foreground

    target = serving_target(settings)
    if not isinstance(target, LocalServing):
        print(f"environment '{settings.environment.name}' serves on Databricks Model Serving; `mlops deploy` "
              "deploys its endpoints", file=sys.stderr)
        return 2
    return serve_foreground(target)


@cli.command("deploy", help="publish the online stores and deploy the endpoints up to a stage")
@usecase_option
@click.option("--stage", type=click.Choice(["staging", "production"]), default="production", show_default=True,
              help="production deploys staging first and only after its smoke_test passed")
@_handler
def cmd_deploy(args: Args, settings: Settings) -> int:
    from mlops_platform.defs import build_definitions
    from mlops_platform.defs.serving.assets import SMOKE_TEST, deploy_endpoints
    from mlops_platform.instance import persistent_instance
    from mlops_platform.replay import QUIET, failure_messages

    usecase = _usecase(settings, args.usecase)
    if not usecase.serving:
        raise ConfigError(f"use case '{usecase.name}' has no 'serving' section in its configuration")
    result = deploy_endpoints(usecase, build_definitions(settings).resources, persistent_instance(), args.stage,
                              run_config=QUIET)
    for event in result.get_asset_materialization_events():
        metadata = {name: value.value for name, value in event.materialization.metadata.items()}
        if "endpoint_name" in metadata:
            state = "deployed" if metadata["changed"] else "unchanged"
            print(f"  {metadata['endpoint_name']:28} {state:9} {metadata['served_versions']}  "
                  f"traffic {metadata['traffic']}  {metadata['endpoint_url']}")
        else:
            print(f"  {event.asset_key.to_user_string():28} {metadata['dagster/row_count']:,} keys  "
                  f"missing {metadata['missing_keys']}")
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == SMOKE_TEST:
            print(f"  {evaluation.check_name}: {'passed' if evaluation.passed else 'FAILED'}  "
                  f"{evaluation.description or ''}")
    for error in failure_messages(result):
        print(f"      {error}", file=sys.stderr)
    return 0 if result.success else 1


def _monitored(settings: Settings, name: str | None) -> UseCaseConfig:
    usecase = _usecase(settings, name)
    if usecase.monitoring is None:
        raise ConfigError(f"use case '{usecase.name}' has no 'monitoring' section in its configuration")
    return usecase


def _date_range(args: Args) -> tuple[dt.date, dt.date]:
    first, last = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    if last < first:
        raise ConfigError(f"--end {last} is before --start {first}")
    return first, last


@cli.command("drift", help="drift and quality per day from the monitoring tables")
@range_options
@json_option
@_handler
def cmd_drift(args: Args, settings: Settings) -> int:
    from mlops_platform.monitoring.analysis import drift_by_day
    from mlops_platform.resources import build_resources

    usecase = _monitored(settings, args.usecase)
    model = usecase.models[usecase.monitoring.model].registered_name
    first, last = _date_range(args)
    try:
        days = drift_by_day(build_resources(settings)["warehouse"], usecase.name, usecase.monitoring.model, first,
                            last)
    except FileNotFoundError as exc:
        print(f"drift: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"model": model, "start": first.isoformat(), "end": last.isoformat(), "days": days},
                         indent=2))
        return 0

    def number(value: float | None, width: int) -> str:
        return f"{value:{width}.3f}" if value is not None else f"{'-':>{width}}"

    print(f"{model}: drift from {first} to {last} ({len(days)} monitored day(s))")
    print(f"  {'day':10}  {'version':>7}  {'drift':>5}  {'served':>6}  {'pred':>5}  {'quality':>7}  drifted columns")
    for day in days:
        print(f"  {day['day']}  {day['model_version']:>7}  {number(day['drift_share'], 5)}  "
              f"{number(day['serving_drift_share'], 6)}  {number(day['prediction_drift_score'], 5)}  "
              f"{number(day['quality'], 7)}  {', '.join(day['drifted_columns']) or '-'}")
    return 0


@cli.command("report", help="render Evidently's full drift page of a monitored day")
@usecase_option
@click.option("--day", required=True, help="the monitored day, YYYY-MM-DD")
@_handler
def cmd_report(args: Args, settings: Settings) -> int:
    from mlops_platform.defs.monitoring.reports import render_day_report
    from mlops_platform.resources import build_resources

    try:
        path = render_day_report(build_resources(settings), _monitored(settings, args.usecase),
                                 dt.date.fromisoformat(args.day))
    except (ValueError, FileNotFoundError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


@monitoring.command("refresh", help="score and monitor a range of days in one run")
@range_options
@_handler
def cmd_monitoring_refresh(args: Args, settings: Settings) -> int:
    import dagster as dg

    from mlops_platform.defs import build_definitions
    from mlops_platform.defs.stages import monitoring_key, predictions_key
    from mlops_platform.instance import persistent_instance
    from mlops_platform.replay import failure_messages

    usecase = _monitored(settings, args.usecase)
    first, last = _date_range(args)
    definitions = build_definitions(settings)
    keys = [predictions_key(usecase, usecase.monitoring.model), monitoring_key(usecase, usecase.monitoring.model)]
    # One run over the whole range (the assets' single-run backfill policy), as a backfill from the UI would be.
    result = dg.materialize(
        [definitions.get_assets_def(key) for key in keys], selection=keys, instance=persistent_instance(),
        resources=definitions.resources, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": first.isoformat(),
              "dagster/asset_partition_range_end": last.isoformat(), "mlops/command": "monitoring refresh"},
    )
    print(f"{usecase.name}: predictions and monitoring from {first} to {last} in run {result.run_id}: "
          f"{'ok' if result.success else 'FAILED'}")
    for evaluation in result.get_asset_check_evaluations():
        print(f"  {evaluation.check_name:18} {'passed' if evaluation.passed else 'FAILED'}")
    for error in failure_messages(result):
        print(f"  {error}", file=sys.stderr)
    return 0 if result.success else 1


@inference.command("validate", help="schema, rows per endpoint and version, request ids, latency")
@json_option
@_handler
def cmd_inference_validate(args: Args, settings: Settings) -> int:
    from mlops_platform.monitoring.analysis import validate_inference_log
    from mlops_platform.resources import build_resources

    report = validate_inference_log(build_resources(settings)["warehouse"])
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.valid else 1
    print(f"{report.table}: {report.rows:,} rows, {report.failed_requests:,} failed requests, "
          f"{report.null_request_ids} null request ids, {report.duplicate_rows} requests logged twice")
    print(f"  client request ids used more than once: {report.repeated_client_request_ids:,} "
          f"({report.repeated_requests:,} repeats of the same payload: retries or sticky clients, not errors)")
    if report.latency_ms:
        print("  latency ms: " + ", ".join(f"{name} {value:.1f}" for name, value in report.latency_ms.items()))
    for group in report.by_endpoint_version:
        print(f"  {group['endpoint']:30} version {group['model_version'] or '-':>5}  {group['rows']:>8,} rows  "
              f"{group['failed']:>6,} failed")
    for problem in report.problems:
        print(f"invalid: {problem}", file=sys.stderr)
    return 0 if report.valid else 1


@alerts.command("test", help="send a test alert through every configured sink")
@usecase_option
@_handler
def cmd_alerts_test(args: Args, settings: Settings) -> int:
    from mlops_platform.monitoring.alerts import probe_alert
    from mlops_platform.resources import build_resources

    usecase = _monitored(settings, args.usecase)
    delivery = build_resources(settings)["alerts"].send(probe_alert(usecase.name, dt.datetime.now(dt.UTC)))
    print(delivery.summary(), file=sys.stderr if delivery.failed or not delivery.sent else sys.stdout)
    return 0 if delivery.sent and not delivery.failed else 1


def main(argv: list[str] | None = None) -> int:
    """Run ``mlops`` on ``argv`` (default: the process's arguments) and return its exit code."""
    warnings.filterwarnings("ignore", category=Warning, module="dagster")
    try:
        code = cli.main(args=argv, prog_name="mlops", standalone_mode=False)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    # ``--help`` and click's own exits return their code; a command returns its handler's.
    return code if isinstance(code, int) else 0


def run() -> None:
    """The ``mlops`` console script: ``main``, then an exit that skips the interpreter's teardown.

    delta-rs' runtime threads can abort the interpreter during teardown after a filtered read ("terminate called
    without an active exception", delta-io/delta-rs#2184), turning a finished command's exit code into 134. By then
    every write is committed and the output flushed, so there is nothing left to tear down.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
