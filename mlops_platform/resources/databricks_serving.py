"""Databricks Model Serving as a serving target: endpoints with AI Gateway inference tables, by databricks-sdk.

A deploy reads the endpoint first and writes only what differs from the deployment:

- no endpoint: ``create`` with the served entities, routes by served entity name, the AI Gateway (inference table
  ``<catalog>.<schema>.<prefix>_payload``, rate limits) and ``route_optimized``;
- other served entities (a version, a compute size): ``update_config`` with entities and routes;
- the same entities, other traffic: ``update_config`` with the routes alone, so no entity is rebuilt;
- another inference table or other rate limits: ``put_ai_gateway``, carrying over the gateway settings the
  platform does not manage (guardrails, usage tracking, fallbacks);
- nothing different: no write at all.

Every write waits until the endpoint is no longer updating, and a deploy fails with a :class:`ServingError` naming
the endpoint when an update fails, the wait times out, the endpoint is not READY afterwards (with each served
entity's deployment state), or the workspace refuses a request. The legacy ``auto_capture_config`` inference tables
are never used: they could not be enabled after 2026-02-20.

Optionally, each endpoint's inference table gets a data-profiling monitor (``mlops_platform.resources.data_quality``)
and each endpoint's feature tables are published to the online feature store
(``mlops_platform.resources.online_feature_store``), so keys-only requests score as they do locally.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import dagster as dg
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import DatabricksError, NotFound, OperationFailed
from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayInferenceTableConfig,
    AiGatewayRateLimit,
    AiGatewayRateLimitKey,
    AiGatewayRateLimitRenewalPeriod,
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    Route,
    ServedEntityInput,
    ServingEndpointDetailed,
    TrafficConfig,
)
from pydantic import Field

from mlops_platform import names
from mlops_platform.resources.data_quality import DataQualityMonitors, TimeSeriesProfile
from mlops_platform.resources.databricks import DatabricksWorkspace, databricks_workspace
from mlops_platform.resources.online_feature_store import FeatureTableSpec, OnlineFeatureStore, OnlinePublish
from mlops_platform.resources.serving import DeployOutcome, EndpointDeployment, ServingError, ServingTarget
from mlops_platform.resources.unity_catalog import UnityCatalogWarehouse
from mlops_platform.resources.warehouse import Warehouse
from mlops_platform.serving.inference_table import INFERENCE_SCHEMA as INFERENCE_LOG_SCHEMA
from mlops_platform.settings import UseCaseConfig

# AI Gateway names the inference table after the configured prefix; its request timestamp column.
PAYLOAD_TABLE_SUFFIX = "_payload"
REQUEST_TIME_COLUMN = "request_time"


class RateLimitOptions(dg.Config):
    calls: int
    key: str = "endpoint"
    renewal_period: str = "minute"
    principal: str | None = None


class EndpointOptions(dg.Config):
    """What a deployment does not carry about one endpoint on Databricks, from the use case's ``serving``."""

    table_prefix: str
    route_optimized: bool = False
    rate_limits: list[RateLimitOptions] = Field(default_factory=list)


class ProfilingOptions(dg.Config):
    output_schema: str
    granularities: list[str]
    slicing_exprs: list[str] = Field(default_factory=list)
    assets_dir: str | None = None


class OnlineStoreOptions(dg.Config):
    name: str
    capacity: str = "CU_1"
    publish_mode: str = "TRIGGERED"
    available_timeout_minutes: float = 30.0
    poll_seconds: float = 10.0


def _entities(config: Any) -> list[tuple]:
    return sorted((e.name, e.entity_name, str(e.entity_version), e.workload_size, bool(e.scale_to_zero_enabled))
                  for e in (config.served_entities or []))


def _routes(traffic: TrafficConfig | None) -> list[tuple[str | None, int]]:
    return sorted((r.served_entity_name or r.served_model_name, r.traffic_percentage)
                  for r in ((traffic.routes if traffic else None) or []))


