"""`WireOpener`: a split front door's `Exchange` streams on its own HTTP/2 connection to the engine, speaking gRPC's
wire protocol (gRPC over HTTP/2: a HEADERS frame opens the call, each message is a DATA frame's 5-byte prefix and
bytes, trailers end it) straight from the event loop instead of through grpc.aio.

Why: an exchange is one long stream that carries many calls, so what it costs is its messages, and each grpc.aio
message crosses three threads (the loop, grpc's completion-queue poller, its event engine) and a socketpair each
way. Here a message is one `transport.write` and one parse in `data_received`. The engine is unchanged: a grpc.aio
server, for this client as for any other. Everything else a front door asks its engine (health, admin, a release
without `Exchange`) stays on its grpc.aio channel.

The connection itself (frames, flow control, HPACK, PING, GOAWAY, keepalive) is `http2.ClientConnection`; this module
is what a gRPC stream is on it: the call's headers, its messages (5-byte prefix, at most `MAX_MESSAGE` taken), its
status and metadata from the trailers (an unreadable one ends only that stream), HTTP statuses as gRPC's codes, and
the opener: one connection per target at a time, renewed when it fails or is told to go away, keepalive every
`KEEPALIVE` seconds (twice as long after the peer's `too_many_pings`), `PING_TIMEOUT` to answer. A stream's outcome
is what a grpc.aio call's would be, down to the `grpc.aio.AioRpcError` and its status, so `exchange_client` reads
both the same way; a failure to connect (refused, TLS refused, files that cannot be read) is UNAVAILABLE, never a
stream left waiting. TLS as grpc's channel: ALPN `h2`, the `tls.engine` files (with no `ca`, the system's roots,
where grpc uses its own bundled ones).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar
from urllib.parse import unquote

import grpc

from gateway.config.tls import ClientTLS
from gateway.grpc_messages import MAX_MESSAGE, Metadata, grpc_message, metadata_of, rpc_error, whole_messages
from gateway.http2 import ClientConnection, header_block
from gateway.tls import grpc_client_context

log = logging.getLogger("tollgate.frontdoor")

Req = TypeVar("Req")
Resp = TypeVar("Resp")

KEEPALIVE = 30.0  # seconds of silence on a connection with open streams before a PING
PING_TIMEOUT = 20.0  # seconds a PING has to be answered
CONNECT_TIMEOUT = 20.0
_HTTP_CODES = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def split_target(target: str) -> tuple[str, int] | None:
    """A gRPC target's host and port (`host:port`, `[v6]:port`, `dns:///host:port`); None for a form this
    connection cannot dial (a unix socket, a resolver of another kind), which then stays on grpc.aio."""
    if target.startswith("dns:///"):
        target = target[len("dns:///") :]
    elif target.startswith("dns:") and not target.startswith("dns://"):
        target = target[len("dns:") :]
    elif "://" in target or target.startswith(("unix:", "ipv4:", "ipv6:", "vsock:")):
        return None
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


_OK = object()  # a stream's outcome when it ended with status OK


class WireStream(Generic[Req, Resp]):
    """One gRPC bidirectional stream, with what `exchange_client` uses of a `grpc.aio.StreamStreamCall`: `write`,
    `done_writing`, `cancel`, and its responses by `async for` (an `AioRpcError` for a status other than OK)."""

    def __init__(self, opener: WireOpener[Req, Resp]) -> None:
        self._serialize, self._deserialize = opener.serialize, opener.deserialize
        self._connection: ClientConnection | None = None
        self.id = 0
        self.send_window = 0
        self.recv_window = 0
        self._unreturned = 0  # bytes received, not yet returned to the engine's window
        self.outcome: object = None  # _OK or an AioRpcError, once ended
        self._initial: Metadata = ()
        self._buffer = bytearray()  # DATA not yet a whole message
        self._responses: deque[Resp] = deque()
        self._arrived = asyncio.Event()
        self._started = asyncio.ensure_future(self._start(opener))

    async def _start(self, opener: WireOpener[Req, Resp]) -> None:
        for _ in range(3):  # a connection may be told to go away between being handed out and the stream opening
            try:
                connection = await opener.connection()
            except Exception as exc:  # refused, unreachable, TLS refused or unreadable files, closing: never a hang
                log.debug("could not connect to the engine: %r", exc)  # the exchange says so, with this
                self.ended(rpc_error(grpc.StatusCode.UNAVAILABLE, f"Could not connect to the engine: {exc!r}"))
                return
            if self.outcome is not None:  # cancelled while connecting
                return
            if connection.usable:
                self._connection = connection
                self.id = connection.open(self, opener.headers)
                return
        self.ended(rpc_error(grpc.StatusCode.UNAVAILABLE, "The engine's connections kept going away"))

    # --------------------------------------------------------------------------------------- what the caller uses

    async def write(self, request: Req) -> None:
        await self._started
        self._check()
        message = self._serialize(request)
        assert self._connection is not None
        await self._connection.send(self, grpc_message(message), False)

    async def done_writing(self) -> None:
        await self._started
        self._check()
        assert self._connection is not None
        await self._connection.send(self, b"", True)

    def cancel(self) -> bool:
        if self.outcome is not None:
            return False
        self.outcome = rpc_error(grpc.StatusCode.CANCELLED, "Locally cancelled", self._initial)
        if self._connection is not None:
            self._connection.reset(self.id)
        self._arrived.set()
        return True

    def __aiter__(self) -> WireStream[Req, Resp]:
        return self

    async def __anext__(self) -> Resp:
        while not self._responses:
            if self.outcome is not None:
                if self.outcome is _OK:
                    raise StopAsyncIteration
                assert isinstance(self.outcome, BaseException)
                raise self.outcome
            self._arrived.clear()
            await self._arrived.wait()
        return self._responses.popleft()

    def _check(self) -> None:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        if self.outcome is _OK:
            raise asyncio.InvalidStateError("The stream has ended")

    # ----------------------------------------------------------------------------------- what the connection tells

    def received(self, data: bytes, flow: int, end: bool) -> None:
        """DATA for this stream: the whole messages in it (and before it) are parsed and queued (what bounds them is
        the exchange's own credit, so the window is returned as it arrives); DATA that ends it means no status."""
        self._unreturned += flow
        self._parse(data)
        if end:
            self.ended(rpc_error(grpc.StatusCode.INTERNAL, "The engine ended the stream without a status"))

    def _parse(self, data: bytes) -> None:
        self._buffer += data
        messages, too_long = whole_messages(self._buffer, MAX_MESSAGE)
        for compressed, raw in messages:
            if compressed:
                self._fail(rpc_error(grpc.StatusCode.INTERNAL, "A message compressed"))
                return
            try:
                self._responses.append(self._deserialize(raw))
            except Exception as exc:  # not the message the method answers with
                self._fail(exc)  # raised to the reader as it is: `exchange_client` ends the exchange as broken
                return
        if too_long:
            message = f"A message of {too_long} bytes, over the limit of {MAX_MESSAGE}"
            self._fail(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, message))
            return
        self._arrived.set()

    def _fail(self, outcome: BaseException) -> None:
        """What arrived cannot be read: the stream is cancelled, and its reader gets `outcome`."""
        self.cancel()
        self.outcome = outcome

    def returned(self) -> int:
        """What was received, now returned to the engine's window."""
        increment, self._unreturned = self._unreturned, 0
        return increment

    def headers(self, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        """A header block: the response's headers, or its trailers (`end`), or both at once (trailers-only)."""
        metadata = metadata_of(fields)
        values = dict(fields)
        status = values.get(b":status", b"200")
        if not end and status.startswith(b"1"):
            return  # informational: the answer follows
        if not end and status == b"200":
            self._initial = metadata
            return
        grpc_status = values.get(b"grpc-status")
        if grpc_status is None:  # not a gRPC answer (a proxy's, no such path): the code HTTP's status maps to
            code = _HTTP_CODES.get(int(status) if status.isdigit() else 0, grpc.StatusCode.UNKNOWN)
            what = f"HTTP {status.decode('ascii', 'replace')}" if status != b"200" else "no status"
            self.ended(rpc_error(code, f"The engine answered {what}", self._initial, metadata))
        elif (code := _CODES.get(int(grpc_status), grpc.StatusCode.UNKNOWN)) != grpc.StatusCode.OK:
            details = unquote(values.get(b"grpc-message", b"").decode("utf-8", "replace"))
            self.ended(rpc_error(code, details, self._initial, metadata))
        elif self._buffer:
            self.ended(rpc_error(grpc.StatusCode.INTERNAL, "The engine's stream ended inside a message", self._initial))
        else:
            self.ended(_OK)

    def ended(self, outcome: object) -> None:
        """The stream is over (`_OK`, or the error its reader gets once the responses before it are read)."""
        if self.outcome is None:
            self.outcome = outcome
            if self._connection is not None:
                self._connection.forget(self.id)
        self._arrived.set()


class WireOpener(Generic[Req, Resp]):
    """Opens `method`'s streams on a connection to `host:port` (TLS when `tls`): a stand-in for a grpc.aio
    stream-stream multicallable (`opener(None)` is a new stream). Streams share the current connection; a new one is
    made when it is lost or going away."""

    def __init__(
        self,
        host: str,
        port: int,
        method: str,
        serialize: Callable[[Req], bytes],
        deserialize: Callable[[bytes], Resp],
        tls: ClientTLS | None = None,
    ) -> None:
        self.serialize, self.deserialize = serialize, deserialize
        self._host, self._port, self._tls = host, port, tls
        self._current: ClientConnection | None = None
        self._connecting: asyncio.Future[ClientConnection] | None = None
        self._all: set[ClientConnection] = set()
        self._closed = False
        self._keepalive = KEEPALIVE
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.headers = header_block(
            [
                (b":method", b"POST"),
                (b":scheme", b"https" if tls is not None else b"http"),
                (b":path", method.encode()),
                (b":authority", (tls.server_name if tls is not None and tls.server_name else authority).encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"user-agent", b"tollgate-exchange"),
            ]
        )

    def _calm(self) -> None:
        """The engine said we ping too often (GOAWAY `too_many_pings`): half as often from the next connection."""
        self._keepalive *= 2
        log.warning("the engine asked for fewer PINGs: keepalive now every %.0f s", self._keepalive)

    def __call__(self, _metadata: object = None) -> WireStream[Req, Resp]:
        return WireStream(self)

    async def connection(self) -> ClientConnection:
        """The connection a new stream opens on: the current one, or a new one."""
        current = self._current
        if current is not None and current.usable:
            return current
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> ClientConnection:
        if self._closed:
            raise ConnectionError("the front door is closing")
        loop = asyncio.get_running_loop()
        tls = self._tls
        context = grpc_client_context(tls) if tls is not None else None
        server_name = (tls.server_name or self._host) if tls is not None else None
        async with asyncio.timeout(CONNECT_TIMEOUT):
            transport, connection = await loop.create_connection(
                lambda: ClientConnection(self._keepalive, PING_TIMEOUT, self._calm),
                self._host,
                self._port,
                ssl=context,
                server_hostname=server_name,
            )
        ssl_object = transport.get_extra_info("ssl_object")
        if self._closed or (ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2"):
            connection.close()
            raise ConnectionError("the front door is closing" if self._closed else "the engine did not offer h2")
        self._current = connection
        self._all.add(connection)
        connection.lost.add_done_callback(lambda _: self._all.discard(connection))
        return connection

    async def close(self) -> None:
        """Close every connection (their streams end as UNAVAILABLE); none is opened after."""
        self._closed = True
        for connection in list(self._all):
            connection.close()
        self._current = None
