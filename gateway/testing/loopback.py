"""What every in-repo provider server shares: an aiohttp server on a loopback port, started and stopped the same way,
and run from the command line until SIGTERM or SIGINT (the bench waits for its `listening <base_url>` line)."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Self

from aiohttp import web

# Large embedding batches must fit; aiohttp's 1 MiB default would turn them into 413s the real APIs never send.
_CLIENT_MAX_SIZE = 64 * 1024 * 1024
# Benchmarks open many connections at once; the default backlog of 128 would drop some of them.
_BACKLOG = 4096
# How long stop() lets in-flight requests finish before cancelling them (aiohttp waits up to twice this); a stalled
# stream never would finish on its own.
_SHUTDOWN_GRACE = 0.25


class LoopbackServer:
    """A provider's API served in process. A subclass names its `URL_PATH` (what follows `http://host:port` in
    `base_url`, e.g. `/v1`) and answers in `_dispatch`, or adds its own routes in `_add_routes`."""

    URL_PATH = ""

    def __init__(self) -> None:
        self.base_url = ""  # set while it runs
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host`:`port` (0 picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        app = web.Application(client_max_size=_CLIENT_MAX_SIZE)
        self._add_routes(app.router)
        # handler_cancellation: a client that goes away cancels its handler, which is how a stalled stream (which
        # never writes again) notices the disconnect.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_GRACE)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, backlog=_BACKLOG).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        url_host = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{url_host}:{runner.addresses[0][1]}{self.URL_PATH}"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and cancel whatever is still in flight after a short grace period."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        """Start on a free port of 127.0.0.1."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the server."""
        await self.stop()

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        # One catch-all route: unknown paths still get an answer in the provider's own shape.
        router.add_route("*", "/{tail:.*}", self._dispatch)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


async def serve_until_stopped(server: LoopbackServer, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, after printing `listening <base_url>` (what the bench waits for)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    base_url = await server.start(host, port)
    sys.stdout.write(f"listening {base_url}\n")
    sys.stdout.flush()
    try:
        await stopping.wait()
    finally:
        await server.stop()
