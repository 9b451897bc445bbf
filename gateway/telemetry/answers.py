"""Every HTTP answer of the front door: counted by route and status (`tollgate_http_responses_total`), and given an
access-log line of its own when no engine took the call — a body that is not JSON, an unknown path, an engine that
is down, `/v1/models` — since the engine writes the line of every call it takes, with its usage."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.headers import client_request_id
from gateway.telemetry.context import ENGINE_TOOK_CALL
from gateway.telemetry.logs import ACCESS_LOGGER
from gateway.telemetry.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
access_log = logging.getLogger(ACCESS_LOGGER)
_QUIET = frozenset({"/metrics", "/healthz", "/readyz"})  # probes and scrapes: counted, but no line when they succeed


def answers_middleware(metrics: Metrics | None) -> Middleware:
    """Count (when there are metrics) and access-log what the front door answered by itself."""
    children: dict[tuple[str, int], Any] = {}

    def count(route: str, status: int) -> None:
        assert metrics is not None
        child = children.get((route, status))
        if child is None:
            child = children[route, status] = metrics.http_responses.labels(route, status)
        child.inc()

    @web.middleware
    async def answers(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        token = ENGINE_TOOK_CALL.set(False)  # reset after: a keep-alive connection's next request shares the context
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            return response
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else ""
            status = response.status if response is not None else 500
            if metrics is not None:
                count(route, status)
            quiet = route in _QUIET and status < 400
            if not ENGINE_TOOK_CALL.get() and not quiet and access_log.isEnabledFor(logging.INFO):
                _log(request, route, response, status, started)
            ENGINE_TOOK_CALL.reset(token)

    return answers


def _log(request: web.Request, route: str, response: web.StreamResponse | None, status: int, started: float) -> None:
    record = access_log.makeRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, "http", (), None)
    record.__dict__.update(
        {
            "request_id": response.headers.get("x-request-id", "") if response is not None else "",
            "client_request_id": client_request_id(request.headers.get("x-request-id")),
            "method": request.method,
            "route": route,
            "status": status,
            "error_type": _error_code(response),
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
    )
    access_log.handle(record)


def _error_code(response: web.StreamResponse | None) -> str:
    """The `error.code` of an OpenAI-shaped error answer (one the gateway wrote), else ""."""
    if not isinstance(response, web.Response) or response.status < 400 or not isinstance(response.body, bytes):
        return "" if response is not None else "internal_error"
    try:
        code = orjson.loads(response.body)["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ""
    return code if isinstance(code, str) else ""
