"""The asset graph of a Databricks environment: the heavy assets replaced by twins that run them as Databricks jobs.

A twin has the original's specs, check specs, partitions and backfill policy, so lineage, jobs, sensors, blocking
checks and the UI are the same as locally; its body only launches ``python -m mlops_platform.remote`` for the
step's keys and partition and yields what the job reports back through Dagster Pipes. On Databricks the launch is a
one-time job run (``jobs/runs/submit``) running the wheel's ``mlops-remote`` console script as a
``python_wheel_task``, on a new cluster of the step's kind (``PipesDatabricksClient``, Pipes files on DBFS) or on
serverless compute with the wheel in the task's environment (``PipesDatabricksServerlessClient``, Pipes files on a
volume). The wheel is the unit that is built, versioned and installed, and the same entry point runs under
``PipesSubprocessClient`` on a laptop (``defs.local_pipes``). The job's settings (environment, config folder, data folder) are options of
the entry point, since serverless tasks take no environment variables.

Every asset that writes a table runs there, bronze included (the landing zone is on the environment's volume), so
the tables are written by Spark as Unity Catalog tables. What stays in the orchestrator reads tables at most,
through the SQL warehouse (``mlops_platform.resources.unity_catalog``): the landing observations, the registry's
aliases and ``beats_champion`` gate, the serving assets, the freshness checks, sensors and schedules.
"""

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import dagster as dg

from mlops_platform.defs.stages import stage_of
from mlops_platform.resources.databricks import DatabricksWorkspace, databricks_workspace
from mlops_platform.settings import ServerlessSpec, Settings, StepKind

if TYPE_CHECKING:
    from databricks.sdk.service import jobs

WHEEL_PACKAGE = "mlops_platform"
WHEEL_ENTRY_POINT = "mlops-remote"
RESOURCE_KEY = "databricks"
# A partition range on the entry point's command line: START...END, both inclusive.
RANGE_SEPARATOR = "..."

Launch = Callable[[dg.AssetExecutionContext, list[str]], Iterable[dg.PipesExecutionResult]]


def step_kind(assets_def: dg.AssetsDefinition) -> StepKind | None:
    """The kind of remote step an asset is (its stage's, ``defs.stages``), or None when it stays in the
    orchestrator."""
    if isinstance(assets_def, dg.AssetChecksDefinition) or not assets_def.specs:
        return None
    kinds = {stage.step_kind if (stage := stage_of(spec)) else None for spec in assets_def.specs}
    return kinds.pop() if len(kinds) == 1 else None


def remote_arguments(context: dg.AssetExecutionContext) -> list[str]:
    """The entry point's arguments for this step: its selected keys and, when partitioned, its partition range."""
    keys = [key.to_user_string() for key in sorted(context.selected_asset_keys)]
    if not (context.has_partition_key or context.has_partition_key_range):
        return keys
    window = context.partition_key_range
    partition = window.start if window.start == window.end else f"{window.start}{RANGE_SEPARATOR}{window.end}"
    return [*keys, "--partition", partition]


def remote_twin(assets_def: dg.AssetsDefinition, launch: Launch,
                required_resource_keys: frozenset[str] = frozenset()) -> dg.AssetsDefinition:
    """``assets_def`` with the same specs, checks, partitions and backfill policy, run by ``launch`` elsewhere."""

    @dg.multi_asset(
        name=assets_def.node_def.name,
        specs=[spec.replace_attributes(kinds={*spec.kinds, "databricks"}) if len(spec.kinds) < 3 else spec
               for spec in assets_def.specs],
        check_specs=list(assets_def.check_specs),
        partitions_def=assets_def.partitions_def,
        backfill_policy=assets_def.backfill_policy,
        can_subset=assets_def.can_subset,
        required_resource_keys=set(required_resource_keys),
    )
    def twin(context: dg.AssetExecutionContext):
        yield from launch(context, remote_arguments(context))

    return twin


def settings_arguments(settings: Settings) -> list[str]:
    """The entry point's options that rebuild ``settings`` where the job runs."""
    databricks = settings.environment.databricks
    assert databricks is not None, "a remote step needs an environment with a databricks section"
    return ["--env", settings.environment.name, "--config-dir", databricks.config_dir,
            "--data-dir", str(settings.data_dir)]


