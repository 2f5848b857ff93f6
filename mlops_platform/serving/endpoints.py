"""Live endpoints: each deployed configuration loaded into memory, and the watcher that swaps them in.

A :class:`LiveEndpoint` is immutable and complete: its scorers, its online store, its traffic table and the
precomputed steps that turn a record into a feature row. The :class:`EndpointRegistry` polls
``<serving_dir>/endpoints/*.json`` (and each endpoint's online store file) every ``poll_seconds``; on a change
it builds the new ``LiveEndpoint`` in full on its own thread and then replaces the one reference the request
path reads. A request that already holds the old endpoint finishes on it, and a configuration that fails to
load leaves the previous version serving, with the error reported.
"""

from __future__ import annotations

import datetime as dt
import gc
import hmac
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from mlops_platform.serving.config import ENDPOINTS_DIR, EndpointConfig, EndpointConfigError, resolve_path
from mlops_platform.serving.online_store import OnlineStore
from mlops_platform.serving.payload import RequestError, field_check, json_type
from mlops_platform.serving.routing import slot, slot_table
from mlops_platform.serving.scoring import Scorer, load_scorer

logger = logging.getLogger(__name__)

FileSignature = tuple[int, int, int]


@dataclass
class Counters:
    """What one served model version has handled since the process started."""

    requests: int = 0
    fallbacks: int = 0
    errors: int = 0


@dataclass(frozen=True)
class LiveModel:
    name: str
    model_name: str
    model_version: str
    traffic_percent: int
    scorer: Scorer
    counters: Counters
    version_header: bytes
    name_header: bytes


@dataclass(frozen=True)
class LiveEndpoint:
    config: EndpointConfig
    models: tuple[LiveModel, ...]
    routes: tuple[LiveModel, ...]
    store: OnlineStore
    checks: tuple[tuple[str, Callable[[Any], bool], str], ...]
    n_keys: int
    fallback_row: tuple
    pick_features: Callable[[Sequence[Any]], tuple]
    token: bytes | None
    loaded_at: str
    signature: tuple[FileSignature, FileSignature | None]

    def route(self, request_id: str) -> LiveModel:
        """The served model of a request (``serving/routing.py``)."""
        return self.routes[slot(request_id)]

    def authorized(self, authorization: bytes | None) -> bool:
        """Whether an Authorization header carries this endpoint's token (``Bearer`` in any letter case)."""
        token = self.token
        if token is None:
            return True
        if authorization is None:
            return False
        scheme, _, given = authorization.strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)

    def assemble(self, records: list[dict[str, Any]]) -> tuple[list[tuple], list[tuple], int]:
        """Key tuples, feature rows (in feature order) and the number of keys missing from the store."""
        if len(records) > self.config.max_records:
            raise RequestError(400, "TOO_MANY_RECORDS",
                               f"request holds {len(records)} records; this endpoint accepts at most "
                               f"{self.config.max_records}", field="records")
        keys, rows, fallbacks = [], [], 0
        store_get, n_keys, pick = self.store.rows.get, self.n_keys, self.pick_features
        for index, record in enumerate(records):
            values = []
            for name, check, expected in self.checks:
                try:
                    value = record[name]
                except KeyError:
                    raise RequestError(
                        400, "MISSING_FIELD",
                        f"record {index} lacks field '{name}'; every record carries "
                        f"{self.config.request_columns}", field=name,
                    ) from None
                if not check(value):
                    raise RequestError(
                        400, "INVALID_TYPE",
                        f"record {index}: field '{name}' must be {expected}, got {json_type(value)} "
                        f"{_preview(value)}", field=name,
                    )
                values.append(value)
            key = tuple(values[:n_keys])
            stored = store_get(key)
            if stored is None:
                stored = self.fallback_row
                fallbacks += 1
            keys.append(key)
            rows.append(pick((*values, *stored)))
        return keys, rows, fallbacks


def freeze_heap() -> None:
    """Exempt everything alive now (imported libraries, loaded models) from the cyclic garbage collector.

    With MLflow, Dagster and pandas imported, the heap holds about 280,000 tracked objects and one full
    collection stops every request for 100-200 ms; after a freeze a collection only walks what was allocated
    since. Objects frozen and later dropped are still freed by reference counting.
    """
    gc.collect()
    gc.freeze()


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _file_signature(path: Path) -> FileSignature:
    stat = path.stat()
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _routes(models: Sequence[LiveModel]) -> tuple[LiveModel, ...]:
    by_name = {model.name: model for model in models}
    return tuple(by_name[name] for name in slot_table([(m.name, m.traffic_percent) for m in models]))


def _picker(positions: list[int]) -> Callable[[Sequence[Any]], tuple]:
    if len(positions) == 1:
        only = positions[0]
        return lambda values: (values[only],)
    return itemgetter(*positions)


