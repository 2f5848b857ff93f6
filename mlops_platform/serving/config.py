"""What a deployed endpoint is: its JSON configuration, and the deploy step that writes it.

A deploy resolves every served model's MLflow URI (an alias such as ``models:/flights_delay@champion`` moves
later) to one concrete registered version, copies that version's artifacts under
``<serving_dir>/models/<model>/<version>/`` so the server never needs the registry, checks that the online
store and the models agree with the endpoint's columns, and only then replaces
``<serving_dir>/endpoints/<name>.json`` in one ``os.replace``. The serving process polls that folder, so a
deploy is the whole rollout.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FieldType = Literal["string", "integer", "number", "boolean"]
Scalar = str | int | float | bool | None

ENDPOINTS_DIR = "endpoints"
MODELS_DIR = "models"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"

_SIGNATURE_TYPES: dict[str, FieldType] = {
    "string": "string",
    "long": "integer",
    "integer": "integer",
    "double": "number",
    "float": "number",
    "boolean": "boolean",
}


class EndpointConfigError(ValueError):
    """An endpoint configuration, or what it points to, cannot be served as written."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServedModel(_Strict):
    """One model behind an endpoint and its share of the traffic.

    ``model_uri`` is what the deployer asked for; ``model_name``, ``model_version`` and ``model_path`` are
    what it resolved to, filled in by :func:`deploy_endpoint_config`.
    """

    name: str = Field(pattern=NAME_PATTERN)
    model_uri: str
    traffic_percent: int = Field(ge=0, le=100)
    model_name: str | None = None
    model_version: str | None = None
    model_path: str | None = None
    run_id: str | None = None


class EndpointConfig(_Strict):
    """A serving endpoint: its models and traffic split, where its features come from, and its request limits.

    Each of ``feature_columns`` (the model's inputs, in order) comes from the request when it is a key or one
    of ``request_fields``, and otherwise from the online store row of the request's key; ``fallback`` holds
    the value each store feature takes when the key is missing from the store.
    """

    name: str = Field(pattern=NAME_PATTERN)
    served_models: list[ServedModel] = Field(min_length=1)
    keys: list[str] = []
    online_store_path: str
    feature_columns: list[str] = Field(min_length=1)
    request_fields: list[str] = []
    fallback: dict[str, Scalar] = {}
    # JSON type each request field and key must have; deploy fills it from the store's schema and the model's
    # signature, so a string where the model wants a number is refused at the door, not deep inside sklearn.
    field_types: dict[str, FieldType] = {}
    auth_token_env: str | None = None
    max_payload_bytes: int = Field(default=1_048_576, gt=0)
    max_records: int = Field(default=1_000, gt=0)
    deployed_at: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> EndpointConfig:
        names = [m.name for m in self.served_models]
        if len(set(names)) != len(names):
            raise ValueError(f"served model names must be unique, got {names}")
        total = sum(m.traffic_percent for m in self.served_models)
        if total != 100:
            raise ValueError(f"traffic_percent of the served models must sum to 100, got {total}")
        for field, values in (("keys", self.keys), ("feature_columns", self.feature_columns),
                              ("request_fields", self.request_fields)):
            if len(set(values)) != len(values):
                raise ValueError(f"{field} holds duplicates: {values}")
        stray = [f for f in self.request_fields if f not in self.feature_columns]
        if stray:
            raise ValueError(f"request_fields {stray} are not among the feature_columns")
        store = set(self.store_features)
        unknown = [f for f in self.fallback if f not in store]
        if unknown:
            raise ValueError(f"fallback names {unknown}, which are not online-store features {sorted(store)}")
        missing = [f for f in self.store_features if f not in self.fallback]
        if missing:
            raise ValueError(f"fallback needs a value (null is allowed) for every online-store feature; "
                             f"missing {missing}")
        typed = set(self.request_columns)
        untyped = [f for f in self.field_types if f not in typed]
        if untyped:
            raise ValueError(f"field_types names {untyped}, which are neither keys nor request_fields")
        return self

    @property
    def request_columns(self) -> list[str]:
        """The fields every record carries: the keys, then the request fields that are not keys."""
        return [*self.keys, *(f for f in self.request_fields if f not in self.keys)]

    @property
    def store_features(self) -> list[str]:
        """Model inputs looked up in the online store, in feature order."""
        carried = set(self.request_columns)
        return [f for f in self.feature_columns if f not in carried]

    @property
    def is_resolved(self) -> bool:
        return all(m.model_version and m.model_path for m in self.served_models)

    @classmethod
    def load(cls, path: str | Path) -> EndpointConfig:
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_bytes())
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in error.errors()
            )
            raise EndpointConfigError(f"{path}: {problems}") from None


def endpoint_config_path(serving_dir: str | Path, name: str) -> Path:
    return Path(serving_dir) / ENDPOINTS_DIR / f"{name}.json"


