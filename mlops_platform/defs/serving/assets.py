"""Serving: each endpoint's online store, its staging and production endpoints, and the smoke test between them.

Materializing an endpoint deploys it: the staging endpoint resolves the registry aliases to versions (an alias
that does not exist gives its share to ``champion``), the production endpoint deploys the versions staging
served. ``smoke_test`` is blocking: when the staging endpoint does not answer the configured payloads correctly,
production is skipped in the same run and keeps serving what it served before.
"""

from typing import Any

import dagster as dg
import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from mlops_platform import names
from mlops_platform.defs import stages as graph
from mlops_platform.defs.serving.keys import STAGES, serving_keys
from mlops_platform.defs.stages import champion_key, endpoint_key, online_store_key
from mlops_platform.features import feature_columns
from mlops_platform.ml.gate import CHAMPION
from mlops_platform.resources.mlflow import MlflowTracking
from mlops_platform.resources.serving import EndpointDeployment, ResolvedModel, ServingTarget
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.serving.config import publish_online_store
from mlops_platform.serving.online_features import build_online_store, carried_columns, store_features
from mlops_platform.serving.routing import request_id_for
from mlops_platform.settings import ServingEndpointConfig, UseCaseConfig

SMOKE_TEST = "smoke_test"
SMOKE_TIMEOUT_SECONDS = 30.0


def resolve_aliases(client: Any, registered_name: str, spec: ServingEndpointConfig
                    ) -> tuple[list[ResolvedModel], list[str]]:
    """The served versions the aliases name now, and the aliases that do not exist (their share goes to champion)."""
    aliases = {alias: str(version) for alias, version in client.get_registered_model(registered_name).aliases.items()}
    if CHAMPION not in aliases:
        raise dg.Failure(f"{registered_name} has no '{CHAMPION}' version: promote one before deploying an endpoint")
    present = [m for m in spec.served_models if m.alias in aliases]
    missing = [m.alias for m in spec.served_models if m.alias not in aliases]
    orphaned = sum(m.traffic_percent for m in spec.served_models if m.alias not in aliases)
    resolved = [ResolvedModel(m.alias, registered_name, aliases[m.alias],
                              m.traffic_percent + (orphaned if m.alias == CHAMPION else 0)) for m in present]
    return resolved, missing


def _deployment(usecase: UseCaseConfig, endpoint: str, stage: str, models: list[ResolvedModel],
                serving: ServingTarget) -> EndpointDeployment:
    assert usecase.training_set is not None
    spec = usecase.serving[endpoint]
    stage_spec = getattr(spec.stages, stage)
    return EndpointDeployment(
        name=stage_spec.name,
        models=tuple(models),
        keys=tuple(spec.online_store.keys),
        request_fields=tuple(usecase.training_set.request_fields),
        feature_columns=tuple(feature_columns(usecase)),
        fallback={column: spec.fallback.get(column) for column in store_features(usecase, endpoint)},
        online_store_path=str(serving.store_path(endpoint)),
        auth_token_env=stage_spec.auth_token_env,
        max_records=spec.max_records,
        workload_size=spec.databricks.workload_size,
        scale_to_zero=spec.databricks.scale_to_zero,
        usecase=usecase.name,
    )


def _in_config_order(spec: ServingEndpointConfig, served: dict[str, Any]) -> list[str]:
    """The served aliases in configuration order: the order routes are laid out in (JSON metadata sorts keys)."""
    return [m.alias for m in spec.served_models if m.alias in served]


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} has never been materialized")
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def _online_store_asset(usecase: UseCaseConfig, endpoint: str, spec: ServingEndpointConfig) -> dg.AssetsDefinition:
    store = spec.online_store
    source = store.key_source
    rows = (f"one row per ({', '.join(store.keys)}) seen in the newest {source.days} days of "
            f"{source.layer}.{source.table}, with the newest row of each of {', '.join(store.tables)} by key"
            if source else f"one row: the newest of each of {', '.join(store.tables) or 'no table'}")

    @dg.asset(
        key=online_store_key(usecase, endpoint),
        deps=[graph.feature_key(usecase, table) for table in store.tables]
        + ([graph.table_key(usecase, source.layer, source.table)] if source else []),
        description=(
            f"The online feature store of the {endpoint} endpoints: {rows}. Published as an Arrow file that the "
            f"serving process holds in memory and reloads when it changes; read by the {endpoint} endpoints."
        ),
        kinds={"arrow", "polars"},
        **graph.placement(usecase, names.SERVING),
    )
    def online_store(context: dg.AssetExecutionContext, warehouse: Warehouse,
                     serving: ServingTarget) -> dg.MaterializeResult:
        published = serving.publish_online_features(usecase, endpoint, warehouse)
        if published is not None:
            context.log.info(f"{endpoint}: published {len(published.tables)} feature tables to {published.store}")
            return dg.MaterializeResult(metadata=published.metadata())
        build = build_online_store(usecase, endpoint, warehouse)
        path = publish_online_store(serving.store_path(endpoint), build.table)
        rows = build.table.num_rows
        context.log.info(f"{endpoint}: published {rows} keys to {path}; keys without a row: {build.missing_keys}")
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(path)),
            "dagster/row_count": rows,
            "keys": dg.MetadataValue.json(list(store.keys)),
            "features": len(build.table.column_names) - len(store.keys),
            "missing_keys": dg.MetadataValue.json(build.missing_keys),
            **{f"missing_share_{table}": dg.MetadataValue.float(round(count / rows, 4) if rows else 0.0)
               for table, count in build.missing_keys.items()},
            "key_days": f"{build.first_day} .. {build.last_day}",
            "table_versions": dg.MetadataValue.json(build.table_versions),
        })

    return online_store