@dataclass
class _Attempt:
    """The last load of a configuration file: a broken file is reported once, not reloaded at every poll."""

    signature: tuple[FileSignature, FileSignature | None]
    store_path: Path | None
    error: str | None = None
    deployed_at: str | None = None


def _signature_or_none(path: Path | None) -> FileSignature | None:
    if path is None:
        return None
    try:
        return _file_signature(path)
    except FileNotFoundError:
        return None


class EndpointRegistry:
    """Every endpoint of a serving folder, kept current by a polling thread."""

    def __init__(self, serving_dir: str | Path, *, compile_models: bool = True, poll_seconds: float = 0.5,
                 freeze_gc: bool = False) -> None:
        self.serving_dir = Path(serving_dir).resolve()
        self.freeze_gc = freeze_gc
        self.config_dir = self.serving_dir / ENDPOINTS_DIR
        self.compile_models = compile_models
        self.poll_seconds = poll_seconds
        # The request path reads this dict; it is replaced, never mutated, so a reader sees a whole state.
        self.endpoints: dict[str, LiveEndpoint] = {}
        self._attempts: dict[str, _Attempt] = {}
        self._counters: dict[tuple[str, str, str], Counters] = {}
        self._scorers: dict[tuple[str, tuple[str, ...]], Scorer] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> EndpointRegistry:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="endpoint-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.scan()
            except Exception:  # the watcher must outlive any one bad poll; the next poll tries again
                logger.exception("endpoint watcher: scan of %s failed", self.config_dir)

    def config_files(self) -> dict[str, Path]:
        if not self.config_dir.is_dir():
            return {}
        return {p.stem: p for p in self.config_dir.glob("*.json") if not p.name.startswith(".")}

    def scan(self) -> list[str]:
        """Load every new or changed configuration (or online store) and drop removed ones; returns the names
        (re)loaded."""
        with self._lock:
            files = self.config_files()
            changed = []
            for name, path in sorted(files.items()):
                config_signature = _signature_or_none(path)
                if config_signature is None:
                    continue  # removed between listing and stat: the next poll sees it
                attempt = self._attempts.get(name)
                store_path = attempt.store_path if attempt else None
                if attempt and attempt.signature == (config_signature, _signature_or_none(store_path)):
                    continue
                changed.append(name)
                self._load(name, path, config_signature)
            removed = [name for name in self.endpoints if name not in files]
            if removed:
                self.endpoints = {n: e for n, e in self.endpoints.items() if n not in removed}
                for name in removed:
                    logger.info("endpoint %s removed", name)
            for name in [n for n in self._attempts if n not in files]:
                del self._attempts[name]
            if changed and self.freeze_gc:
                freeze_heap()
            return changed

    def _load(self, name: str, path: Path, config_signature: FileSignature) -> None:
        store_path = None
        deployed_at = None
        try:
            config = EndpointConfig.load(path)
            deployed_at = config.deployed_at
            store_path = resolve_path(self.serving_dir, config.online_store_path)
            endpoint = self.build_endpoint(name, path, config, config_signature)
        except Exception as error:  # noqa: BLE001 - keep serving the previous version; shown on /ready
            message = f"{type(error).__name__}: {error}"
            logger.error("endpoint %s: cannot load %s: %s", name, path, message)
            signature = (config_signature, _signature_or_none(store_path))
            self._attempts[name] = _Attempt(signature, store_path, message, deployed_at)
            return
        self.endpoints = {**self.endpoints, name: endpoint}
        self._attempts[name] = _Attempt(endpoint.signature, store_path, None, deployed_at)
        self._prune_scorers()
        logger.info("endpoint %s loaded: %s", name,
                    ", ".join(f"{m.name}={m.model_name} v{m.model_version} ({m.traffic_percent}%, "
                              f"{m.scorer.path})" for m in endpoint.models))

    def build_endpoint(self, name: str, path: Path, config: EndpointConfig,
                       config_signature: FileSignature) -> LiveEndpoint:
        """Build a complete endpoint from its configuration; raises on anything that cannot be served."""
        if config.name != name:
            raise EndpointConfigError(
                f"{path} configures endpoint '{config.name}'; the file must be {config.name}.json"
            )
        if not config.is_resolved:
            raise EndpointConfigError(f"{path}: served models lack model_version/model_path; "
                                      "write endpoint configurations with deploy_endpoint_config")
        store_path = resolve_path(self.serving_dir, config.online_store_path)
        store_signature = _file_signature(store_path)
        store = OnlineStore.load(store_path, config.keys, config.store_features)
        examples = self._examples(config, store)
        models = []
        for served in config.served_models:
            assert served.model_path is not None and served.model_version is not None
            model_path = str(resolve_path(self.serving_dir, served.model_path))
            scorer_key = (model_path, tuple(config.feature_columns))
            scorer = self._scorers.get(scorer_key)
            if scorer is None:
                scorer = load_scorer(model_path, config.feature_columns, examples,
                                     compile_models=self.compile_models)
                self._scorers[scorer_key] = scorer
            counters = self._counters.setdefault((name, served.name, served.model_version), Counters())
            models.append(LiveModel(served.name, served.model_name or served.name, served.model_version,
                                    served.traffic_percent, scorer, counters, served.model_version.encode(),
                                    served.name.encode()))
        carried = config.request_columns
        combined = [*carried, *config.store_features]
        nullable = set(config.nullable_fields)
        checks = tuple((c, *field_check(config.field_types.get(c), c in nullable)) for c in carried)
        token = os.environ.get(config.auth_token_env) if config.auth_token_env else None
        return LiveEndpoint(
            config=config,
            models=tuple(models),
            routes=_routes(models),
            store=store,
            checks=checks,
            n_keys=len(config.keys),
            fallback_row=tuple(config.fallback[f] for f in config.store_features),
            pick_features=_picker([combined.index(f) for f in config.feature_columns]),
            token=token.encode() if token else None,
            loaded_at=dt.datetime.now(dt.UTC).isoformat(),
            signature=(config_signature, store_signature),
        )

    @staticmethod
    def _examples(config: EndpointConfig, store: OnlineStore) -> dict[str, list[Any]]:
        """Values each feature takes in the store (plus its fallback), for the scorer's probe rows."""
        sample = store.sample(32)
        examples: dict[str, list[Any]] = {}
        for position, name in enumerate(config.store_features):
            examples[name] = [row[position] for row in sample] + [config.fallback[name]]
        keys = list(store.rows)[:32]
        for position, name in enumerate(config.keys):
            if name in config.feature_columns:
                examples[name] = [key[position] for key in keys]
        return examples

    def _prune_scorers(self) -> None:
        live = {
            (str(resolve_path(self.serving_dir, m.model_path or "")), tuple(e.config.feature_columns))
            for e in self.endpoints.values() for m in e.config.served_models
        }
        self._scorers = {k: v for k, v in self._scorers.items() if k in live}

    def status(self) -> dict[str, Any]:
        """Readiness: every configuration file present has a loaded endpoint; load errors are listed with the
        deployment they belong to, so a deployer can tell its own failure from an earlier one."""
        files = self.config_files()
        endpoints = {}
        for name in sorted(files):
            live = self.endpoints.get(name)
            attempt = self._attempts.get(name)
            failed = attempt is not None and attempt.error is not None
            endpoints[name] = {
                "state": "READY" if live is not None else ("FAILED" if failed else "LOADING"),
                "served_models": {m.name: m.model_version for m in live.models} if live else {},
                "deployed_at": live.config.deployed_at if live else None,
                "last_load_error": attempt.error if attempt else None,
                "failed_deployed_at": attempt.deployed_at if failed and attempt else None,
            }
        ready = all(name in self.endpoints for name in files)
        return {"ready": ready, "endpoints": endpoints}

    def describe(self, name: str) -> dict[str, Any] | None:
        """An endpoint as Databricks' ``GET /api/2.0/serving-endpoints/{name}`` answers it (name, state, served
        entities, traffic routes), with this server's own details under ``local``; None when none is deployed."""
        live = self.endpoints.get(name)
        attempt = self._attempts.get(name)
        if live is None and name not in self.config_files():
            return None
        error = attempt.error if attempt else None
        state = {"ready": "READY" if live else "NOT_READY",
                 "config_update": "UPDATE_FAILED" if error else "NOT_UPDATING"}
        if live is None:
            return {"name": name, "state": state, "local": {"last_load_error": error}}
        config = live.config
        entities = [{
            "name": m.name, "entity_name": m.model_name, "entity_version": m.model_version,
            "state": {"deployment": "DEPLOYMENT_READY", "deployment_state_message": ""},
        } for m in live.models]
        routes = [{"served_model_name": m.name, "served_entity_name": m.name, "traffic_percentage": m.traffic_percent}
                  for m in live.models]
        return {
            "name": name,
            "id": name,
            "state": state,
            "creation_timestamp": _millis(config.deployed_at),
            "last_updated_timestamp": _millis(live.loaded_at),
            "config": {"served_entities": entities, "traffic_config": {"routes": routes}},
            "local": {
                "loaded_at": live.loaded_at,
                "deployed_at": config.deployed_at,
                "last_load_error": error,
                "online_store_rows": len(live.store),
                "endpoint_config": config.model_dump(mode="json"),
                "served_models": [{
                    "name": m.name, "model_name": m.model_name, "model_version": m.model_version,
                    "traffic_percent": m.traffic_percent, "scorer": m.scorer.path, "scorer_detail": m.scorer.detail,
                    "requests": m.counters.requests, "fallbacks": m.counters.fallbacks, "errors": m.counters.errors,
                } for m in live.models],
            },
        }


def _millis(stamp: str | None) -> int | None:
    return None if stamp is None else int(dt.datetime.fromisoformat(stamp).timestamp() * 1000)
