"""What a deployed endpoint is: its JSON configuration under ``<serving_dir>/endpoints/<name>.json``.

``serving/deploy.py`` writes it (resolved versions, field types); the serving process polls the folder and serves
what it finds. Everything here is plain data and file helpers, imported by both sides.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FieldType = Literal["string", "integer", "number", "boolean"]
Scalar = str | int | float | bool | None

ENDPOINTS_DIR = "endpoints"
MODELS_DIR = "models"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"


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
    # Fields a record may send as null: keys the model does not take (a flight without a tail number simply has no
    # store row) and inputs its signature marks optional. Deploy fills it; a hand-written config lists them.
    nullable_fields: list[str] = []
    usecase: str | None = None
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
        stray_nullable = [f for f in self.nullable_fields if f not in typed]
        if stray_nullable:
            raise ValueError(f"nullable_fields names {stray_nullable}, which are neither keys nor request_fields")
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
