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

A call's context (`Call`) is what a grpc.aio servicer context offers: `invocation_metadata`, `peer`
(`ipv4:host:port` as grpc writes it), `time_remaining`, `abort` (raising `grpc.aio.AbortError`), `set_code`,
`set_details`, `set_trailing_metadata`, `send_initial_metadata`, `write`, `read`, `cancelled`, `done`.

The protocol as gRPC's PROTOCOL-HTTP2 says: POST with `content-type: application/grpc`, `grpc-timeout` (the call is
cancelled at its deadline and ends DEADLINE_EXCEEDED), requests compressed with gzip or deflate taken, answers sent
uncompressed, a status in trailers (trailers-only when nothing else was sent), a stream reset by the client or a
connection lost cancels its call's task. Bounds: `MAX_MESSAGE` per request message (RESOURCE_EXHAUSTED past it),
`MAX_STREAMS` calls at once per connection (more are refused), 64 KiB of headers, and a call's requests read only as
its handler takes them (its window is returned as it reads, so a client cannot queue more than a window).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import logging
import socket
import ssl
import struct
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, NoReturn, cast
from urllib.parse import quote

import grpc

from gateway.http2 import (
    MAX_HEADER_BLOCK,
    NO_ERROR,
    PREFACE,
    REFUSED,
    WINDOW,
    Connection,
    Metadata,
    data_frame,
    header_block,
    headers_frames,
    metadata_of,
)

log = logging.getLogger("tollgate.grpc")

MAX_MESSAGE = 64 << 20  # the largest request message taken (grpc.aio's max_receive_message_length, as we set it)
MAX_STREAMS = 10_000  # calls at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS)
MAX_PARTIAL = 256 << 20  # bytes of messages not yet whole, on one connection, past which it is closed
_PREFIX = struct.Struct(">BI")  # a gRPC message's compressed flag and length
_SETTINGS = struct.pack(">HIHIHI", 0x3, MAX_STREAMS, 0x4, WINDOW, 0x6, MAX_HEADER_BLOCK)
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_DECOMPRESS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
_ACCEPT_ENCODING = b"identity,deflate,gzip"
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")  # grpc-message's unescaped bytes
_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"))
_HEADERS_BLOCK = header_block(_RESPONSE_HEADERS)
_OK = grpc.StatusCode.OK
_UNRESOLVED: Any = object()


class HandlerCallDetails(NamedTuple):
    """What a generic handler or an interceptor is told of a call (`grpc.HandlerCallDetails`)."""

    method: str
    invocation_metadata: Metadata


class _Status(Exception):
    """A call ends with this status before its handler runs (a bad request, an unknown method)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


def grpc_timeout(value: bytes) -> float:
    """A `grpc-timeout` header's seconds (`100m`, `5S`, at most 8 digits); ValueError when it is not one."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8 or unit not in _TIMEOUT_UNITS:
        raise ValueError(f"not a grpc-timeout: {value!r}")
    return int(digits) * _TIMEOUT_UNITS[unit]


def _trailers(
    code: grpc.StatusCode, details: str, metadata: Iterable[tuple[str, str | bytes]]
) -> list[tuple[bytes, bytes]]:
    fields = [(b"grpc-status", str(code.value[0]).encode())]
    if details:
        fields.append((b"grpc-message", quote(details, safe=_MESSAGE_SAFE).encode("ascii")))
    return fields + _encoded(metadata)


def _encoded(metadata: Iterable[tuple[str, str | bytes]]) -> list[tuple[bytes, bytes]]:
    """Metadata as header fields: `-bin` values in base64 without padding, others as they are."""
    fields = []
    for key, value in metadata:
        name = key.lower().encode("ascii")
        if name.endswith(b"-bin"):
            raw = value if isinstance(value, bytes) else value.encode()
            fields.append((name, base64.b64encode(raw).rstrip(b"=")))
        else:
            fields.append((name, value.encode() if isinstance(value, str) else value))
    return fields