def _gateway_state(gateway: AiGatewayConfig | None) -> tuple[dict, list]:
    """The inference table and rate limits of a gateway, comparable whichever side they come from."""
    if gateway is None:
        return {}, []
    table = gateway.inference_table_config.as_dict() if gateway.inference_table_config else {}
    limits = sorted((limit.as_dict() for limit in gateway.rate_limits or []), key=lambda d: sorted(d.items()))
    return table, limits


class DatabricksServing(ServingTarget):
    """Databricks Model Serving in ``workspace``. Served entities are the Unity Catalog models the registered names
    name (``<catalog>.<mlflow.model_schema>.<model>``), each named after its alias; requests are logged by AI
    Gateway to ``<inference_catalog>.<inference_schema>.<prefix>_payload``."""

    workspace: DatabricksWorkspace
    catalog: str
    inference_catalog: str
    inference_schema: str
    timeout_minutes: float = 30.0
    endpoints: dict[str, EndpointOptions] = Field(default_factory=dict)
    profiling: ProfilingOptions | None = None
    online_store: OnlineStoreOptions | None = None

    def options(self, name: str) -> EndpointOptions:
        return self.endpoints.get(name) or EndpointOptions(table_prefix=name.lower().replace("-", "_"))

    def inference_table(self, name: str) -> str:
        return f"{self.inference_catalog}.{self.inference_schema}.{self.options(name).table_prefix}{PAYLOAD_TABLE_SUFFIX}"

    def auth_token(self, token_env: str | None) -> str | None:
        # Databricks endpoints take a workspace token, whatever the stage configures for the local server.
        return self.workspace.token

    def _base_url(self, endpoint: ServingEndpointDetailed | None = None) -> str:
        # A route-optimized endpoint answers on its own host only (created after 2025-09-22); the others on the
        # workspace's.
        if endpoint is not None and endpoint.endpoint_url:
            url = endpoint.endpoint_url.rstrip("/")
            return url.split("/serving-endpoints/")[0]
        return self.workspace.host.rstrip("/")

    def _endpoint_for_url(self, name: str) -> ServingEndpointDetailed | None:
        if not self.options(name).route_optimized:
            return None
        return self.workspace.workspace_client().serving_endpoints.get(name)

    def invocation_url(self, name: str) -> str:
        return f"{self._base_url(self._endpoint_for_url(name))}/serving-endpoints/{name}/invocations"

    def served_model_url(self, name: str, served_model: str) -> str:
        """Where one served entity answers by itself, whatever the traffic split (Databricks routes at random)."""
        return (f"{self._base_url(self._endpoint_for_url(name))}/serving-endpoints/{name}/served-models/"
                f"{served_model}/invocations")

    def core_config(self, deployment: EndpointDeployment) -> EndpointCoreConfigInput:
        entities = [
            ServedEntityInput(name=m.alias, entity_name=m.registered_name, entity_version=m.version,
                              workload_size=deployment.workload_size, scale_to_zero_enabled=deployment.scale_to_zero)
            for m in deployment.models
        ]
        routes = [Route(served_entity_name=m.alias, traffic_percentage=m.traffic_percent) for m in deployment.models]
        return EndpointCoreConfigInput(name=deployment.name, served_entities=entities,
                                       traffic_config=TrafficConfig(routes=routes))

    def ai_gateway(self, name: str) -> AiGatewayConfig:
        options = self.options(name)
        table = AiGatewayInferenceTableConfig(catalog_name=self.inference_catalog, schema_name=self.inference_schema,
                                              table_name_prefix=options.table_prefix, enabled=True)
        limits = [AiGatewayRateLimit(calls=limit.calls, key=AiGatewayRateLimitKey(limit.key),
                                     renewal_period=AiGatewayRateLimitRenewalPeriod(limit.renewal_period),
                                     principal=limit.principal)
                  for limit in options.rate_limits]
        return AiGatewayConfig(inference_table_config=table, rate_limits=limits or None)

    def deploy(self, deployment: EndpointDeployment, *, tracking_uri: str) -> DeployOutcome:
        client = self.workspace.workspace_client()
        name = deployment.name
        try:
            endpoint, writes, notes = self._deploy(client, deployment)
            profiling = self._ensure_profiling(client, name) if self.profiling is not None else None
        except OperationFailed as error:
            raise ServingError(f"endpoint '{name}': the configuration update failed in the workspace: {error}. "
                               f"The endpoint's events page in the workspace says why.") from error
        except TimeoutError as error:
            raise ServingError(f"endpoint '{name}' was still updating after {self.timeout_minutes:g} minutes: "
                               f"{error}") from error
        except DatabricksError as error:
            raise ServingError(f"endpoint '{name}': the workspace refused a request: "
                               f"{type(error).__name__}: {error}") from error
        self._require_ready(endpoint)
        detail: dict[str, Any] = {
            "action": "created" if "create" in writes else "updated" if writes else "unchanged",
            "writes": writes,
            "inference_table": self.inference_table(name),
            "served_entities": [m.registered_name for m in deployment.models],
            "route_optimized": bool(endpoint.route_optimized),
            **({"notes": notes} if notes else {}),
        }
        if profiling is not None:
            detail["data_profiling"] = profiling
        return DeployOutcome(
            name=name, url=f"{self._base_url(endpoint)}/serving-endpoints/{name}/invocations",
            changed=bool(writes), served_versions={m.alias: m.version for m in deployment.models},
            traffic={m.alias: m.traffic_percent for m in deployment.models}, detail=detail,
        )

    def _deploy(self, client: WorkspaceClient, deployment: EndpointDeployment
                ) -> tuple[ServingEndpointDetailed, list[str], list[str]]:
        api = client.serving_endpoints
        name = deployment.name
        timeout = dt.timedelta(minutes=self.timeout_minutes)
        core = self.core_config(deployment)
        gateway = self.ai_gateway(name)
        options = self.options(name)
        try:
            endpoint = api.get(name)
        except NotFound:
            endpoint = api.create(name=name, config=core, ai_gateway=gateway,
                                  route_optimized=options.route_optimized).result(timeout=timeout)
            return endpoint, ["create"], []
        if endpoint.state and endpoint.state.config_update == EndpointStateConfigUpdate.IN_PROGRESS:
            # Another deploy's update is under way: an update now would be refused with a conflict.
            endpoint = api.wait_get_serving_endpoint_not_updating(name, timeout=timeout)
        writes, notes = [], []
        current = endpoint.config
        if current is None or _entities(current) != _entities(core):
            endpoint = api.update_config(name=name, served_entities=core.served_entities,
                                         traffic_config=core.traffic_config).result(timeout=timeout)
            writes.append("update_config")
        elif _routes(current.traffic_config) != _routes(core.traffic_config):
            endpoint = api.update_config(name=name, traffic_config=core.traffic_config).result(timeout=timeout)
            writes.append("update_traffic")
        if _gateway_state(endpoint.ai_gateway) != _gateway_state(gateway):
            kept = endpoint.ai_gateway or AiGatewayConfig()
            api.put_ai_gateway(name, inference_table_config=gateway.inference_table_config,
                               rate_limits=gateway.rate_limits or [], guardrails=kept.guardrails,
                               usage_tracking_config=kept.usage_tracking_config, fallback_config=kept.fallback_config)
            writes.append("put_ai_gateway")
            endpoint = api.wait_get_serving_endpoint_not_updating(name, timeout=timeout)
        if bool(endpoint.route_optimized) != options.route_optimized:
            notes.append(f"route_optimized is {bool(endpoint.route_optimized)} and can only be set when an endpoint "
                         f"is created: delete the endpoint to get {options.route_optimized}")
        return endpoint, writes, notes

    def _require_ready(self, endpoint: ServingEndpointDetailed) -> None:
        if endpoint.state is not None and endpoint.state.ready == EndpointStateReady.READY:
            return
        entities = endpoint.config.served_entities if endpoint.config else None
        states = {e.name: (f"{e.state.deployment.value if e.state and e.state.deployment else None}: "
                           f"{e.state.deployment_state_message if e.state else ''}") for e in entities or []}
        raise ServingError(f"endpoint '{endpoint.name}' is not ready after the deploy (state "
                           f"{endpoint.state.ready.value if endpoint.state and endpoint.state.ready else None}); "
                           f"served entities: {states}")

    def _ensure_profiling(self, client: WorkspaceClient, name: str) -> dict[str, Any]:
        assert self.profiling is not None
        profile = TimeSeriesProfile(
            table=self.inference_table(name), output_schema=f"{self.inference_catalog}.{self.profiling.output_schema}",
            timestamp_column=REQUEST_TIME_COLUMN, granularities=tuple(self.profiling.granularities),
            slicing_exprs=tuple(self.profiling.slicing_exprs), assets_dir=self.profiling.assets_dir)
        outcome = DataQualityMonitors(client).ensure_profile(profile)
        return {"action": outcome.action, "table": outcome.table,
                **({"changed_fields": list(outcome.changed_fields)} if outcome.changed_fields else {})}

    def publish_online_features(self, usecase: UseCaseConfig, endpoint: str, warehouse: Warehouse) -> OnlinePublish:
        """Publish the feature tables ``endpoint`` looks features up in, each under its primary key."""
        if not isinstance(warehouse, UnityCatalogWarehouse):
            raise ServingError(f"endpoint '{endpoint}': publishing features to the Databricks online store needs "
                               "Unity Catalog feature tables (tables: unity_catalog in the environment)")
        specs = [FeatureTableSpec(warehouse.full_name(*names.table(usecase.name, names.FEATURES, table)),
                                  tuple(k for k in usecase.features[table].keys
                                        if k != usecase.features[table].timestamp_key),
                                  usecase.features[table].timestamp_key)
                 for table in usecase.serving[endpoint].online_store.tables]
        return self.publish_feature_tables(specs, warehouse.connection().sql)

    def publish_feature_tables(self, tables: list[FeatureTableSpec], statement: Any) -> OnlinePublish:
        """Publish ``tables`` to the online feature store; ``statement`` runs the SQL that prepares a table."""
        if self.online_store is None:
            raise ServingError("this environment has no databricks.serving.online_store: endpoints on Databricks "
                               "cannot look features up by key without one")
        store = self.online_store
        return OnlineFeatureStore(self.workspace.workspace_client(), store.name, store.capacity, store.publish_mode,
                                  available_timeout_seconds=store.available_timeout_minutes * 60,
                                  poll_seconds=store.poll_seconds).publish(tables, statement)


