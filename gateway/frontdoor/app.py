"""The front door's aiohttp application and HTTP server."""

from __future__ import annotations

from aiohttp import web

from gateway.config import ServerConfig
from gateway.config.tls import ServerTLS
from gateway.engine.contract import CallContext, Engine, new_request_id
from gateway.errors import NotFoundError
from gateway.frontdoor.admin_http import admin_routes
from gateway.frontdoor.anthropic_http import AnthropicFrontDoor
from gateway.frontdoor.body import MAX_BODY
from gateway.frontdoor.handling import json_response
from gateway.frontdoor.openai_http import OpenAIFrontDoor, error_response
from gateway.telemetry.frontdoor import instrument_app
from gateway.telemetry.observer import Telemetry
from gateway.tls import http_server_context


def create_app(engine: Engine, server: ServerConfig, telemetry: Telemetry | None = None) -> web.Application:
    """The HTTP application: the OpenAI and Anthropic routes, health and readiness, `/metrics` when there are
    metrics, and OpenAI-shaped 404s for the rest."""
    # Bodies are decompressed by read_json (gateway.frontdoor.body), where a bad one gets an API-shaped error.
    handler_args = {"max_field_size": 16384, "auto_decompress": False}
    app = web.Application(client_max_size=server.max_body_bytes, handler_args=handler_args)
    app[MAX_BODY] = server.max_body_bytes
    if telemetry is not None:
        instrument_app(app, telemetry)

    def context(request: web.Request) -> CallContext:
        return CallContext(request_id=new_request_id())

    async def healthz(request: web.Request) -> web.Response:
        return json_response({"status": "ok"}, context(request))

    async def readyz(request: web.Request) -> web.Response:
        ready = await engine.ready()
        return json_response({"status": "ready" if ready else "not ready"}, context(request), 200 if ready else 503)

    async def not_found(request: web.Request) -> web.Response:
        error = NotFoundError(f"No route for {request.method} {request.path}", code="unknown_url")
        return error_response(error, context(request))

    app.add_routes(OpenAIFrontDoor(engine).routes())
    app.add_routes(AnthropicFrontDoor(engine).routes())
    app.add_routes(admin_routes(engine))
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz), web.route("*", "/{tail:.*}", not_found)])
    return app


class HttpServer:
    """A started front door."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.port = port

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (aiohttp's shutdown timeout), then close."""
        await self.runner.cleanup()


async def start_http_server(
    app: web.Application,
    address: str,
    shutdown_grace: float = 10.0,
    *,
    reuse_port: bool = False,
    tls: ServerTLS | None = None,
) -> HttpServer:
    """Serve `app` on `address` (`host:port`, port 0 for any free port); `reuse_port` to share it with workers;
    HTTPS only with `tls` (its certificate re-read when the files change, see gateway.tls)."""
    host, _, port = address.rpartition(":")
    # handler_cancellation: a client that disconnects cancels its handler, and so the upstream call, at once.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_grace)
    await runner.setup()
    ssl_context = http_server_context(tls) if tls is not None else None
    site = web.TCPSite(
        runner, host.strip("[]"), int(port), backlog=1024, reuse_port=reuse_port or None, ssl_context=ssl_context
    )
    await site.start()
    return HttpServer(runner, int(runner.addresses[0][1]))
