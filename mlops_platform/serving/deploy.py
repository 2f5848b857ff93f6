"""The deploy step: resolve, copy, check and publish an endpoint configuration for the serving process.

A deploy resolves every served model's MLflow URI (an alias such as ``models:/flights_delay@champion`` moves later)
to one concrete registered version, copies that version's artifacts under ``<serving_dir>/models/<model>/<version>/``
so the server never needs the registry, checks that the online store and the models agree with the endpoint's
columns, and only then replaces ``<serving_dir>/endpoints/<name>.json`` in one ``os.replace``. The serving process
polls that folder, so a deploy is the whole rollout.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlops_platform.serving.config import (
    MODELS_DIR,
    EndpointConfig,
    EndpointConfigError,
    FieldType,
    ServedModel,
    endpoint_config_path,
    resolve_path,
    write_atomically,
)
from mlops_platform.serving.online_store import OnlineStore

_SIGNATURE_TYPES: dict[str, FieldType] = {
    "string": "string",
    "long": "integer",
    "integer": "integer",
    "double": "number",
    "float": "number",
    "boolean": "boolean",
}


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
    resolved = resolve_endpoint_config(serving_dir, config, tracking_uri=tracking_uri, registry_uri=registry_uri)
    write_atomically(endpoint_config_path(serving_dir, config.name), resolved.model_dump_json(indent=2).encode())
    return resolved


def resolve_endpoint_config(
    serving_dir: str | Path,
    config: EndpointConfig,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
) -> EndpointConfig:
    """The configuration a deploy would write, with every served model resolved and copied; writes no config."""
    from mlflow import MlflowClient

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
    required: set[str] = set()
    for model in served:
        signature_types, model_required = _check_signature(model, config.feature_columns)
        field_types.update({f: signature_types[f] for f in config.request_fields if f in signature_types})
        required |= model_required
    field_types.update(config.field_types)
    nullable = [f for f in config.request_columns if f not in required]

    return EndpointConfig.model_validate({
        **config.model_dump(),
        "served_models": [m.model_dump() for m in served],
        "field_types": field_types,
        "nullable_fields": sorted(set(nullable) | set(config.nullable_fields)),
        "deployed_at": dt.datetime.now(dt.UTC).isoformat(),
    })


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


def _check_signature(model: ServedModel, feature_columns: list[str]) -> tuple[dict[str, FieldType], set[str]]:
    """The JSON types of the model's signature inputs and the inputs it requires; refuses a model whose signature
    lacks a feature."""
    from mlflow.models import Model

    assert model.model_path is not None
    signature = Model.load(model.model_path).signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        return {}, set()
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
    return types, {name for name, spec in specs.items() if getattr(spec, "required", True)}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "model"
