"""`GET /metrics` on an aiohttp application, and a listener of its own for processes with no front door."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.telemetry.metrics import CONTENT_TYPE, Metrics


def add_metrics_route(app: web.Application, metrics: Metrics) -> None:
    """Serve `metrics` at `GET /metrics`, and keep this worker's scrape-time readings fresh while the app runs."""

    async def scrape(request: web.Request) -> web.Response:
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
