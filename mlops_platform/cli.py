"""`mlops`: the command line a platform team uses, thin over the same code the assets run."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import warnings

from mlops_platform.settings import ConfigError, Settings, UseCaseConfig, load_settings

DEFAULT_DAYS = 35


def _usecase(settings: Settings, name: str | None) -> UseCaseConfig:
    if name is None:
        return next(iter(settings.usecases.values()))
    if name not in settings.usecases:
        raise ConfigError(f"use case '{name}' is not enabled in environment '{settings.environment.name}' "
                          f"(enabled: {sorted(settings.usecases)})")
    return settings.usecases[name]


def _days(args: argparse.Namespace) -> list[dt.date]:
    from mlops_platform.landing import day_range

    return day_range(dt.date.fromisoformat(args.start), args.days)


def cmd_land(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_platform.landing import land_days

    usecase = _usecase(settings, args.usecase)
    paths = land_days(usecase, settings.landing_dir, _days(args))
    print(f"landed {len(paths)} files for {args.days} day(s) under {settings.landing_dir / usecase.name}")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_platform.defs import build_definitions
    from mlops_platform.instance import persistent_instance
    from mlops_platform.replay import failure_messages, layer_counts, replay, train_and_promote
    from mlops_platform.resources import build_resources

    usecase = _usecase(settings, args.usecase)
    instance = persistent_instance()
    days = _days(args)
    print(f"{usecase.name}: replaying {len(days)} day(s) from {days[0]} on the {settings.environment.engine} engine "
          f"(environment '{settings.environment.name}', Dagster home {os.environ['DAGSTER_HOME']})")

    def progress(outcome) -> None:
        status = "ok" if outcome.success else "FAILED"
        failed = f"  failed: {', '.join(outcome.failed_checks)}" if outcome.failed_checks else ""
        print(f"  {outcome.day}  {status:6}  checks passed {outcome.checks['passed']:3}  "
              f"failed {outcome.checks['failed']}{failed}", flush=True)
        for error in outcome.errors:
            print(f"      {error}", flush=True)

    definitions = build_definitions(settings)
    outcomes = replay(settings, usecase, definitions, instance, days, progress)
    counts = layer_counts(build_resources(settings)["warehouse"], usecase)
    passed = sum(o.checks["passed"] for o in outcomes)
    failed = sum(o.checks["failed"] for o in outcomes)
    print("\nrows per layer: " + ", ".join(f"{layer} {rows:,}" for layer, rows in counts.items()))
    print(f"checks: {passed} passed, {failed} failed")
    succeeded = all(o.success for o in outcomes)
    if succeeded and usecase.models and not args.skip_training:
        print("\ntraining: training set, tuning, registration, champion gate, promotion ...", flush=True)
        result, champions = train_and_promote(usecase, definitions, instance)
        for error in failure_messages(result):
            print(f"      {error}")
        for champion in champions:
            metrics = ", ".join(f"{name} {value:.4f}" for name, value in champion.metrics.items())
            print(f"  {champion.model}: champion version {champion.version or '-'}  {metrics}")
        succeeded = result.success
    print("\nopen the UI:  make ui   (then http://127.0.0.1:3000);  MLflow:  make mlflow-ui")
    return 0 if succeeded else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_platform.resources import build_resources

    usecase = _usecase(settings, args.usecase)
    warehouse = build_resources(settings)["warehouse"]
    print(f"{'table':40} {'version':>8}")
    for schema, tables in (("bronze", usecase.sources), ("silver", usecase.sources), ("gold", usecase.gold)):
        for table in tables:
            version = warehouse.version(schema, table)
            print(f"{warehouse.full_name(schema, table):40} {'-' if version is None else version:>8}")
    return 0


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
    from mlops_platform.resources import build_resources

    usecase = _usecase(settings, args.usecase)
    if args.model not in usecase.models:
        raise ConfigError(f"use case '{usecase.name}' has no model '{args.model}' (models: {sorted(usecase.models)})")
    name = usecase.models[args.model].registered_name
    client = build_resources(settings)["mlflow"].client()
    try:
        move = (promote if action == "promote" else rollback)(client, name)
    except (RegistryError, MlflowException) as exc:
        print(f"{action} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: champion {move.previous or 'none'} -> {move.current}  "
          f"(earlier champions: {', '.join(move.history) or 'none'})")
    return 0


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    return _move_champion(args, settings, "promote")


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    return _move_champion(args, settings, "rollback")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__)
    parser.add_argument("--env", help="environment name under config/environments (default: $MLOPS_ENV or local)")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_days(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument("--usecase", help="use case name (default: the environment's first)")
        command.add_argument("--start", default="2013-01-01", help="first day, YYYY-MM-DD")
        command.add_argument("--days", type=int, default=DEFAULT_DAYS, help="number of days")
        return command

    with_days(commands.add_parser("land", help="write days of source data into the landing zone")).set_defaults(
        handler=cmd_land)
    run = with_days(commands.add_parser("run", help="land and process days, then train and promote the models"))
    run.add_argument("--skip-training", action="store_true", help="stop after the daily tables")
    run.set_defaults(handler=cmd_run)
    status = commands.add_parser("status", help="tables and their Delta versions")
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


if __name__ == "__main__":
    sys.exit(main())