def resolve_path(serving_dir: str | Path, path: str) -> Path:
    """A path from a config: absolute as written, or relative to the serving folder."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else Path(serving_dir) / candidate


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` so that a reader sees the old file or the new one, never a part of it.

    A temporary file in the same folder, then ``os.replace``: atomic on POSIX file systems.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A leading dot keeps the half-written file out of the server's ``*.json`` scan.
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def publish_online_store(path: str | Path, table: pa.Table) -> Path:
    """Publish an online store snapshot (one row per key) as an Arrow IPC file, atomically."""
    path = Path(path)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    write_atomically(path, sink.getvalue().to_pybytes())
    return path


def deploy_endpoint_config(
    serving_dir: str | Path,
    config: EndpointConfig,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
) -> EndpointConfig:
    """Resolve, check and publish an endpoint; returns the configuration as written.

    Raises :class:`EndpointConfigError` naming what does not fit (an unknown alias, a store without a key
    column, a model whose signature lacks a feature) before the running server sees anything.
    """
    from mlflow import MlflowClient

    from mlops_platform.serving.online_store import OnlineStore

    serving_dir = Path(serving_dir).resolve()
    registry_uri = registry_uri or tracking_uri
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    served = [
        _resolve_served_model(client, serving_dir, model, tracking_uri, registry_uri)
        for model in config.served_models
    ]

    store_path = resolve_path(serving_dir, config.online_store_path)
    store = OnlineStore.load(store_path, config.keys, config.store_features)
    field_types = {name: kind for name, kind in store.key_types.items() if kind is not None}
    for model in served:
        signature_types = _check_signature(model, config.feature_columns)
        field_types.update({f: signature_types[f] for f in config.request_fields if f in signature_types})
    field_types.update(config.field_types)

    resolved = EndpointConfig.model_validate({
        **config.model_dump(),
        "served_models": [m.model_dump() for m in served],
        "field_types": field_types,
        "deployed_at": dt.datetime.now(dt.UTC).isoformat(),
    })
    write_atomically(endpoint_config_path(serving_dir, config.name),
                     resolved.model_dump_json(indent=2).encode())
    return resolved


def _resolve_served_model(
    client: Any, serving_dir: Path, model: ServedModel, tracking_uri: str | None, registry_uri: str | None
) -> ServedModel:
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    uri = model.model_uri
    try:
        if match := re.fullmatch(r"models:/([^/@]+)@([^/]+)", uri):
            version = client.get_model_version_by_alias(match[1], match[2])
        elif match := re.fullmatch(r"models:/([^/@]+)/(\d+)", uri):
            version = client.get_model_version(match[1], match[2])
        elif match := re.fullmatch(r"runs:/([0-9a-f]+)/(.+)", uri):
            return _resolve_run_model(client, serving_dir, model, match[1], match[2], tracking_uri)
        else:
            raise EndpointConfigError(
                f"served model '{model.name}': cannot resolve '{uri}'; use models:/<name>@<alias>, "
                "models:/<name>/<version> or runs:/<run_id>/<path>"
            )
    except MlflowException as error:
        raise EndpointConfigError(
            f"served model '{model.name}': cannot resolve '{uri}': {error.message}"
        ) from None

    target = serving_dir / MODELS_DIR / _safe(version.name) / str(version.version)
    _download_once(target, lambda dst: download_artifacts(
        artifact_uri=f"models:/{version.name}/{version.version}", dst_path=dst,
        tracking_uri=tracking_uri, registry_uri=registry_uri,
    ))
    return model.model_copy(update={
        "model_name": version.name, "model_version": str(version.version), "model_path": str(target),
        "run_id": version.run_id,
    })


def _resolve_run_model(
    client: Any, serving_dir: Path, model: ServedModel, run_id: str, artifact_path: str,
    tracking_uri: str | None,
) -> ServedModel:
    from mlflow.artifacts import download_artifacts

    # A run's model is served under its registered name and version when exactly one version came from it;
    # otherwise the run id is the version, which still tells two deployments apart.
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    if len(versions) == 1:
        model_name, model_version = versions[0].name, str(versions[0].version)
    else:
        model_name, model_version = artifact_path.strip("/"), run_id
    target = serving_dir / MODELS_DIR / "runs" / run_id / _safe(artifact_path)
    _download_once(target, lambda dst: download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=dst, tracking_uri=tracking_uri,
    ))
    return model.model_copy(update={
        "model_name": model_name, "model_version": model_version, "model_path": str(target), "run_id": run_id,
    })


def _download_once(target: Path, download: Any) -> None:
    """Copy a model version's artifacts to ``target`` unless an earlier deploy did: versions are immutable."""
    if (target / "MLmodel").is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        local = Path(download(str(staging)))
        root = local if (local / "MLmodel").is_file() else _find_mlmodel(local)
        try:
            root.rename(target)
        except OSError:
            # A concurrent deploy of the same version got there first; its copy is as good as ours.
            if not (target / "MLmodel").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _find_mlmodel(folder: Path) -> Path:
    found = sorted(folder.rglob("MLmodel"))
    if not found:
        raise EndpointConfigError(
            f"downloaded artifacts at {folder} hold no MLmodel file: not an MLflow model"
        )
    return found[0].parent


def _check_signature(model: ServedModel, feature_columns: list[str]) -> dict[str, FieldType]:
    """The JSON types of the model's signature inputs; refuses a model whose signature lacks a feature."""
    from mlflow.models import Model

    assert model.model_path is not None
    signature = Model.load(model.model_path).signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        return {}
    specs = {spec.name: spec for spec in signature.inputs.inputs}
    missing = [f for f in feature_columns if f not in specs]
    if missing:
        raise EndpointConfigError(
            f"served model '{model.name}' ({model.model_name} v{model.model_version}) has no input named "
            f"{missing}; its signature takes {list(specs)}"
        )
    types = {}
    for name, spec in specs.items():
        kind = _SIGNATURE_TYPES.get(getattr(spec.type, "name", str(spec.type)))
        if kind is not None:
            types[name] = kind
    return types


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "model"