class Call:
    """One call: an HTTP/2 stream to its connection, a `grpc.aio.ServicerContext` to its handler."""

    def __init__(
        self, connection: ServerConnection, stream_id: int, fields: list[tuple[bytes, bytes]], end: bool
    ) -> None:
        self.id = stream_id
        self.send_window = connection.initial_window
        self.outcome: object = None  # set when the peer reset the stream or the connection was lost
        self._connection = connection
        self._loop = connection.loop
        self._requests: deque[bytes] = deque()  # whole request messages, not yet read
        self._buffer = bytearray()
        self._half_closed = end
        self._arrived: asyncio.Event | None = None
        self._taken = 0  # window to return: what was received and read (or never held)
        self._headers_sent = False
        self._initial: list[tuple[bytes, bytes]] = []
        self._trailing: Metadata = ()
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._finished = False
        self._cancel_status: tuple[grpc.StatusCode, str] | None = None  # the status a cancellation of ours ends with
        self._timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None
        self.task: asyncio.Task[None] | None = None
        self.method = ""
        self._metadata: Metadata = ()
        self._decompress = 0  # zlib's wbits for the request's grpc-encoding, 0 for identity
        self._bad: _Status | None = self._read_headers(fields)

    def _read_headers(self, fields: list[tuple[bytes, bytes]]) -> _Status | None:
        values = dict(fields)
        self.method = values.get(b":path", b"").decode("ascii", "replace")
        if values.get(b":method") != b"POST" or not values.get(b"content-type", b"").startswith(b"application/grpc"):
            return _Status(grpc.StatusCode.UNIMPLEMENTED, "Not a gRPC request (POST, content-type application/grpc)")
        try:
            self._metadata = metadata_of(fields)
            if (timeout := values.get(b"grpc-timeout")) is not None:
                self.deadline = self._loop.time() + grpc_timeout(timeout)
        except ValueError as exc:
            return _Status(grpc.StatusCode.INVALID_ARGUMENT, f"Unreadable headers: {exc}")
        encoding = values.get(b"grpc-encoding", b"identity")
        if encoding not in (b"identity", *_DECOMPRESS):
            return _Status(grpc.StatusCode.UNIMPLEMENTED, f"Compression {encoding.decode('ascii', 'replace')} unknown")
        self._decompress = _DECOMPRESS.get(encoding, 0)
        return None

    # ----------------------------------------------------------------------------- what the connection tells (Stream)

    def received(self, data: bytes, flow: int, end: bool) -> None:
        """DATA: whole messages are queued for the handler; the window they hold is returned as it reads them."""
        self._taken += flow
        buffer = self._buffer
        before = len(buffer)
        buffer += data
        at, size = 0, len(buffer)
        while size - at >= 5:
            compressed, length = _PREFIX.unpack_from(buffer, at)
            if length > MAX_MESSAGE:
                self._refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, f"A message of {length} bytes, over {MAX_MESSAGE}")
                return
            if size - at - 5 < length:
                break
            message = bytes(buffer[at + 5 : at + 5 + length])
            if compressed:
                if not self._decompress:
                    self._refuse(grpc.StatusCode.INTERNAL, "A compressed message without a grpc-encoding")
                    return
                inflate = zlib.decompressobj(self._decompress)
                try:
                    message = inflate.decompress(message, MAX_MESSAGE + 1)
                except zlib.error as exc:
                    self._refuse(grpc.StatusCode.INTERNAL, f"A message that does not decompress: {exc}")
                    return
                if len(message) > MAX_MESSAGE:
                    self._refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, f"A message over {MAX_MESSAGE} bytes")
                    return
            self._requests.append(message)
            self._taken -= 5 + length  # held until the handler reads it
            at += 5 + length
        del buffer[:at]
        self._connection.partial += len(buffer) - before
        if self._connection.partial > MAX_PARTIAL:  # a client opening messages it never ends, stream after stream
            raise ValueError(f"over {MAX_PARTIAL} bytes of unfinished messages")
        if end:
            self._half_closed = True
        if self._arrived is not None:
            self._arrived.set()

    def headers(self, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        """Trailers from the client (gRPC clients send none): they end its side."""
        if end:
            self._half_closed = True
            if self._arrived is not None:
                self._arrived.set()

    def ended(self, outcome: object) -> None:
        """The client reset the stream, or the connection was lost: the handler is cancelled."""
        if self.outcome is None:
            self.outcome = outcome
        self._end_task()
        if self._arrived is not None:
            self._arrived.set()

    def returned(self) -> int:
        increment = max(0, self._taken)
        self._taken -= increment
        return increment

    def _refuse(self, code: grpc.StatusCode, details: str) -> None:
        """The request cannot be read: the call ends with this status, its handler cancelled."""
        self._requests.clear()
        self._half_closed = True
        self._cancel_status = (code, details)
        self._end_task()

    def _end_task(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def shut(self) -> None:
        """The server is stopping and will not wait for this call: it ends UNAVAILABLE."""
        self._cancel_status = (grpc.StatusCode.UNAVAILABLE, "The server is shutting down")
        self._end_task()

    def task_done(self, task: asyncio.Task[None]) -> None:
        """A task cancelled before it ran (a request refused in the same read as its headers) ends the call here."""
        if not self._finished:
            self._finish(*(self._cancel_status or (grpc.StatusCode.CANCELLED, "The call was cancelled")), ())

    def _expire(self) -> None:
        self._cancel_status = (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        self._end_task()

    # ------------------------------------------------------------------------------------------------- running it

    async def run(self, server: WireServer) -> None:
        """Find the method's handler, run it, and end the stream with its status."""
        if self.deadline is not None:
            self._timer = self._loop.call_at(self.deadline, self._expire)
        try:
            if self._bad is not None:
                raise self._bad
            handler = server.resolved.get(self.method, _UNRESOLVED)
            if handler is _UNRESOLVED:
                handler = await server.resolve(self.method)
            if handler is None:
                raise _Status(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            await self._serve(handler)
            self._finish(self._code or _OK, self._details, self._trailing)
        except grpc.aio.AbortError:
            self._finish(self._code or grpc.StatusCode.UNKNOWN, self._details, self._trailing)
        except _Status as status:
            self._finish(status.code, status.details, ())
        except asyncio.CancelledError:
            if self._cancel_status is not None:  # our own: a deadline, a request that cannot be read, a shutdown
                self._finish(*self._cancel_status, self._trailing)
            elif self.outcome is None:
                self._finish(grpc.StatusCode.CANCELLED, "The call was cancelled", ())
        except Exception as exc:  # a handler's bug: logged, and UNKNOWN as grpc answers it
            log.exception("gRPC method %s failed", self.method)
            self._finish(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}", ())
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def _serve(self, handler: grpc.RpcMethodHandler[Any, Any]) -> None:
        parse = handler.request_deserializer or (lambda raw: raw)
        serialize = handler.response_serializer or (lambda message: message)
        self._serialize = serialize
        if handler.request_streaming:
            argument: Any = self._request_stream(parse)
        else:
            raw = await self._read_raw()
            if raw is None:
                raise _Status(grpc.StatusCode.INTERNAL, "The request message is missing")
            argument = _parsed(parse, raw)
        if not handler.response_streaming:
            behavior: Any = handler.unary_unary or handler.stream_unary
            assert behavior is not None
            response = await behavior(argument, self)
            if response is not None and (self._code or _OK) == _OK:
                await self._answer(_serialized(serialize, response))
            return
        streaming: Any = handler.unary_stream or handler.stream_stream
        assert streaming is not None
        result = streaming(argument, self)
        if inspect.isasyncgen(result):
            try:
                async for message in result:
                    await self.write(message)
            finally:
                await result.aclose()
        else:
            await result  # a handler that writes with context.write

    async def _read_raw(self) -> bytes | None:
        """The next request message's bytes, None once the client's side is over."""
        while not self._requests:
            if self._half_closed or self.outcome is not None:
                return None
            if self._arrived is None:
                self._arrived = asyncio.Event()
            self._arrived.clear()
            await self._arrived.wait()
        raw = self._requests.popleft()
        self._taken += 5 + len(raw)
        if self._taken >= WINDOW // 4:
            self._connection.give_back(self)
        return raw

    async def _request_stream(self, parse: Callable[[bytes], Any]) -> AsyncIterator[Any]:
        while (raw := await self._read_raw()) is not None:
            yield _parsed(parse, raw)

    def _finish(self, code: grpc.StatusCode, details: str, metadata: Metadata) -> None:
        """End the stream with this status in trailers (trailers-only when nothing was sent)."""
        if self._finished:
            return
        self._finished = True
        self._drop_buffer()
        connection = self._connection
        if self.outcome is not None or self.id not in connection.streams:
            return  # reset, or lost: nobody to tell
        block = header_block(_trailers(code, details, metadata))
        if not self._headers_sent:  # trailers-only
            self._headers_sent = True
            block = header_block([*_RESPONSE_HEADERS, *self._initial]) + block
        connection.send_headers(self.id, block, True)
        self._close()

    async def _answer(self, message: bytes) -> None:
        """A unary call's answer: headers, its message and trailers, in one write when the windows take it."""
        data = _PREFIX.pack(0, len(message)) + message
        trailers = header_block(_trailers(_OK, self._details, self._trailing))
        head = b"" if self._headers_sent else self._headers_block()
        self._headers_sent = True
        connection = self._connection
        if connection.write_now(self, head, data, trailers):
            self._finished = True
            self._drop_buffer()
            self._close()
            return
        await connection.send(self, data, False, head)
        self._finish(_OK, self._details, self._trailing)

    def _drop_buffer(self) -> None:
        self._connection.partial -= len(self._buffer)
        self._buffer.clear()

    def _close(self) -> None:
        """Our side is over: the stream is forgotten, and reset with NO_ERROR if the client's side is not (as gRPC's
        servers do, so the client stops sending)."""
        if self._half_closed:
            self._connection.forget(self.id)
        else:
            self._connection.reset(self.id, NO_ERROR)

    def _headers_block(self) -> bytes:
        return header_block([*_RESPONSE_HEADERS, *self._initial]) if self._initial else _HEADERS_BLOCK

    # -------------------------------------------------------------------- the servicer's context (grpc.aio's API)

    async def write(self, message: Any) -> None:
        """Send one response message (the headers first, with the initial metadata)."""
        if self._finished or self.outcome is not None:
            raise asyncio.InvalidStateError("The call has ended")
        data = _serialized(self._serialize, message)
        head = b""
        if not self._headers_sent:
            self._headers_sent = True
            head = self._headers_block()
        await self._connection.send(self, _PREFIX.pack(0, len(data)) + data, False, head)

    async def read(self) -> Any:
        """The next request message of a client-streaming call; `grpc.aio.EOF` once there are no more."""
        raw = await self._read_raw()
        return grpc.aio.EOF if raw is None else raw  # type: ignore[attr-defined]  # missing from grpc-stubs

    async def send_initial_metadata(self, initial_metadata: Iterable[tuple[str, str | bytes]]) -> None:
        if self._headers_sent:
            raise asyncio.InvalidStateError("The initial metadata was sent already")
        self._initial = _encoded(initial_metadata)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Iterable[tuple[str, str | bytes]] = ()
    ) -> NoReturn:
        if code == _OK:
            raise ValueError("abort with status OK")
        self._code, self._details = code, details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise grpc.aio.AbortError(f"aborted with {code}")

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Iterable[tuple[str, str | bytes]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._connection.peer

    def peer_identities(self) -> None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - self._loop.time())

    def cancelled(self) -> bool:
        return self.outcome is not None or self._cancel_status is not None

    def done(self) -> bool:
        return self._finished or self.outcome is not None

    def set_compression(self, compression: object) -> None:
        """Answers go uncompressed (a client may ask; grpc lets a server decline)."""

    def disable_next_message_compression(self) -> None:
        """Nothing is compressed."""


def _parsed(parse: Callable[[bytes], Any], raw: bytes) -> Any:
    try:
        return parse(raw)
    except Exception as exc:  # grpc's own handlers (health, reflection) parse unguarded
        raise _Status(grpc.StatusCode.INTERNAL, "Exception deserializing request!") from exc


def _serialized(serialize: Callable[[Any], bytes], message: Any) -> bytes:
    try:
        return serialize(message)
    except Exception as exc:
        log.exception("a response did not serialize")
        raise _Status(grpc.StatusCode.INTERNAL, "Exception serializing response!") from exc


class ServerConnection(Connection):
    """A server's connection: it reads the client's preface, and each new stream is a `Call` run as a task."""

    def __init__(self, server: WireServer) -> None:
        super().__init__(_SETTINGS)
        self.loop = self._loop
        self._server = server
        self._preface_read = False
        self.partial = 0  # bytes of request messages not yet whole, over every call
        self.last_id = 0  # the newest stream the client opened
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peer = _peer(transport.get_extra_info("peername"))
        self._server.connections.add(self)

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
        call.task = task = asyncio.ensure_future(call.run(self._server))
        self._server.calls.add(task)
        task.add_done_callback(self._server.calls.discard)
        task.add_done_callback(call.task_done)

    def write_now(self, stream: Call, headers: bytes, data: bytes, trailers: bytes) -> bool:
        """The header block `headers` (if any), `data` as one DATA frame and the header block `trailers` ending the
        stream, in one write if the windows take `data` now; False (nothing written) if not."""
        size = len(data)
        if self._paused or size > min(stream.send_window, self.send_window, self.max_frame):
            return False
        head = headers_frames(stream.id, headers, False, self.max_frame) if headers else b""
        self._write(head + data_frame(stream.id, data) + headers_frames(stream.id, trailers, True, self.max_frame))
        stream.send_window -= size
        self.send_window -= size
        return True

    def going_away(self) -> None:
        """No new streams: GOAWAY naming the last one taken; the connection closes once its streams are over."""
        if self.usable:
            self.usable = False
            self.write_goaway(self.last_id)
            if not self.streams:
                self.close(last=self.last_id)


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
            connection.close(last=connection.last_id)


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
