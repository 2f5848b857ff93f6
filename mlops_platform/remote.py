"""Remote entry point: one step of the asset graph, materialized where the job runs, reported back through Pipes.

    python -m mlops_platform.remote silver/flights silver/flights_quarantine --partition 2013-01-01
    python -m mlops_platform.remote gold/flights --partition 2013-01-01...2013-01-31 --env prod \
        --config-dir /Volumes/mlops_prod/platform/artifacts/config --data-dir /Volumes/mlops_prod/platform/data

The orchestrator's twin of a heavy asset (``mlops_platform.defs.remote``) launches this as a Databricks job (the
wheel's ``mlops-remote`` console script) or as a local subprocess. Inside the Pipes session it builds the
platform's own definitions for the environment (``--env`` or ``MLOPS_ENV``) as if it ran everything here, on the Spark engine, and
materializes the asset that holds the given keys, with its checks, in-process on an ephemeral instance against
the shared warehouse. Every materialization and check result goes back through Pipes with its
metadata; a failed step raises with the step's own message, so the orchestrator's step fails with it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

import dagster as dg
from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_CLI_ARGUMENT,
    DAGSTER_PIPES_MESSAGES_CLI_ARGUMENT,
    PipesCliArgsParamsLoader,
    PipesContext,
    PipesDbfsContextLoader,
    PipesDbfsMessageWriter,
    PipesMetadataValue,
    PipesUnityCatalogVolumesContextLoader,
    PipesUnityCatalogVolumesMessageWriter,
    open_dagster_pipes,
)

from mlops_platform.defs import build_definitions
from mlops_platform.defs.remote import RANGE_SEPARATOR
from mlops_platform.resources.engine import ComputeEngine
from mlops_platform.resources.spark import on_databricks, spark_sessions
from mlops_platform.settings import Settings, load_settings


class RemoteStepError(RuntimeError):
    """The materialization failed where the job ran; the message is the step's own."""


def local_execution(settings: Settings) -> Settings:
    """The environment as it runs inside the job: every asset in-process, none dispatched to Databricks again."""
    return settings.model_copy(update={"environment": settings.environment.model_copy(update={"databricks": None})})


def spark_engine() -> ComputeEngine:
    return ComputeEngine(kind="spark", pyspark=spark_sessions())


def parse_partition(value: str | None) -> tuple[str, str] | None:
    """``KEY`` or ``START...END`` as an inclusive (start, end) pair."""
    if value is None:
        return None
    start, _, end = value.partition(RANGE_SEPARATOR)
    if not start or (RANGE_SEPARATOR in value and not end):
        raise ValueError(f"--partition: expected KEY or START{RANGE_SEPARATOR}END, got {value!r}")
    return start, end or start


# --- Dagster metadata -> Pipes metadata ------------------------------------------------------------------------------

def _column(column: dg.TableColumn) -> dict[str, object]:
    constraints = column.constraints
    return {"name": column.name, "type": column.type, "description": column.description, "tags": column.tags,
            "constraints": {"nullable": constraints.nullable, "unique": constraints.unique,
                            "other": list(constraints.other)} if constraints else None}


_PLAIN_TYPES: tuple[tuple[type[dg.MetadataValue], str], ...] = (
    (dg.TextMetadataValue, "text"), (dg.UrlMetadataValue, "url"), (dg.PathMetadataValue, "path"),
    (dg.NotebookMetadataValue, "notebook"), (dg.JsonMetadataValue, "json"), (dg.MarkdownMetadataValue, "md"),
    (dg.FloatMetadataValue, "float"), (dg.IntMetadataValue, "int"), (dg.BoolMetadataValue, "bool"),
    (dg.TimestampMetadataValue, "timestamp"), (dg.DagsterRunMetadataValue, "dagster_run"),
)


def pipes_metadata_value(name: str, value: dg.MetadataValue) -> PipesMetadataValue:
    """One Dagster metadata value as the typed Pipes value the orchestrator turns back into the same value."""
    if isinstance(value, dg.TableSchemaMetadataValue):
        return {"type": "table_schema", "raw_value": {"columns": [_column(c) for c in value.schema.columns]}}
    if isinstance(value, dg.TableMetadataValue):
        return {"type": "table", "raw_value": {"records": [record.data for record in value.records],
                                               "schema": [_column(c) for c in value.schema.columns]}}
    if isinstance(value, dg.DagsterAssetMetadataValue):
        return {"type": "asset", "raw_value": value.asset_key.to_user_string()}
    if isinstance(value, dg.NullMetadataValue):
        return {"type": "null", "raw_value": None}
    for kind, type_name in _PLAIN_TYPES:
        if isinstance(value, kind):
            return {"type": type_name, "raw_value": value.value}
    raise TypeError(f"metadata '{name}': {type(value).__name__} has no Dagster Pipes equivalent")