def endpoint_options(settings: Any) -> dict[str, EndpointOptions]:
    """Each stage endpoint's Databricks options, by endpoint name, from every use case of the environment."""
    options = {}
    for usecase in settings.usecases.values():
        for spec in usecase.serving.values():
            for stage in (spec.stages.staging, spec.stages.production):
                options[stage.name] = EndpointOptions(
                    table_prefix=stage.table_prefix, route_optimized=spec.databricks.route_optimized,
                    rate_limits=[RateLimitOptions(**limit.model_dump()) for limit in spec.databricks.rate_limits])
    return options


def databricks_serving(settings: Any) -> DatabricksServing:
    """The Databricks serving target of an environment with a ``databricks`` section."""
    env = settings.environment
    config = env.databricks.serving
    inference_schema = config.inference_schema or INFERENCE_LOG_SCHEMA
    profiling = config.data_profiling
    store = config.online_store
    return DatabricksServing(
        serving_dir=str(settings.serving_dir), workspace=databricks_workspace(env.databricks), catalog=env.catalog,
        inference_catalog=config.inference_catalog or env.catalog, inference_schema=inference_schema,
        timeout_minutes=config.timeout_minutes, endpoints=endpoint_options(settings),
        profiling=None if profiling is None else ProfilingOptions(
            output_schema=profiling.output_schema or inference_schema, granularities=list(profiling.granularities),
            slicing_exprs=list(profiling.slicing_exprs), assets_dir=profiling.assets_dir),
        online_store=None if store is None else OnlineStoreOptions(
            name=store.name, capacity=store.capacity, publish_mode=store.publish_mode,
            available_timeout_minutes=store.available_timeout_minutes),
    )
