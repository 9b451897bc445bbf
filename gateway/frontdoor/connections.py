"""Connection deadlines aiohttp does not have: a time limit on a request's line and headers, and a cap on open
connections per process.

Each accepted connection's protocol (aiohttp's request handler) is wrapped by a `_Guarded` protocol that forwards
every call to it. The header clock starts when the connection opens, and again when the first bytes of a later
request arrive on an idle keep-alive connection; it stops when the request reaches the application (the front
door's middleware calls `request_started`). A connection whose headers are late gets a 408 and is closed (the
clocks are read by one `Sweep`, so a late connection is answered up to a quarter of the timeout later). A
connection past `max_connections` gets a 503 with `Retry-After` and is closed at once. Idle keep-alive connections
(aiohttp's `keepalive_timeout`) and slow bodies (`read_json`) are limited elsewhere; every close is counted by
reason in `closed` (`tollgate_http_connections_closed_total{reason}`), the keep-alive ones told apart by the
connection having been idle that long when it closed without an error or an end from the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import orjson
from aiohttp import web

from gateway.sweep import Sweep, tick_for

log = logging.getLogger("tollgate.frontdoor")

_LOG_INTERVAL = 60.0
_KEEPALIVE_SLACK = 0.9  # aiohttp's keep-alive timer fires on the loop's clock, a little early or late


def _raw_response(status: str, message: str, code: str, extra: str = "") -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


_HEADERS_LATE = _raw_response("408 Request Timeout", "The request's headers took too long to arrive", "request_timeout")
_TOO_MANY = _raw_response(
    "503 Service Unavailable", "Too many open connections; retry shortly", "too_many_connections", "Retry-After: 1\r\n"
)


# Why the front door closed a connection, for `tollgate_http_connections_closed_total{reason}`.
MAX_CONNECTIONS = "max_connections"  # refused at once: over the cap
HEADER_TIMEOUT = "header_timeout"  # a 408: the request's line and headers too late
BODY_TIMEOUT = "body_timeout"  # a 408: the body too late (counted by the front door's body reader)
KEEPALIVE_TIMEOUT = "keepalive_timeout"  # idle between requests for keepalive_timeout


class ConnectionGuard:
    """The open connections of one front door, with their header deadlines, and why it closed the ones it did."""

    def __init__(self, header_timeout: float, max_connections: int, keepalive_timeout: float = 75.0) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self._keepalive_after = keepalive_timeout * _KEEPALIVE_SLACK
        self._open: dict[asyncio.BaseTransport, _Guarded] = {}
        self.closed = dict.fromkeys((MAX_CONNECTIONS, HEADER_TIMEOUT, BODY_TIMEOUT, KEEPALIVE_TIMEOUT), 0)
        self.stopping = False  # the server closes idle connections itself now: not keep-alive timeouts
        self._next_log = -float("inf")
        self.headers_due = Sweep(tick_for(header_timeout))  # the connections whose header clock runs

    @property
    def refused(self) -> int:
        """Connections closed at once: over max_connections."""
        return self.closed[MAX_CONNECTIONS]

    @property
    def timed_out(self) -> int:
        """Connections closed with a 408 because their headers were late."""
        return self.closed[HEADER_TIMEOUT]

    @property
    def open_connections(self) -> int:
        """Connections open now."""
        return len(self._open)

    def factory(self, make_handler: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` that wraps each of `make_handler`'s protocols."""
        return lambda: _Guarded(self, make_handler)

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        """A request's headers arrived on `transport` and its handling begins: its header clock stops."""
        guarded = self._open.get(transport) if transport is not None else None
        if guarded is not None:
            guarded.active += 1
            guarded.disarm()

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        """A request on `transport` was answered."""
        guarded = self._open.get(transport) if transport is not None else None
        if guarded is not None:
            guarded.active -= 1
            if not guarded.active:
                guarded.idle_since = asyncio.get_running_loop().time()

    def _admit(self, transport: asyncio.BaseTransport, guarded: _Guarded) -> bool:
        if len(self._open) >= self.max_connections:
            self.closed[MAX_CONNECTIONS] += 1
            self._say(f"open connections at max_connections ({self.max_connections}): refusing new ones")
            return False
        self._open[transport] = guarded
        return True

    def _forget(self, guarded: _Guarded, exc: Exception | None) -> None:
        if guarded.transport is not None:
            self._open.pop(guarded.transport, None)
        # aiohttp closes a keep-alive connection idle for keepalive_timeout without telling anyone: a connection we
        # closed (no error, no end from the client), idle between requests about that long, is one of those.
        idle = guarded.idle_since
        ours = exc is None and not guarded.ended and not guarded.active and not self.stopping
        if ours and idle is not None and asyncio.get_running_loop().time() - idle >= self._keepalive_after:
            self.closed[KEEPALIVE_TIMEOUT] += 1

    def _say(self, message: str) -> None:
        loop_time = asyncio.get_running_loop().time()
        if loop_time >= self._next_log:
            self._next_log = loop_time + _LOG_INTERVAL
            log.warning("%s (%d refused, %d timed out so far)", message, self.refused, self.timed_out)

    def body_late(self) -> None:
        """A request's body took longer than body_timeout: answered 408, its connection closed."""
        self.closed[BODY_TIMEOUT] += 1


CONNECTIONS = web.AppKey("connections", ConnectionGuard)  # the front door's guard, for the body reader


class _Guarded(asyncio.Protocol):
    """One connection: forwards to aiohttp's protocol, with the header clock and the cap around it."""

    def __init__(self, guard: ConnectionGuard, make_handler: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_handler = make_handler
        self._inner: Any = None  # aiohttp's RequestHandler, made once the connection is admitted
        self.transport: asyncio.Transport | None = None
        self._clock_started: float | None = None  # loop time the header clock started; None: it is stopped
        self.active = 0  # requests being handled on this connection
        self.idle_since: float | None = None  # loop time its last request was answered; None: none was yet
        self.ended = False  # the client ended its side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        self.transport = transport
        if not self._guard._admit(transport, self):
            transport.write(_TOO_MANY)
            transport.close()
            return
        self._arm()
        self._inner = self._make_handler()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self.active == 0 and self._clock_started is None:
            self._arm()  # the first bytes of another request on a kept-alive connection
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        self.ended = True
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self._guard._forget(self, exc)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def disarm(self) -> None:
        """Stop the header clock."""
        if self._clock_started is not None:
            self._clock_started = None
            self._guard.headers_due.unwatch(self)

    def _arm(self) -> None:
        self._clock_started = asyncio.get_running_loop().time()
        self._guard.headers_due.watch(self)

    def check(self, now: float) -> bool:
        """The header clock (`Sweep`): a 408 and the connection closed when it ran out; whether it still runs."""
        started = self._clock_started
        if started is None:
            return False
        if now - started < self._guard.header_timeout:
            return True
        self._clock_started = None
        transport = self.transport
        if self.active or transport is None or transport.is_closing():
            return False  # a request got in meanwhile: its body and its answer have limits of their own
        self._headers_late(transport)
        return False

    def _headers_late(self, transport: asyncio.Transport) -> None:
        self._guard.closed[HEADER_TIMEOUT] += 1
        self._guard._say(f"a request's headers took over {self._guard.header_timeout:g}s: answered 408")
        transport.write(_HEADERS_LATE)
        transport.close()
