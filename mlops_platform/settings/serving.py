"""Serving endpoints: served aliases and traffic, the online store, stages and the smoke test."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlops_platform.settings.base import FieldError, _Strict


class ServedAlias(_Strict):
    """A model behind an endpoint, named by its registry alias, and the share of requests it answers."""

    alias: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    traffic_percent: int = Field(ge=0, le=100)


class KeySource(_Strict):
    """Where the key combinations an online store holds come from: those seen in the newest ``days`` of a table."""

    table: str
    layer: Literal["silver", "gold"] = "gold"
    days: int = Field(default=28, gt=0)


class OnlineStoreConfig(_Strict):
    """The online store of an endpoint: the newest row of each feature table per key, one row per ``keys``.

    Every table's lookup keys (from ``training_set.lookups``, its timestamp key aside) must be among ``keys``; a
    request carries ``keys`` and the training set's request fields, and nothing else. Without keys the store holds
    one row: the newest of each table (a rolling table without groups); without tables, requests carry every feature.
    """

    keys: list[str] = []
    key_source: KeySource | None = None
    tables: list[str] = []

    @model_validator(mode="after")
    def _keys_have_a_source(self) -> OnlineStoreConfig:
        if self.keys and self.key_source is None:
            raise FieldError("key_source", f"an online store keyed by {self.keys} needs a key_source")
        return self


class SmokeConfig(_Strict):
    """What a deployed endpoint must answer before the next stage gets it: a single record, then a batch."""

    single: dict[str, str | int | float | bool]
    batch: list[dict[str, str | int | float | bool]] = Field(min_length=2)
    prediction_min: float | None = None
    prediction_max: float | None = None


class RateLimit(_Strict):
    """An AI Gateway rate limit of a Databricks endpoint: at most ``calls`` queries per minute, counted per ``key``
    (all callers of the endpoint together, each user, each user group or each service principal; ``principal``
    narrows a user, group or service principal limit to one of them)."""

    calls: int = Field(gt=0)
    key: Literal["endpoint", "user", "user_group", "service_principal"] = "endpoint"
    renewal_period: Literal["minute"] = "minute"
    principal: str | None = None

    @model_validator(mode="after")
    def _principal_needs_a_principal_key(self) -> RateLimit:
        if self.principal is not None and self.key == "endpoint":
            raise ValueError(f"principal '{self.principal}' needs key user, user_group or service_principal, "
                             "not endpoint")
        return self


class DatabricksCompute(_Strict):
    """How the endpoint runs on Databricks Model Serving: each served entity's compute, route optimization (set at
    creation only: an existing endpoint keeps what it was created with) and AI Gateway rate limits."""

    workload_size: Literal["Small", "Medium", "Large"] = "Small"
    scale_to_zero: bool = True
    route_optimized: bool = False
    rate_limits: list[RateLimit] = []


class StageEndpoint(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    auth_token_env: str | None = Field(default=None, description="environment variable holding the bearer token")
    inference_table_prefix: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_]{0,99}$",
        description="on Databricks, the AI Gateway inference table is <prefix>_payload; default: the endpoint name "
                    "with '-' as '_'")

    @property
    def table_prefix(self) -> str:
        return self.inference_table_prefix or self.name.lower().replace("-", "_")


class EndpointStages(_Strict):
    staging: StageEndpoint
    production: StageEndpoint

    @model_validator(mode="after")
    def _distinct(self) -> EndpointStages:
        if self.staging.name == self.production.name:
            raise FieldError("production.name", f"staging and production need different endpoint names, both are "
                             f"'{self.staging.name}'", self.production.name)
        return self


class ServingEndpointConfig(_Strict):
    """An endpoint serving one model at each stage, staging first; production only after staging's smoke test.

    ``served_models`` name registry aliases. An alias that does not exist when the endpoint is deployed (no
    ``challenger`` right after a promotion) gives its traffic share to ``champion``, which must exist.
    ``fallback`` gives the value of an online-store feature when a request's key is not in the store; features
    it does not name fall back to null, which the model reads as missing, exactly as a training row whose lookup
    found nothing.
    """

    description: str
    model: str
    served_models: list[ServedAlias] = Field(min_length=1)
    online_store: OnlineStoreConfig
    fallback: dict[str, str | int | float | bool | None] = {}
    stages: EndpointStages
    smoke: SmokeConfig
    databricks: DatabricksCompute = DatabricksCompute()
    max_records: int = Field(default=1_000, gt=0)

    @model_validator(mode="after")
    def _traffic(self) -> ServingEndpointConfig:
        aliases = [m.alias for m in self.served_models]
        if len(set(aliases)) != len(aliases):
            raise FieldError("served_models", f"served_models name an alias twice: {aliases}", aliases)
        if "champion" not in aliases:
            raise FieldError("served_models", "served_models must include the 'champion' alias (missing aliases "
                                              f"fall back to it), got {aliases}", aliases)
        total = sum(m.traffic_percent for m in self.served_models)
        if total != 100:
            raise FieldError("served_models", f"traffic_percent of served_models must sum to 100, got {total}", total)
        return self