def _endpoint_asset(usecase: UseCaseConfig, endpoint: str, spec: ServingEndpointConfig,
                    stage: str) -> dg.AssetsDefinition:
    registered = usecase.models[spec.model].registered_name
    stage_spec = getattr(spec.stages, stage)
    split = ", ".join(f"{m.alias} {m.traffic_percent}%" for m in spec.served_models)
    staging = endpoint_key(usecase, endpoint, "staging")
    if stage == "staging":
        source = (f"resolves the registry aliases of {registered} ({split}; an alias that does not exist gives its "
                  f"share to {CHAMPION})")
        upstream = [champion_key(usecase, spec.model), online_store_key(usecase, endpoint)]
    else:
        source = (f"deploys the versions {staging.to_user_string()} served, once its blocking {SMOKE_TEST} passed "
                  "in the same run")
        upstream = [champion_key(usecase, spec.model), online_store_key(usecase, endpoint), staging]

    @dg.asset(
        key=endpoint_key(usecase, endpoint, stage),
        deps=upstream,
        description=(
            f"{spec.description} The {stage} serving endpoint '{stage_spec.name}': one prediction per request "
            f"record (keys {', '.join(spec.online_store.keys)} and the request fields), features looked up in "
            f"{online_store_key(usecase, endpoint).to_user_string()}. Materializing it {source}, and deploys them; the "
            "same versions again change nothing. Called by clients over HTTP (the Databricks Model Serving "
            "contract); every request lands in the inference table."
        ),
        kinds={"mlflow", "serving"},
        group_name=graph.group(usecase, names.SERVING),
        owners=usecase.owners,
        tags=graph.tags(usecase, names.SERVING, endpoint_stage=stage),
    )
    def deployed_endpoint(context: dg.AssetExecutionContext, mlflow: MlflowTracking,
                          serving: ServingTarget) -> dg.MaterializeResult:
        if stage == "staging":
            models, missing = resolve_aliases(mlflow.client(), registered, spec)
        else:
            tested = _latest_metadata(context.instance, staging)
            models = [ResolvedModel(alias, registered, str(tested["served_versions"][alias]),
                                    int(tested["traffic"][alias]))
                      for alias in _in_config_order(spec, tested["served_versions"])]
            missing = list(tested.get("missing_aliases", []))
        if missing:
            context.log.info(f"{stage_spec.name}: aliases {missing} do not exist; their traffic goes to {CHAMPION}")
        outcome = serving.deploy(_deployment(usecase, endpoint, stage, models, serving),
                                 tracking_uri=mlflow.tracking_uri)
        context.log.info(f"{stage_spec.name}: {'deployed' if outcome.changed else 'unchanged'} "
                         f"{outcome.served_versions} at {outcome.url}")
        return dg.MaterializeResult(metadata={
            "endpoint_name": stage_spec.name,
            "endpoint_url": dg.MetadataValue.url(outcome.url),
            "changed": outcome.changed,
            "served_versions": dg.MetadataValue.json(outcome.served_versions),
            "traffic": dg.MetadataValue.json(outcome.traffic),
            "missing_aliases": dg.MetadataValue.json(missing),
            "champion_version": int(outcome.served_versions[CHAMPION]),
            "registered_model": registered,
            "deploy": dg.MetadataValue.json(outcome.detail),
        })

    return deployed_endpoint


def _post(url: str, payload: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, str], Any, float]:
    # A connection refused or reset before an answer is retried; an answer, whatever its status, is judged.
    for attempt in Retrying(retry=retry_if_exception_type(httpx.TransportError), stop=stop_after_attempt(3),
                            wait=wait_fixed(0.5), reraise=True):
        with attempt:
            response = httpx.post(url, json=payload, headers=headers, timeout=SMOKE_TIMEOUT_SECONDS)
    try:
        body = response.json()
    except ValueError:
        body = response.text[:500]
    return response.status_code, dict(response.headers), body, response.elapsed.total_seconds()


