"""The HTTP surface of the serving process, as a bare ASGI application (no framework on the request path).

Routes, as Databricks Model Serving has them:

- ``POST /serving-endpoints/{name}/invocations``: score records (``dataframe_records``, ``dataframe_split``,
  ``inputs``); answers ``{"predictions": [...]}`` with the headers ``served-model-name``,
  ``x-served-model-version`` and ``x-request-id`` (this request's ``databricks_request_id``).
- ``GET /api/2.0/serving-endpoints/{name}`` and ``GET /api/2.0/serving-endpoints``: the endpoint(s) with the fields
  Databricks clients read (``name``, ``state.ready``, ``config.served_entities``, ``config.traffic_config``), this
  server's details under ``local``. Token-protected like the invocations (``/serving-endpoints[/{name}]`` too).
- ``GET /health``: the process answers. ``GET /ready``: every deployed endpoint is loaded and the process is not
  draining (503 otherwise), with load errors, the scoring pool and the inference log.

The event loop parses, checks, routes and answers; scoring runs on the :class:`ScoringPool`, so ``/health`` and
``/ready`` answer within milliseconds however busy the scorers are, and a full pool answers 503 with
``Retry-After``. Every invocation of a known endpoint, answered or refused, is appended to the inference log's
spool before its answer is sent; one that cannot be logged is answered 503. Errors are JSON ``{"error_code",
"message", "field"}``; nothing a client sends stops the server. The client's id (``X-Request-Id`` header, or
``client_request_id`` in the body) picks the served model, so a client that reuses an id keeps its side of an A/B
split; each request still gets its own ``databricks_request_id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from mlops_platform.serving.endpoints import EndpointRegistry, LiveEndpoint, LiveModel
from mlops_platform.serving.inference_log import InferenceLogger
from mlops_platform.serving.inference_table import InferenceRecord, json_objects
from mlops_platform.serving.payload import (
    MAX_CLIENT_REQUEST_ID,
    RequestError,
    is_json_content_type,
    parse_request,
)
from mlops_platform.serving.pool import Overloaded, ScoringPool

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PREFIXES = ("/api/2.0/serving-endpoints", "/serving-endpoints")
INVOCATIONS = "/invocations"
RETRY_AFTER_SECONDS = 1
_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")


class ServingApp:
    """ASGI application serving every endpoint of an :class:`EndpointRegistry`."""

    def __init__(self, registry: EndpointRegistry, inference_log: InferenceLogger | None = None,
                 pool: ScoringPool | None = None) -> None:
        self.registry = registry
        self.inference_log = inference_log
        self.pool = pool or ScoringPool()
        self.draining = False
        self.in_flight = 0
        self.last_request = time.monotonic()

    def start_draining(self) -> None:
        """Answer what arrives from now on with ``Connection: close`` and report not ready."""
        self.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            self.in_flight += 1
            self.last_request = time.monotonic()
            try:
                await self._http(scope, receive, send)
            finally:
                self.in_flight -= 1
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/health" and method == "GET":
            return await self._json(send, 200, {"status": "OK"})
        if path == "/ready" and method == "GET":
            status = self.registry.status()
            status |= {"draining": self.draining, "scoring": self.pool.stats(), "inference_log": self._log_stats()}
            return await self._json(send, 200 if status["ready"] and not self.draining else 503, status)
        for prefix in PREFIXES:
            if path == prefix and method == "GET":
                return await self._list(scope, send)
            if path.startswith(prefix + "/"):
                rest = path[len(prefix) + 1:]
                if rest.endswith(INVOCATIONS) and prefix == PREFIXES[1]:
                    if method != "POST":
                        return await self._error(send, RequestError(405, "METHOD_NOT_ALLOWED", "invocations take POST"))
                    return await self._invoke(rest[: -len(INVOCATIONS)], scope, receive, send)
                if "/" not in rest and method == "GET":
                    return await self._describe(rest, scope, send)
        await self._error(send, RequestError(404, "NOT_FOUND", f"no route {method} {path}"))

    def _unknown(self, name: str) -> RequestError:
        return RequestError(404, "RESOURCE_DOES_NOT_EXIST",
                            f"no endpoint named '{name}'; serving {sorted(self.registry.endpoints)}")

    def _log_stats(self) -> dict[str, Any] | None:
        return self.inference_log.stats() if self.inference_log is not None else None

    async def _describe(self, name: str, scope: Scope, send: Send) -> None:
        live = self.registry.endpoints.get(name)
        if live is not None and not live.authorized(_header(scope, b"authorization")):
            return await self._error(send, _unauthenticated(name))
        description = self.registry.describe(name)
        if description is None:
            return await self._error(send, self._unknown(name))
        description.setdefault("local", {})["inference_log"] = self._log_stats()
        await self._json(send, 200, description)

    async def _list(self, scope: Scope, send: Send) -> None:
        authorization = _header(scope, b"authorization")
        endpoints = []
        for name in self.registry.status()["endpoints"]:
            live = self.registry.endpoints.get(name)
            if live is None or live.authorized(authorization):
                description = self.registry.describe(name)
                if description is not None:
                    endpoints.append(description)
        await self._json(send, 200, {"endpoints": endpoints})

    async def _invoke(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_time_us = time.time_ns() // 1_000
        request_id = str(uuid.uuid4())
        client_id = authorization = content_length = content_type = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                client_id = value
            elif key == b"authorization":
                authorization = value
            elif key == b"content-length":
                content_length = value
            elif key == b"content-type":
                content_type = value
        endpoint = self.registry.endpoints.get(name)
        if endpoint is None:
            return await self._error(send, self._unknown(name), [(b"x-request-id", request_id.encode())])
        problem = None
        client = None
        if client_id is not None:
            if 0 < len(client_id) <= MAX_CLIENT_REQUEST_ID and client_id.isascii():
                client = client_id.decode()
            else:
                problem = RequestError(400, "INVALID_HEADER",
                                       f"X-Request-Id must be 1 to {MAX_CLIENT_REQUEST_ID} ASCII characters",
                                       field="X-Request-Id")
        model = endpoint.route(client or request_id)
        body = rows = None
        fallbacks = 0
        headers: list[tuple[bytes, bytes]] = []
        try:
            if problem is not None:
                raise problem
            if not endpoint.authorized(authorization):
                raise _unauthenticated(name)
            if not is_json_content_type(content_type):
                raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE",
                                   f"Content-Type must be application/json, got "
                                   f"{content_type.decode(errors='replace') if content_type else 'none'}",
                                   field="Content-Type")
            body = await _read_body(receive, endpoint.config.max_payload_bytes, content_length)
            records, body_client = parse_request(body)
            if client is None and body_client is not None:
                client = body_client
                model = endpoint.route(client)
            _, rows, fallbacks = endpoint.assemble(records)
            try:
                answers = await self.pool.score(model.scorer, rows)
            except (ValueError, TypeError) as error:
                raise RequestError(400, "MODEL_INPUT_ERROR",
                                   f"model {model.model_name} v{model.model_version} refused the input: "
                                   f"{error}") from None
            status = 200
            payload = orjson.dumps({"predictions": answers}, option=orjson.OPT_SERIALIZE_NUMPY)
        except RequestError as error:
            status, payload = error.status, orjson.dumps(error.body())
        except Overloaded as error:
            status = 503
            payload = orjson.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": f"server busy: {error}"})
            headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
        except Exception as error:  # a bug or a broken model: answer 500 and keep serving
            logger.exception("endpoint %s: request %s failed", name, request_id)
            status = 500
            payload = orjson.dumps({"error_code": "INTERNAL_ERROR", "message": f"{type(error).__name__}: {error}"})

        latency_ms = (time.perf_counter() - started) * 1000.0
        if self.inference_log is not None:
            record = self._record(endpoint, model, request_id, client, request_time_us, status, latency_ms, body,
                                  payload, rows, fallbacks, scope)
            try:
                self.inference_log.log(record)
            except OSError as error:
                logger.error("endpoint %s: request %s cannot be logged, refused: %s", name, request_id, error)
                status = 503
                payload = orjson.dumps({"error_code": "LOG_UNAVAILABLE",
                                        "message": f"the inference log cannot be written: {error}"})
                headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
        counters = model.counters
        counters.requests += 1
        counters.fallbacks += fallbacks
        if status >= 400:
            counters.errors += 1
        await self._send(send, status, payload, [
            (b"x-request-id", request_id.encode()),
            (b"served-model-name", model.name_header),
            (b"x-served-model-version", model.version_header),
            *headers,
        ])

    @staticmethod
    def _record(endpoint: LiveEndpoint, model: LiveModel, request_id: str, client: str | None, request_time_us: int,
                status: int, latency_ms: float, body: bytes | None, payload: bytes, rows: list[tuple] | None,
                fallbacks: int, scope: Scope) -> InferenceRecord:
        config = endpoint.config
        peer = scope.get("client")
        return InferenceRecord(
            request_id, client, request_time_us, status, latency_ms,
            None if body is None else body.decode(errors="replace"), payload.decode(), model.name,
            None if not peer else str(peer[0]), config.usecase, config.name, model.model_name, model.model_version,
            None if rows is None else json_objects(config.feature_columns, rows), fallbacks,
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.startup)
                except Exception as error:
                    logger.exception("serving startup failed")
                    await send({"type": "lifespan.startup.failed", "message": f"{type(error).__name__}: {error}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        """Load every deployed endpoint before the first request, then watch for changes; start the scorers and
        the inference log (which first ships what a previous process left in the spool)."""
        if self.inference_log is not None:
            self.inference_log.start()
        self.registry.scan()
        self.registry.start()
        self.pool.start()

    def shutdown(self) -> None:
        """Stop watching, finish queued scoring, and ship every spooled inference record."""
        self.registry.stop()
        self.pool.stop()
        if self.inference_log is not None:
            self.inference_log.close()
            logger.info("inference log closed: %s", self.inference_log.stats())

    async def _json(self, send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
                    ) -> None:
        await self._send(send, status, orjson.dumps(body), headers or [])

    async def _error(self, send: Send, error: RequestError, headers: list[tuple[bytes, bytes]] | None = None
                     ) -> None:
        await self._json(send, error.status, error.body(), headers)

    async def _send(self, send: Send, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        extra = [_CLOSE] if self.draining else []
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(payload)).encode()), *headers, *extra],
        })
        await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _unauthenticated(name: str) -> RequestError:
    return RequestError(401, "UNAUTHENTICATED",
                        f"endpoint '{name}' requires the header Authorization: Bearer <token>", field="Authorization")


async def _read_body(receive: Receive, limit: int, content_length: bytes | None) -> bytes:
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise RequestError(400, "MALFORMED_REQUEST", "Content-Length is not a number",
                               field="Content-Length") from None
        if declared > limit:
            raise _too_large(declared, limit)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError(400, "CLIENT_DISCONNECTED", "the client closed the connection mid-request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> RequestError:
    return RequestError(413, "PAYLOAD_TOO_LARGE",
                        f"request body of {size} bytes exceeds this endpoint's max_payload_bytes of {limit}",
                        field="body")
