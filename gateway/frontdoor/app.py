"""The front door's aiohttp application (its HTTP server, limits and draining are in `server.py`)."""

from __future__ import annotations

from aiohttp import web

from gateway.call import CallContext, ConfigControl, Engine, new_request_id
from gateway.config import ServerConfig
from gateway.errors import DEFAULT_RETRY_AFTER, NotFoundError
from gateway.frontdoor.admin_http import admin_routes
from gateway.frontdoor.anthropic_http import AnthropicFrontDoor
from gateway.frontdoor.body import MAX_BODY
from gateway.frontdoor.endpoints_http import EndpointsFrontDoor
from gateway.frontdoor.handling import json_response
from gateway.frontdoor.openai_http import OpenAIFrontDoor, error_response
from gateway.frontdoor.responses_http import ResponsesFrontDoor
from gateway.frontdoor.server import DRAIN, HttpServer, start_http_server
from gateway.telemetry.frontdoor import instrument_app
from gateway.telemetry.observer import Telemetry


def create_app(
    engine: Engine, server: ServerConfig, telemetry: Telemetry | None = None, control: ConfigControl | None = None
) -> web.Application:
    """The HTTP application: the OpenAI and Anthropic routes, health and readiness, `/metrics` when there are
    metrics, the admin API, and OpenAI-shaped 404s for the rest. `control`: the running config's hash (in `/readyz`)
    and the admin reload."""
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
        drain = request.config_dict.get(DRAIN)
        if drain is not None and drain.draining:  # load balancers take this replica out while it finishes its work
            return _not_ready("draining", context(request))
        if not await engine.ready():
            return _not_ready("not ready", context(request))
        config = control.config_hash() if control is not None else ""
        return json_response({"status": "ready", "config": config} if config else {"status": "ready"}, context(request))

    async def not_found(request: web.Request) -> web.Response:
        error = NotFoundError(f"No route for {request.method} {request.path}", code="unknown_url")
        return error_response(error, context(request))

    app.add_routes(OpenAIFrontDoor(engine).routes())
    app.add_routes(AnthropicFrontDoor(engine).routes())
    app.add_routes(EndpointsFrontDoor(engine, server.max_audio_bytes).routes())
    app.add_routes(ResponsesFrontDoor(engine).routes())
    app.add_routes(admin_routes(engine, control))
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz), web.route("*", "/{tail:.*}", not_found)])
    return app


def _not_ready(status: str, ctx: CallContext) -> web.Response:
    response = json_response({"status": status}, ctx, 503)
    response.headers["Retry-After"] = str(DEFAULT_RETRY_AFTER)
    return response


__all__ = ["HttpServer", "create_app", "start_http_server"]
