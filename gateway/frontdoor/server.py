"""The front door's HTTP server: its connection limits (`server:` in the config) and its part in a bounded shutdown.

- `keepalive_timeout` and `lingering` are aiohttp's own; the header deadline and the connection cap are
  `ConnectionGuard`'s (`connections.py`); the body deadline is `read_json`'s (`BODY_TIMEOUT`).
- With a `Drain`, every request is tracked as in flight, `/readyz` says 503 once draining begins, and every answer
  started while draining carries `Connection: close`. `stop_listening` closes the listener and idle connections;
  `close` ends the rest (the drain has cut them by then, see `gateway.lifecycle`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.config import ServerConfig
from gateway.config.tls import ServerTLS
from gateway.drain import Drain
from gateway.frontdoor.body import BODY_TIMEOUT
from gateway.frontdoor.connections import CONNECTIONS, ConnectionGuard
from gateway.tls import http_server_context

DRAIN = web.AppKey("drain", Drain)
_LINGER = 2.0  # after an answer sent before its body was read, how long the rest of the body is read and ignored
_CLOSE_TIMEOUT = 0.25  # how long `close` waits for handlers that are still running (the drain cut them)
_DEFAULT = ServerConfig()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpServer:
    """A started front door."""

    def __init__(
        self, runner: web.AppRunner, listener: asyncio.AbstractServer, port: int, guard: ConnectionGuard
    ) -> None:
        self.runner = runner
        self.port = port
        self.connections = guard
        self._listener: asyncio.AbstractServer | None = listener
        self._closed = False

    async def stop_listening(self) -> None:
        """Accept no more connections, and close the idle ones; requests in flight go on."""
        self.connections.stopping = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self.runner.server is not None:
            self.runner.server.pre_shutdown()  # idle keep-alive connections close now, busy ones after their answer

    async def close(self) -> None:
        """Close every connection, waiting a moment for handlers still running (the drain cut them); a second
        call does nothing."""
        await self.stop_listening()
        if not self._closed:
            self._closed = True
            await self.runner.cleanup()

    async def stop(self) -> None:
        """Stop at once (for servers without a drain, and tests): stop listening and close."""
        await self.close()


def _middleware(guard: ConnectionGuard, drain: Drain | None) -> Middleware:
    @web.middleware
    async def connection_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        guard.request_started(transport)
        try:
            if drain is None:
                response = await handler(request)
            else:
                with drain.track():
                    response = await handler(request)
        finally:
            guard.request_finished(transport)
        if response.status == 408 and not response.prepared:
            response.force_close()  # the rest of a late body may still come: say the connection ends here
        return response

    return connection_limits


def _close_when_draining(drain: Drain) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
        if drain.draining:
            # The client's next request goes to another replica. The header is set by hand: aiohttp has already
            # prepared the headers when this signal runs, and force_close alone only closes the connection after.
            response.force_close()
            response.headers["Connection"] = "close"

    return close_when_draining


async def start_http_server(
    app: web.Application,
    address: str,
    server: ServerConfig = _DEFAULT,
    *,
    reuse_port: bool = False,
    drain: Drain | None = None,
    tls: ServerTLS | None = None,
) -> HttpServer:
    """Serve `app` on `address` (`host:port`, port 0 for any free port); `reuse_port` to share it with workers;
    HTTPS only with `tls` (its certificate re-read when the files change, see gateway.tls)."""
    host, _, port = address.rpartition(":")
    guard = ConnectionGuard(server.header_timeout, server.max_connections, server.keepalive_timeout)
    app.middlewares.insert(0, _middleware(guard, drain))
    app[BODY_TIMEOUT] = server.body_timeout
    app[CONNECTIONS] = guard
    if drain is not None:
        app[DRAIN] = drain
        app.on_response_prepare.append(_close_when_draining(drain))
    # handler_cancellation: a client that disconnects cancels its handler, and so the upstream call, at once.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=_CLOSE_TIMEOUT,  # the grace is the drain's (gateway.lifecycle); this is the last moment
        keepalive_timeout=server.keepalive_timeout,
        lingering_time=_LINGER,
    )
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        guard.factory(runner.server),
        host.strip("[]") or None,
        int(port),
        backlog=1024,
        reuse_port=reuse_port or None,
        ssl=http_server_context(tls) if tls is not None else None,
    )
    bound = listener.sockets[0].getsockname()[1]
    return HttpServer(runner, listener, int(bound), guard)
