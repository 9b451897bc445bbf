"""`GET /metrics` on an aiohttp application, and a listener of its own for processes with no front door.

With `telemetry.metrics.token` set, a scrape must send `Authorization: Bearer <token>`; anything else is a 401 that
says nothing about the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.config import Secret
from gateway.telemetry.metrics import CONTENT_TYPE, Metrics

_UNAUTHORIZED = b'{"error": {"message": "This endpoint needs the metrics token", "type": "authentication_error"}}'


def scrape_allowed(token: Secret | None, authorization: str) -> bool:
    """Whether a request with this `Authorization` header may read the metrics (compared in constant time)."""
    if token is None:
        return True
    expected = f"Bearer {token.reveal()}".encode()
    return hmac.compare_digest(authorization.encode("utf-8", "replace"), expected)


def add_metrics_route(app: web.Application, metrics: Metrics) -> None:
    """Serve `metrics` at `GET /metrics`, and keep this worker's scrape-time readings fresh while the app runs."""

    async def scrape(request: web.Request) -> web.Response:
        if not scrape_allowed(metrics.token, request.headers.get("Authorization", "")):
            headers = {"Content-Type": "application/json", "WWW-Authenticate": 'Bearer realm="metrics"'}
            return web.Response(status=401, body=_UNAUTHORIZED, headers=headers)
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def refresher(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(metrics.sources.run(), name="metrics-refresh")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.router.add_get("/metrics", scrape)
    app.cleanup_ctx.append(refresher)


def metrics_app(metrics: Metrics) -> web.Application:
    """An application serving only `/metrics` (`telemetry.metrics.listen`, for `tollgate engine`)."""
    app = web.Application()
    add_metrics_route(app, metrics)
    return app
