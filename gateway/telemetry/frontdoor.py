"""The front door's telemetry: `/metrics`, the request span and `x-trace-id` (tracing on), audit logging (on), and
the connections it closed (`watch_connections`).

Each piece is added only when configured, so a front door without them runs no extra code per request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.config.telemetry import AuditConfig
from gateway.credentials import mask_credentials
from gateway.telemetry.answers import answers_middleware
from gateway.telemetry.context import TRACE_PARENT
from gateway.telemetry.http import add_metrics_route
from gateway.telemetry.logs import AUDIT_LOGGER
from gateway.telemetry.observer import Telemetry
from gateway.telemetry.sources import ScrapeMetric

TRACE_HEADER = "x-trace-id"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
audit_log = logging.getLogger(AUDIT_LOGGER)
_TRACE_ID = web.RequestKey("tollgate_trace_id", str)


def instrument_app(app: web.Application, telemetry: Telemetry) -> None:
    """Add what `telemetry` has to the front door's application."""
    if telemetry.metrics is not None:
        add_metrics_route(app, telemetry.metrics)
    app.middlewares.append(answers_middleware(telemetry.metrics))
    if telemetry.tracing is not None:
        app.middlewares.append(_traced(telemetry))
        app.on_response_prepare.append(_trace_header)
    if telemetry.audit.enabled:
        app.middlewares.append(_audited(telemetry.audit))


def watch_connections(telemetry: Telemetry, closed: Mapping[str, int]) -> None:
    """Count the connections the front door closed, by reason (`closed` is its guard's live tally)."""
    if telemetry.metrics is None:
        return
    telemetry.metrics.sources.watch(
        ScrapeMetric(
            "tollgate_http_connections_closed",
            "Connections the front door closed: refused over max_connections, 408 for late headers or body, idle "
            "past keepalive_timeout.",
            "counter",
            lambda: [((reason,), float(n)) for reason, n in closed.items()],
            ("reason",),
        )
    )


def _traced(telemetry: Telemetry) -> Middleware:
    from opentelemetry import context as otel_context  # noqa: PLC0415  # only when tracing is on
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

    from gateway.telemetry.tracing import traceparent  # noqa: PLC0415

    tracing = telemetry.tracing
    assert tracing is not None

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = mask_credentials(request.path)  # a client chooses the path: a key pasted there stays out of traces
        span = tracing.start_server_span(
            f"{request.method} {path}", request.headers, {"http.request.method": request.method, "url.path": path}
        )
        span_context = span.get_span_context()
        if span_context.trace_flags.sampled:
            request[_TRACE_ID] = format(span_context.trace_id, "032x")
        token = otel_context.attach(trace.set_span_in_context(span))
        # Reset, not left set: a keep-alive connection serves its next request in the same context.
        parent = TRACE_PARENT.set(traceparent(span))
        try:
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response
        finally:
            TRACE_PARENT.reset(parent)
            otel_context.detach(token)
            span.end()

    return traced


async def _trace_header(request: web.Request, response: web.StreamResponse) -> None:
    trace_id = request.get(_TRACE_ID)
    if trace_id:
        response.headers[TRACE_HEADER] = trace_id


def _audited(config: AuditConfig) -> Middleware:
    def cut(body: bytes) -> str:
        text = body[: config.max_bytes].decode("utf-8", "replace")
        return text + ("…" if len(body) > config.max_bytes else "")

    @web.middleware
    async def audited(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.method == "POST":
            sent = response.body if isinstance(response, web.Response) else None
            audit_log.info(
                "audit",
                extra={
                    "request_id": response.headers.get("x-request-id", ""),
                    "path": request.path,
                    "status": response.status,
                    "request_headers": {
                        str(k): v for k, v in request.headers.items()
                    },  # credentials in them are masked like all else
                    "request_body": await _body(request, cut),
                    "response_body": cut(sent) if isinstance(sent, bytes) else "(stream)",
                },
            )
        return response

    return audited


async def _body(request: web.Request, cut: Callable[[bytes], str]) -> str:
    """The request's body as the handler read it (aiohttp keeps it), or why there is none to show."""
    try:
        return cut(await request.read())
    except web.HTTPException:  # too large: the handler's 413 already said so
        return "(not read)"
