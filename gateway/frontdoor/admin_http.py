"""The admin API over HTTP: `GET /admin/backends`, the engine's health report as JSON, and `POST /admin/reload`, which
reloads the configuration (`gateway.reload`) and answers with the hash serving after it.

Only translation, like the OpenAI routes: the engine decides who may see it (gateway.engine.admin), so the one-process
and split front doors behave the same. Send the admin token as `Authorization: Bearer <admin.token>`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.call import CallContext, ConfigControl, Engine
from gateway.frontdoor.handling import guarded, json_response
from gateway.frontdoor.openai_http import error_response
from tollgate.gateway.v1 import admin_pb2

_FIELDS = (
    "backend",
    "model",
    "state",
    "available",
    "ejections",
    "ejections_total",
    "outstanding",
    "latency_ms",
    "consecutive_failures",
    "window_requests",
    "window_failures",
    "retry_in_seconds",
    "backend_up",
    "last_error",
)


def encode_target(target: admin_pb2.TargetHealth) -> dict[str, Any]:
    """One target's health as JSON (every field, defaults included, so the shape never varies)."""
    body: dict[str, Any] = {name: getattr(target, name) for name in _FIELDS}
    body["served_models"] = list(target.served_models)
    return body


def admin_routes(engine: Engine, control: ConfigControl | None = None) -> list[web.RouteDef]:
    """The admin paths (`/admin/reload` where there is a config to reload)."""

    async def backends(request: web.Request, ctx: CallContext) -> web.StreamResponse:
        report = await engine.list_backends(ctx)
        return json_response({"object": "list", "data": [encode_target(t) for t in report.targets]}, ctx)

    routes = [web.get("/admin/backends", guarded(backends, error_response))]
    if control is not None:
        reloader = control

        async def reload(request: web.Request, ctx: CallContext) -> web.StreamResponse:
            done = await reloader.reload(ctx)
            body = {
                "result": done.result,
                "config": done.config_hash,
                "previous": done.previous_hash,
                "restart_needed": list(done.restart_needed),
            }
            return json_response(body, ctx)

        routes.append(web.post("/admin/reload", guarded(reload, error_response)))
    return routes