def pipes_metadata(metadata: Mapping[str, dg.MetadataValue]) -> dict[str, PipesMetadataValue]:
    return {name: pipes_metadata_value(name, value) for name, value in metadata.items()}


# --- the step --------------------------------------------------------------------------------------------------------

def _failure_message(result: dg.ExecuteInProcessResult) -> str | None:
    """The first failed step's error and its causes, unless it only failed a blocking check (reported as such)."""
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        if error is None:
            return f"step {event.step_key} failed"
        parts = []
        while error is not None:
            if error.cls_name == "DagsterAssetCheckFailedError":
                return None
            parts.append(f"{error.cls_name}: {error.message.strip()}")
            error = error.cause
        return f"step {event.step_key} failed: " + " <- ".join(parts)
    return None if result.success else "the run failed before any step ran"


def materialize_step(settings: Settings, keys: Sequence[dg.AssetKey], partition: tuple[str, str] | None
                     ) -> dg.ExecuteInProcessResult:
    """Materialize the asset holding ``keys`` (only those keys when it can be subset) with its checks."""
    definitions = build_definitions(local_execution(settings))
    # The definition as declared, not resolved: resolving binds the definitions' resources, and the engine differs.
    assets_def = next((node for node in definitions.assets or []
                       if isinstance(node, dg.AssetsDefinition) and keys[0] in node.keys), None)
    if assets_def is None:
        raise ValueError(f"no asset {keys[0].to_user_string()} in the {settings.environment.name} environment")
    unknown = [key.to_user_string() for key in keys if key not in assets_def.keys]
    if unknown:
        raise ValueError(f"asset keys {unknown} are not materialized by the same step as {keys[0].to_user_string()}")
    selection = list(keys) if assets_def.can_subset else None
    partition_args: dict[str, object] = {}
    if partition is not None:
        start, end = partition
        partition_args = ({"partition_key": start} if start == end else
                          {"tags": {"dagster/asset_partition_range_start": start,
                                    "dagster/asset_partition_range_end": end}})
    return dg.materialize(
        [assets_def], selection=selection, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        resources={**definitions.resources, "engine": spark_engine()}, **partition_args,
    )


def report(pipes: PipesContext, result: dg.ExecuteInProcessResult) -> None:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        pipes.report_asset_materialization(asset_key=materialization.asset_key.to_user_string(),
                                           metadata=pipes_metadata(materialization.metadata))
    for evaluation in result.get_asset_check_evaluations():
        pipes.report_asset_check(
            asset_key=evaluation.asset_key.to_user_string(), check_name=evaluation.check_name,
            passed=evaluation.passed, severity=evaluation.severity.value,
            metadata=pipes_metadata(evaluation.metadata),
        )


def pipes_transport() -> dict[str, object]:
    """How this process talks to the orchestrator's Pipes session: the launching client's counterpart."""
    cli = PipesCliArgsParamsLoader()
    if cli.is_dagster_pipes_process():
        # PipesDatabricksServerlessClient: parameters as arguments, files on a volume.
        return {"params_loader": cli, "context_loader": PipesUnityCatalogVolumesContextLoader(),
                "message_writer": PipesUnityCatalogVolumesMessageWriter()}
    if on_databricks():
        # PipesDatabricksClient: parameters in the cluster's environment, files on DBFS.
        return {"context_loader": PipesDbfsContextLoader(), "message_writer": PipesDbfsMessageWriter()}
    return {}   # PipesSubprocessClient


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mlops-remote", description=__doc__.split("\n\n")[0])
    parser.add_argument("asset_keys", nargs="+", help="asset keys of one step, e.g. silver/flights")
    parser.add_argument("--partition", help=f"a partition key, or START{RANGE_SEPARATOR}END for a range")
    parser.add_argument("--env", help="the environment (default: MLOPS_ENV, else local)")
    parser.add_argument("--config-dir", help="the config/ folder (default: MLOPS_CONFIG_DIR)")
    parser.add_argument("--data-dir", help="the environment's data folder (default: MLOPS_DATA_DIR, else its own)")
    # Added by PipesDatabricksServerlessClient, read by PipesCliArgsParamsLoader.
    for option in (DAGSTER_PIPES_CONTEXT_CLI_ARGUMENT, DAGSTER_PIPES_MESSAGES_CLI_ARGUMENT):
        parser.add_argument(option, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keys = [dg.AssetKey.from_user_string(key) for key in args.asset_keys]
    partition = parse_partition(args.partition)

    with open_dagster_pipes(**pipes_transport()) as pipes:
        settings = load_settings(args.env, args.config_dir, args.data_dir)
        result = materialize_step(settings, keys, partition)
        report(pipes, result)
        failure = _failure_message(result)
        if failure:
            # Logged as well as raised: a Databricks run's state message does not carry the exception.
            pipes.log.error(failure)
            print(failure, file=sys.stderr)
            raise RemoteStepError(failure)


if __name__ == "__main__":
    main()