def _judge(spec: ServingEndpointConfig, records: list[dict[str, Any]], alias: str, expected_version: str,
           status: int, headers: dict[str, str], body: Any) -> list[str]:
    """What is wrong with one answer (nothing: an empty list). A classifier answers ``{"probability", "label"}``
    per record, a regressor a number; the range applies to the probability or the number."""
    if status != 200:
        return [f"HTTP {status}: {body}"]
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(records):
        return [f"expected {len(records)} predictions, got {predictions!r}"]
    problems = []
    values = [p.get("probability") if isinstance(p, dict) else p for p in predictions]
    numeric = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numeric) != len(values):
        problems.append(f"predictions are not all numbers (or probabilities): {predictions}")
    if any(isinstance(p, dict) and "label" not in p for p in predictions):
        problems.append(f"classifier answers without a label: {predictions}")
    low, high = spec.smoke.prediction_min, spec.smoke.prediction_max
    outside = [p for p in numeric if (low is not None and p < low) or (high is not None and p > high)]
    if outside:
        problems.append(f"predictions {outside} are outside [{low}, {high}]")
    served, version = headers.get("served-model-name"), headers.get("x-served-model-version")
    if version is None and served == alias:
        # Databricks names the served entity that answered, not its version: the deploy set each entity's version.
        version = expected_version
    if (served, version) != (alias, expected_version):
        problems.append(f"answered by {served} v{version}, deployed {alias} v{expected_version}")
    return problems


def _smoke_check(usecase: UseCaseConfig, endpoint: str, spec: ServingEndpointConfig) -> dg.AssetChecksDefinition:
    key = endpoint_key(usecase, endpoint, "staging")
    stage_spec = spec.stages.staging

    @dg.asset_check(
        asset=key,
        name=SMOKE_TEST,
        blocking=True,
        description=(
            f"POSTs the smoke payloads of '{endpoint}' (one record, then a batch of {len(spec.smoke.batch)}) to the "
            f"staging endpoint '{stage_spec.name}' over HTTP, once for each served model, each request with a fresh "
            "id that routes to that model: every answer must be HTTP 200 with one prediction per record (a "
            "probability and a label, or a value), in range, from the version staging deployed. "
            "Blocking: production is deployed only when it passes."
        ),
    )
    def smoke_test(context: dg.AssetCheckExecutionContext, serving: ServingTarget) -> dg.AssetCheckResult:
        deployed = _latest_metadata(context.instance, key)
        versions: dict[str, str] = {alias: str(v) for alias, v in deployed["served_versions"].items()}
        traffic = [(alias, int(deployed["traffic"][alias])) for alias in _in_config_order(spec, versions)]
        url = serving.invocation_url(stage_spec.name)
        token = serving.auth_token(stage_spec.auth_token_env)
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        payloads = {"single": [spec.smoke.single], "batch": list(spec.smoke.batch)}
        carried = carried_columns(usecase, endpoint)
        results, failures = [], []
        for alias, percent in traffic:
            if percent == 0:
                continue
            for label, records in payloads.items():
                # The request id picks the served model, so each one deployed answers the payloads itself; a fresh
                # id per request keeps every smoke request its own row in the inference table.
                request_id = request_id_for(alias, traffic, prefix=f"smoke-{alias}-")
                body = {"dataframe_records": [{c: r.get(c) for c in carried} for r in records]}
                status, headers, answer, seconds = _post(serving.served_model_url(stage_spec.name, alias), body, {**auth, "X-Request-Id": request_id})
                problems = _judge(spec, records, alias, versions[alias], status, headers, answer)
                failures += [f"{alias} {label}: {problem}" for problem in problems]
                results.append({"served_model": alias, "payload": label, "status": status, "request_id": request_id,
                                "records": len(records), "latency_ms": round(seconds * 1000, 2),
                                "predictions": answer.get("predictions") if isinstance(answer, dict) else None})
        return dg.AssetCheckResult(
            passed=not failures,
            severity=dg.AssetCheckSeverity.ERROR,
            description="all smoke payloads answered correctly" if not failures else "; ".join(failures)[:2000],
            metadata={
                "endpoint_url": dg.MetadataValue.url(url),
                "served_versions": dg.MetadataValue.json(versions),
                "requests": len(results),
                "failures": dg.MetadataValue.json(failures),
                "answers": dg.MetadataValue.json(results),
                "max_latency_ms": dg.MetadataValue.float(max((r["latency_ms"] for r in results), default=0.0)),
            },
        )

    return smoke_test


def serving_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    return [
        definition
        for endpoint, spec in usecase.serving.items()
        for definition in (_online_store_asset(usecase, endpoint, spec),
                           _endpoint_asset(usecase, endpoint, spec, "staging"),
                           _smoke_check(usecase, endpoint, spec),
                           _endpoint_asset(usecase, endpoint, spec, "production"))
    ]




def deploy_endpoints(usecase: UseCaseConfig, resources: dict[str, Any], instance: dg.DagsterInstance,
                     stage: str = "production", run_config: dict[str, Any] | None = None
                     ) -> dg.ExecuteInProcessResult:
    """Materialize every endpoint of ``usecase`` up to ``stage`` (online store, staging, smoke test, production)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got '{stage}'")
    keys = serving_keys(usecase, STAGES[: STAGES.index(stage) + 1])
    return dg.materialize(serving_assets(usecase), instance=instance, resources=resources,
                          selection=dg.AssetSelection.assets(*keys), raise_on_error=False, run_config=run_config,
                          tags={"usecase": usecase.name, "stage": stage})
