"""`WireServer`: a gRPC server spoken from the event loop (gRPC over HTTP/2 on `http2.Connection`), hosting the
servicers written for grpc.aio unchanged.

Why: grpc.aio's server hands every call and every message across threads (the loop, grpc's completion queue, its
event engine): an RPC of its own cost the engine ≈ 300 µs of CPU and each streamed message tens more. Here a call is a
task, a message one `transport.write` and one parse in `data_received` (docs/benchmarks.md, Round 9).

What it takes of grpc.aio's server API is what generated `add_*Servicer_to_server` functions and grpc's own health
and reflection servicers use: `add_generic_rpc_handlers`, `add_registered_method_handlers`, and handlers as
`grpc.RpcMethodHandler`s of all four kinds, async generators or `context.write` for streamed answers. Server
interceptors (`grpc.aio.ServerInterceptor`) are applied once per method, on its first call, with no metadata in the
call details: they wrap handlers, as `gateway.grpc_guard`'s does, and do not choose by caller.

Each call is a `gateway.wire_call.Call`: its stream, and the servicer context its handler is given. A connection
takes `MAX_STREAMS` calls at once (more are refused, REFUSED_STREAM, which clients retry), 64 KiB of headers, 16 KiB
frames, and holds at most `wire_call.MAX_BUFFERED` bytes for its handlers; a peer that breaks HTTP/2's rules, floods
PINGs or SETTINGS, resets streams faster than `http2`'s allowance or reads nothing of what it asks for loses its
connection (`http2.Connection`). A PING after `KEEPALIVE` seconds of silence with calls open finds dead peers.
`stop(grace)` says GOAWAY naming the last call taken, lets calls finish for `grace` seconds, then ends the rest
UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, cast

import grpc

from gateway.grpc_messages import Metadata
from gateway.http2 import (
    MAX_HEADER_BLOCK,
    NO_ERROR,
    PREFACE,
    REFUSED,
    WINDOW,
    Connection,
)
from gateway.wire_call import Call

log = logging.getLogger("tollgate.grpc")

MAX_STREAMS = 10_000  # calls at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS)
KEEPALIVE = 7200.0  # seconds of silence, with calls open, before a PING (grpc's servers' default)
PING_TIMEOUT = 20.0  # seconds a PING has to be answered before the connection (and its calls) is dropped
_SETTINGS = struct.pack(">HIHIHI", 0x3, MAX_STREAMS, 0x4, WINDOW, 0x6, MAX_HEADER_BLOCK)


class HandlerCallDetails(NamedTuple):
    """What a generic handler or an interceptor is told of a call (`grpc.HandlerCallDetails`)."""

    method: str
    invocation_metadata: Metadata


class ServerConnection(Connection):
    """A server's connection: it reads the client's preface, and each new stream is a `Call` run as a task."""

    def __init__(self, server: WireServer) -> None:
        super().__init__(_SETTINGS, KEEPALIVE, PING_TIMEOUT)
        self.loop = self._loop
        self._server = server
        self._preface_read = False
        self.buffered = 0  # bytes its calls hold, not yet read by their handlers (`wire_call.MAX_BUFFERED`)
        self.last_id = 0  # the newest stream the client opened
        self.last_taken = 0  # the newest stream that became a call (what our GOAWAY names)
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peer = _peer(transport.get_extra_info("peername"))
        self._server.connections.add(self)
        if self._server.stopping:  # accepted (or its handshake done) after the server began to stop
            self.going_away()

    def close(self, code: int = NO_ERROR, *, abort: bool = False, last: int | None = None) -> None:
        super().close(code, abort=abort, last=self.last_taken if last is None else last)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._server.connections.discard(self)

    def _preface(self, buffer: bytearray) -> int:
        if self._preface_read:
            return 0
        if len(buffer) < len(PREFACE):
            if not PREFACE.startswith(bytes(buffer)):
                raise ValueError("not an HTTP/2 connection")
            return -1
        if buffer[: len(PREFACE)] != PREFACE:
            raise ValueError("not an HTTP/2 connection")
        self._preface_read = True
        return len(PREFACE)

    def _new_stream(self, stream_id: int, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        if stream_id <= self.last_id:
            return  # a stream that is over: what comes for it is ignored
        if not stream_id & 1:
            raise ValueError(f"a client opened the even stream {stream_id}")
        self.last_id = stream_id
        if not self.usable or len(self.streams) >= MAX_STREAMS:
            self.reset(stream_id, REFUSED)
            return
        call = Call(self, stream_id, fields, end)
        self.streams[stream_id] = call
        self.last_taken = stream_id
        call.task = task = asyncio.ensure_future(call.run(self._server))
        self._server.calls.add(task)
        task.add_done_callback(self._server.calls.discard)
        task.add_done_callback(call.task_done)

    def going_away(self) -> None:
        """No new streams: GOAWAY naming the last one taken; the connection closes once its streams are over."""
        if self.usable:
            self.usable = False
            self.write_goaway(self.last_taken)
            if not self.streams:
                self.close()


def _peer(address: Any) -> str:
    """A peer as grpc writes it: `ipv4:10.0.0.7:51234`, `ipv6:[::1]:51234`, `unix:path`."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
    return f"unix:{address}" if address else "unix:"