def submit_task(settings: Settings, kind: StepKind, task_key: str, arguments: list[str]) -> "jobs.SubmitTask":
    """The one-time job task that runs ``arguments`` through the platform wheel on the compute of ``kind``."""
    # The SDK is imported here and below: it costs seconds, and only a Databricks environment builds tasks.
    from databricks.sdk.service import compute, jobs

    databricks = settings.environment.databricks
    assert databricks is not None, "submit_task needs an environment with a databricks section"
    spec = databricks.compute[kind]
    wheel_task = jobs.PythonWheelTask(package_name=WHEEL_PACKAGE, entry_point=WHEEL_ENTRY_POINT,
                                      parameters=[*arguments, *settings_arguments(settings)])
    key = re.sub(r"[^A-Za-z0-9_-]", "_", task_key)[:100]
    if isinstance(spec, ServerlessSpec):
        return jobs.SubmitTask(task_key=key, environment_key=kind, python_wheel_task=wheel_task)
    return jobs.SubmitTask(
        task_key=key,
        new_cluster=compute.ClusterSpec(spark_version=spec.spark_version, node_type_id=spec.node_type_id,
                                        num_workers=spec.num_workers, spark_conf=dict(spec.spark_conf) or None),
        libraries=[compute.Library(whl=databricks.wheel)],
        python_wheel_task=wheel_task,
    )


def serverless_environment(settings: Settings, kind: StepKind) -> "jobs.JobEnvironment":
    """The serverless environment a task of ``kind`` names: its version and the platform wheel."""
    from databricks.sdk.service import compute, jobs

    databricks = settings.environment.databricks
    assert databricks is not None and isinstance(databricks.compute[kind], ServerlessSpec)
    return jobs.JobEnvironment(environment_key=kind, spec=compute.Environment(
        environment_version=databricks.compute[kind].environment_version, dependencies=[databricks.wheel]))


def databricks_launch(settings: Settings, kind: StepKind) -> Launch:
    databricks = settings.environment.databricks
    assert databricks is not None
    serverless = isinstance(databricks.compute[kind], ServerlessSpec)

    def launch(context: dg.AssetExecutionContext, arguments: list[str]) -> Iterable[dg.PipesExecutionResult]:
        workspace: DatabricksWorkspace = getattr(context.resources, RESOURCE_KEY)
        task = submit_task(settings, kind, context.op_def.name, arguments)
        # Both clients add the run's id and page URL ("Databricks Job Run ID" / "URL") to every result.
        if serverless:
            context.log.info(f"submitting {WHEEL_ENTRY_POINT} {' '.join(arguments)} on serverless compute ({kind})")
            client = workspace.serverless_pipes_client(databricks.pipes_volume)
            return client.run(task=task, context=context, extras={"step_kind": kind},
                              submit_args={"environments": [serverless_environment(settings, kind)]}).get_results()
        context.log.info(f"submitting {WHEEL_ENTRY_POINT} {' '.join(arguments)} on a new {kind} cluster")
        return workspace.pipes_client().run(task=task, context=context, extras={"step_kind": kind}).get_results()

    return launch


def databricks_definitions(definitions: dg.Definitions, settings: Settings) -> dg.Definitions:
    """``definitions`` with every heavy asset replaced by its Databricks twin, plus the workspace resource."""
    databricks = settings.environment.databricks
    assert databricks is not None, "databricks_definitions needs an environment with a databricks section"

    def twin_of(assets_def):
        kind = step_kind(assets_def) if isinstance(assets_def, dg.AssetsDefinition) else None
        if kind is None:
            return assets_def
        return remote_twin(assets_def, databricks_launch(settings, kind), frozenset({RESOURCE_KEY}))

    return dg.Definitions(
        assets=[twin_of(assets_def) for assets_def in definitions.assets or []],
        asset_checks=definitions.asset_checks, jobs=definitions.jobs, schedules=definitions.schedules,
        sensors=definitions.sensors, executor=definitions.executor, loggers=definitions.loggers,
        metadata=definitions.metadata,
        resources={**(definitions.resources or {}), RESOURCE_KEY: databricks_workspace(databricks)},
    )
