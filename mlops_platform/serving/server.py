"""The HTTP surface of the serving process, as a bare ASGI application (no framework on the request path).

Routes:

- ``POST /serving-endpoints/{name}/invocations``: score records (the Databricks request formats); answers
  ``{"predictions": [...], "served_model": {"name": ..., "model_version": ...}}`` with
  ``X-Served-Model-Version`` and the request's ``X-Request-Id`` (generated when absent) as headers.
- ``GET /serving-endpoints/{name}``: configuration, served models and their counters, inference log counters.
- ``GET /serving-endpoints``: every endpoint and its state.
- ``GET /health``: the process answers. ``GET /ready``: every deployed endpoint is loaded (503 until then).

Scoring runs on the event loop thread: a compiled scorer takes tens of microseconds, less than handing the
work to a thread pool would cost, and the GIL would serialise it anyway. Errors are JSON ``{"error_code",
"message", "field"}``; nothing a client sends stops the server. Every invocation of a known endpoint, answered
or refused, becomes a row of the inference table; one naming an unknown endpoint (404) has no endpoint to be
logged under.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from mlops_platform.serving.endpoints import EndpointRegistry
from mlops_platform.serving.inference_log import InferenceLogger, InferenceRecord, json_objects
from mlops_platform.serving.payload import RequestError, parse_records

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PREFIX = "/serving-endpoints/"
INVOCATIONS = "/invocations"
MAX_REQUEST_ID = 128
_JSON = (b"content-type", b"application/json")


class ServingApp:
    """ASGI application serving every endpoint of an :class:`EndpointRegistry`."""

    def __init__(self, registry: EndpointRegistry, inference_log: InferenceLogger | None = None) -> None:
        self.registry = registry
        self.inference_log = inference_log
        self._log = inference_log.log if inference_log is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path.startswith(PREFIX):
            rest = path[len(PREFIX):]
            if rest.endswith(INVOCATIONS):
                if method != "POST":
                    refused = RequestError(405, "METHOD_NOT_ALLOWED", "invocations take POST")
                    return await _error(send, refused)
                return await self._invoke(rest[: -len(INVOCATIONS)], scope, receive, send)
            if "/" not in rest and method == "GET":
                description = self.registry.describe(rest)
                if description is None:
                    return await _error(send, self._unknown(rest))
                description["inference_log"] = self._log_stats()
                return await _json(send, 200, description)
        elif path == "/serving-endpoints" and method == "GET":
            return await _json(send, 200, self.registry.status()["endpoints"])
        elif path == "/health" and method == "GET":
            return await _json(send, 200, {"status": "OK"})
        elif path == "/ready" and method == "GET":
            status = self.registry.status()
            status["inference_log"] = self._log_stats()
            return await _json(send, 200 if status["ready"] else 503, status)
        await _error(send, RequestError(404, "NOT_FOUND", f"no route {method} {path}"))

    def _unknown(self, name: str) -> RequestError:
        return RequestError(404, "ENDPOINT_NOT_FOUND",
                            f"no endpoint named '{name}'; serving {sorted(self.registry.endpoints)}")

    def _log_stats(self) -> dict[str, Any] | None:
        return self.inference_log.stats() if self.inference_log is not None else None

    async def _invoke(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        wall_clock = time.time()
        request_id = authorization = content_length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value
            elif key == b"authorization":
                authorization = value
            elif key == b"content-length":
                content_length = value
        endpoint = self.registry.endpoints.get(name)
        problem = None
        if request_id is None:
            request_id = str(uuid.uuid4()).encode()
        elif not 0 < len(request_id) <= MAX_REQUEST_ID or not request_id.isascii():
            problem = RequestError(400, "INVALID_HEADER",
                                   f"X-Request-Id must be 1 to {MAX_REQUEST_ID} ASCII characters",
                                   field="X-Request-Id")
            request_id = str(uuid.uuid4()).encode()
        rid = request_id.decode()
        if endpoint is None:
            return await _error(send, self._unknown(name), [(b"x-request-id", request_id)])

        model = endpoint.route(rid)
        keys = rows = predictions_json = None
        fallbacks = 0
        error_code = None
        try:
            if problem is not None:
                raise problem
            if not endpoint.authorized(authorization):
                raise RequestError(401, "UNAUTHENTICATED",
                                   f"endpoint '{name}' requires the header Authorization: Bearer <token>",
                                   field="Authorization")
            body = await _read_body(receive, endpoint.config.max_payload_bytes, content_length)
            keys, rows, fallbacks = endpoint.assemble(parse_records(body))
            try:
                predictions = model.scorer(rows)
            except (ValueError, TypeError) as error:
                raise RequestError(400, "MODEL_INPUT_ERROR",
                                   f"model {model.model_name} v{model.model_version} refused the input: "
                                   f"{error}") from None
            status = 200
            predictions_json = orjson.dumps(predictions, default=str, option=orjson.OPT_SERIALIZE_NUMPY)
            payload = b'{"predictions":' + predictions_json + model.served_json
        except RequestError as error:
            status, error_code = error.status, error.code
            payload = orjson.dumps(error.body())
        except Exception as error:  # a bug or a broken model: answer 500 and keep serving
            logger.exception("endpoint %s: request %s failed", name, rid)
            status, error_code = 500, "INTERNAL_ERROR"
            message = f"{type(error).__name__}: {error}"
            payload = orjson.dumps({"error_code": error_code, "message": message})

        counters = model.counters
        counters.requests += 1
        counters.fallbacks += fallbacks
        if status >= 400:
            counters.errors += 1
        latency_ms = (time.perf_counter() - started) * 1000.0
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                _JSON,
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", request_id),
                (b"x-served-model-version", model.version_header),
            ],
        })
        await send({"type": "http.response.body", "body": payload})
        if self._log is not None:
            config = endpoint.config
            self._log(InferenceRecord(
                rid, wall_clock, name, model.name, model.model_name, model.model_version, status, error_code,
                latency_ms, 0 if keys is None else len(keys), fallbacks,
                None if keys is None else json_objects(config.keys, keys),
                None if rows is None else json_objects(config.feature_columns, rows),
                predictions_json,
            ))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.startup)
                except Exception as error:
                    logger.exception("serving startup failed")
                    message = f"{type(error).__name__}: {error}"
                    await send({"type": "lifespan.startup.failed", "message": message})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        """Load every deployed endpoint before the first request, then watch for changes."""
        self.registry.scan()
        self.registry.start()
        if self.inference_log is not None:
            self.inference_log.start()

    def shutdown(self) -> None:
        """Stop watching and write every queued inference record."""
        self.registry.stop()
        if self.inference_log is not None:
            self.inference_log.close()
            logger.info("inference log closed: %s", self.inference_log.stats())


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


async def _json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = orjson.dumps(body)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [_JSON, (b"content-length", str(len(payload)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": payload})


async def _error(send: Send, error: RequestError, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _json(send, error.status, error.body(), headers)
