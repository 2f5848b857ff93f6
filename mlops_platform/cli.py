"""`mlops`: the command line a platform team uses, thin over the same code the assets run."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import warnings

from mlops_platform.settings import ConfigError, Settings, UseCaseConfig, load_settings

# A use case of snapshots only has no window of days: its replay lands this many daily snapshots by default.
DEFAULT_SNAPSHOT_DAYS = 7


def _usecase(settings: Settings, name: str | None) -> UseCaseConfig:
    if name is None:
        return next(iter(settings.usecases.values()))
    if name not in settings.usecases:
        raise ConfigError(f"use case '{name}' is not enabled in environment '{settings.environment.name}' "
                          f"(enabled: {sorted(settings.usecases)})")
    return settings.usecases[name]


def _days(args: argparse.Namespace, usecase: UseCaseConfig, *, replay: bool) -> list[dt.date]:
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


def cmd_land(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_platform.landing import land_days

    usecase = _usecase(settings, args.usecase)
    days = _days(args, usecase, replay=False)
    paths = land_days(usecase, settings.landing_dir, days)
    print(f"landed {len(paths)} files for {len(days)} day(s) from {days[0]} under "
          f"{settings.landing_dir / usecase.name}")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    # The terminal shows the timeline; MLflow's progress lines (registrations, evaluations, downloads) would bury
    # it, and what they say is in the MLflow UI. Set before MLflow is imported: it configures its loggers then.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.utils.logging_utils import disable_logging

    from mlops_platform.defs import build_definitions
    from mlops_platform.instance import persistent_instance
    from mlops_platform.monitoring.summary import write_replay_summary
    from mlops_platform.replay import champions, layer_counts, replay

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
              f"{quality}  {champion:>8}{failed}", flush=True)
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
    for champion in champions(usecase, definitions):
        metrics = ", ".join(f"{name} {value:.4f}" for name, value in champion.metrics.items())
        print(f"  {champion.model}: champion version {champion.version or '-'}  {metrics}")
    if usecase.monitoring and outcomes:
        reports = definitions.resources["reports"]
        model = usecase.monitoring.model

        def report_for_day(day: dt.date):
            path = reports.path(usecase.name, model, f"drift_{day.isoformat()}.html")
            return path if path.exists() else None

        summary = write_replay_summary(
            reports.path(usecase.name, "replay_summary.html"), f"{usecase.name}: replay of {days[0]} to {days[-1]}",
            outcomes, drift_threshold=usecase.monitoring.max_drifted_share, quality_metric=metric,
            report_for_day=report_for_day)
        print(f"summary: {summary}")
    print("\nopen the UI:  make ui   (then http://127.0.0.1:3000);  MLflow:  make mlflow-ui")
    return 0 if all(o.success for o in outcomes) else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_features(args: argparse.Namespace, settings: Settings) -> int:
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


def _move_champion(args: argparse.Namespace, settings: Settings, action: str) -> int:
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


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    return _move_champion(args, settings, "promote")


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    return _move_champion(args, settings, "rollback")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_platform.resources.serving import LocalServing, serve_foreground, serving_target

    target = serving_target(settings)
    if not isinstance(target, LocalServing):
        print(f"environment '{settings.environment.name}' serves on Databricks Model Serving; `mlops deploy` "
              "deploys its endpoints", file=sys.stderr)
        return 2
    return serve_foreground(target)


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
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


def _date_range(args: argparse.Namespace) -> tuple[dt.date, dt.date]:
    first, last = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    if last < first:
        raise ConfigError(f"--end {last} is before --start {first}")
    return first, last


def cmd_drift(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_monitoring_refresh(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_inference_validate(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_alerts_test(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_platform.monitoring.alerts import probe_alert
    from mlops_platform.resources import build_resources

    usecase = _monitored(settings, args.usecase)
    delivery = build_resources(settings)["alerts"].send(probe_alert(usecase.name, dt.datetime.now(dt.UTC)))
    print(delivery.summary(), file=sys.stderr if delivery.failed or not delivery.sent else sys.stdout)
    return 0 if delivery.sent and not delivery.failed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__)
    parser.add_argument("--env", help="environment name under config/environments (default: $MLOPS_ENV or local)")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_days(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument("--usecase", help="use case name (default: the environment's first)")
        command.add_argument("--start", help="first day, YYYY-MM-DD (default: the use case's replay start)")
        command.add_argument("--days", type=int, help="number of days (default: the use case's replay window)")
        return command

    with_days(commands.add_parser("land", help="write days of source data into the landing zone")).set_defaults(
        handler=cmd_land)
    run = with_days(commands.add_parser("run", help="replay days: tables, a first champion, scoring, monitoring and "
                                                    "drift-triggered retraining"))
    run.add_argument("--skip-training", action="store_true", help="only the daily job: no champion, no retraining")
    run.add_argument("--allow-shrink", action="store_true",
                     help="accept days replaced by far fewer rows or mostly quarantine (refused by default)")
    run.add_argument("--bootstrap-days", type=int,
                     help="days replayed before the first champion is trained (default: the use case's replay)")
    run.set_defaults(handler=cmd_run)
    status = commands.add_parser("status", help="tables and their Delta versions, champions, latest drift day")
    status.add_argument("--usecase")
    status.set_defaults(handler=cmd_status)
    features = commands.add_parser("features", help="the feature registry: tables, keys, freshness, models")
    features.add_argument("--usecase")
    features.add_argument("--json", action="store_true", help="machine-readable output")
    features.set_defaults(handler=cmd_features)
    for name, handler, text in (("promote", cmd_promote, "move a model's champion alias to its challenger"),
                                ("rollback", cmd_rollback, "move a model's champion alias back to the previous one")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--model", required=True, help="model name under the use case's 'models'")
        command.add_argument("--usecase")
        command.set_defaults(handler=handler)
    commands.add_parser("serve", help="run the local serving process in the foreground (every deployed endpoint)"
                        ).set_defaults(handler=cmd_serve)
    deploy = commands.add_parser("deploy", help="publish the online stores and deploy the endpoints up to a stage")
    deploy.add_argument("--usecase")
    deploy.add_argument("--stage", choices=["staging", "production"], default="production",
                        help="production deploys staging first and only after its smoke_test passed (default)")
    deploy.set_defaults(handler=cmd_deploy)

    def with_range(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument("--usecase")
        command.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
        command.add_argument("--end", required=True, help="last day (inclusive), YYYY-MM-DD")
        return command

    drift = with_range(commands.add_parser("drift", help="drift and quality per day from the monitoring tables"))
    drift.add_argument("--json", action="store_true", help="machine-readable output")
    drift.set_defaults(handler=cmd_drift)
    monitoring = commands.add_parser("monitoring", help="monitoring runs").add_subparsers(dest="action",
                                                                                           required=True)
    with_range(monitoring.add_parser("refresh", help="score and monitor a range of days in one run")).set_defaults(
        handler=cmd_monitoring_refresh)
    inference = commands.add_parser("inference", help="the inference table").add_subparsers(dest="action",
                                                                                              required=True)
    validate = inference.add_parser("validate", help="schema, rows per endpoint and version, request ids, latency")
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    validate.set_defaults(handler=cmd_inference_validate)
    alerts = commands.add_parser("alerts", help="alert sinks").add_subparsers(dest="action", required=True)
    alerts_test = alerts.add_parser("test", help="send a test alert through every configured sink")
    alerts_test.add_argument("--usecase")
    alerts_test.set_defaults(handler=cmd_alerts_test)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=Warning, module="dagster")
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.env)
        return args.handler(args, settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


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