class WireServer:
    """A gRPC server on the event loop, for the servicers grpc.aio would host (see the module docstring)."""

    def __init__(self, interceptors: Sequence[Any] = ()) -> None:
        self._interceptors = list(interceptors)
        self._registered: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._generic: list[grpc.GenericRpcHandler[Any, Any]] = []
        self.resolved: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}  # by method, once asked for
        self._listeners: list[asyncio.Server] = []
        self.connections: set[ServerConnection] = set()
        self.calls: set[asyncio.Task[None]] = set()
        self.stopping = False

    # grpc.aio.Server's registration, as generated code and grpc's own servicers call it.
    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        for name, handler in handlers.items():
            self._registered[f"/{service}/{name}"] = handler

    async def resolve(self, method: str) -> grpc.RpcMethodHandler[Any, Any] | None:
        """`method`'s handler, interceptors applied, kept in `resolved` (interceptors run once per method); None for
        an unknown method."""
        if len(self.resolved) > 10_000:  # unknown paths a client makes up must not grow this without end
            self.resolved = {path: h for path, h in self.resolved.items() if h is not None}

        async def lookup(details: HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
            found = self._registered.get(details.method)
            for generic in self._generic:
                if found is not None:
                    break
                found = generic.service(cast(grpc.HandlerCallDetails, details))
            return found

        continuation: Callable[[HandlerCallDetails], Awaitable[Any]] = lookup
        for interceptor in reversed(self._interceptors):
            continuation = functools.partial(interceptor.intercept_service, continuation)
        handler = await continuation(HandlerCallDetails(method, ()))
        self.resolved[method] = handler
        return cast("grpc.RpcMethodHandler[Any, Any] | None", handler)

    async def start(self, address: str, *, tls: ssl.SSLContext | None = None, reuse_port: bool = False) -> int:
        """Listen on `address` (`host:port`; `[::]` or an empty host for every address, both families; port 0 for
        a free one): the port."""
        loop = asyncio.get_running_loop()
        port = 0
        for sock in _sockets(address, reuse_port):
            self._listeners.append(
                await loop.create_server(lambda: ServerConnection(self), sock=sock, ssl=tls, backlog=1024)
            )
            port = sock.getsockname()[1]
        return port

    async def stop(self, grace: float | None) -> None:
        """Stop listening, tell every connection GOAWAY, let calls finish for up to `grace` seconds, then end those
        left UNAVAILABLE and close."""
        self.stopping = True
        for listener in self._listeners:
            listener.close()
        for connection in list(self.connections):
            connection.going_away()
        if self.calls and grace:
            await asyncio.wait(list(self.calls), timeout=grace)
        for connection in list(self.connections):
            for stream in list(connection.streams.values()):
                cast(Call, stream).shut()
        if self.calls:
            await asyncio.wait(list(self.calls), timeout=1.0)
        for connection in list(self.connections):
            connection.close()


def _sockets(address: str, reuse_port: bool) -> list[socket.socket]:
    """Listening sockets for `address`, every one on the same port."""
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not port_text.isdigit():
        raise OSError(f"cannot listen on {address} for gRPC: no port")
    port = int(port_text)
    targets: list[tuple[socket.AddressFamily, Any]]
    if host in ("", "::", "*"):  # every address: one dual-stack socket, as grpc's own
        targets = [(socket.AF_INET6, ("::", port, 0, 0))] if socket.has_ipv6 else [(socket.AF_INET, ("0.0.0.0", port))]
    else:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        targets = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
    sockets: list[socket.socket] = []
    try:
        for family, sockaddr in targets:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(host not in ("", "::", "*")))
            if port == 0 and len(sockets) > 1:  # the others on the port the first was given
                sock.bind((sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:]))
            else:
                sock.bind(sockaddr)
            sock.listen(1024)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise OSError(f"cannot listen on {address} for gRPC: {exc}") from exc
    return sockets
