"""`Call`: one call on tollgate's gRPC server (`gateway.wire_server`), the HTTP/2 stream to its connection and the
servicer context (`grpc.aio.ServicerContext`'s API) to its handler.

What a servicer may use: `invocation_metadata`, `peer` (`ipv4:host:port` as grpc writes it), `time_remaining`,
`abort` (raising `grpc.aio.AbortError`), `set_code`, `set_details`, `set_trailing_metadata`,
`send_initial_metadata`, `write`, `read`, `cancelled`, `done`.

The protocol as gRPC's PROTOCOL-HTTP2 says: POST with `content-type: application/grpc`; `grpc-timeout` (the call is
cancelled at its deadline and ends DEADLINE_EXCEEDED); requests compressed with gzip or deflate taken (inflated as
the handler reads them), answers sent uncompressed; a status in trailers (trailers-only when nothing else was sent);
a stream reset by the client or a connection lost cancels the call's task, and a call cut inside a message it was
sending is reset rather than ended with a status after half a message. `MAX_MESSAGE` bytes a request message at
most (RESOURCE_EXHAUSTED past it); a call's requests are held only until its handler reads them, their window
returned as it does (so a client cannot queue more than a window), and the bytes a connection's calls hold,
whole messages or not, are counted against `MAX_BUFFERED`.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

import grpc

from gateway.grpc_messages import MAX_MESSAGE, Metadata, grpc_message, metadata_of, whole_messages
from gateway.http2 import CANCEL, NO_ERROR, WINDOW, header_block

if TYPE_CHECKING:
    from gateway.wire_server import ServerConnection, WireServer

log = logging.getLogger("tollgate.grpc")

MAX_BUFFERED = 256 << 20  # bytes a connection's calls hold, not yet read by their handlers, past which it is closed
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_DECOMPRESS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")  # grpc-message's unescaped bytes
_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"))
_HEADERS_BLOCK = header_block(_RESPONSE_HEADERS)
_OK = grpc.StatusCode.OK
_UNRESOLVED: Any = object()


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
        self.recv_window = WINDOW
        self.outcome: object = None  # set when the peer reset the stream or the connection was lost
        self._connection = connection
        self._loop = connection.loop
        self._requests: deque[tuple[int, bytes]] = deque()  # whole request messages (compressed?, bytes), unread
        self._held = 0  # their bytes on the wire
        self._sending = False  # a message is going out: a cut now resets the stream
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
        """DATA: whole messages are queued for the handler as they came (inflated when read); the window they hold
        is returned as it reads them, the rest of the frame's at once."""
        connection = self._connection
        self._buffer += data
        connection.buffered += len(data)  # the connection counts every call's buffer and held messages
        self._taken += flow
        messages, too_long = whole_messages(self._buffer, MAX_MESSAGE)
        for compressed, raw in messages:
            self._taken -= 5 + len(raw)  # held until the handler reads it
            self._held += 5 + len(raw)
            if compressed and not self._decompress:
                self._refuse(grpc.StatusCode.INTERNAL, "A compressed message without a grpc-encoding")
                return
            self._requests.append((compressed, raw))
        if too_long:
            self._refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, f"A message of {too_long} bytes, over {MAX_MESSAGE}")
            return
        if connection.buffered > MAX_BUFFERED:  # a client sending what no handler reads, stream after stream
            raise ValueError(f"over {MAX_BUFFERED} bytes held for handlers on one connection")
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
        self._drop_requests()
        self._half_closed = True
        self._cancel_status = (code, details)
        self._end_task()

    def _drop_requests(self) -> None:
        """What the call holds of its requests is let go (and no longer counted against the connection)."""
        self._connection.buffered -= len(self._buffer) + self._held
        self._buffer.clear()
        self._requests.clear()
        self._held = 0

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
        self._parse, self._serialize = parse, serialize
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
        """The next request message's bytes (inflated), None once the client's side is over."""
        while not self._requests:
            if self._half_closed or self.outcome is not None:
                return None
            if self._arrived is None:
                self._arrived = asyncio.Event()
            self._arrived.clear()
            await self._arrived.wait()
        compressed, raw = self._requests.popleft()
        size = 5 + len(raw)
        self._held -= size
        self._connection.buffered -= size
        self._taken += size
        if self._taken >= WINDOW // 4:
            self._connection.give_back(self)
        return _inflated(raw, self._decompress) if compressed else raw

    async def _request_stream(self, parse: Callable[[bytes], Any]) -> AsyncIterator[Any]:
        while (raw := await self._read_raw()) is not None:
            yield _parsed(parse, raw)

    def _finish(self, code: grpc.StatusCode, details: str, metadata: Metadata) -> None:
        """End the stream with this status in trailers (trailers-only when nothing was sent); reset it instead when
        it is cut inside a message it was sending."""
        if self._finished:
            return
        self._finished = True
        self._drop_requests()
        connection = self._connection
        if self.outcome is not None or self.id not in connection.streams:
            return  # reset, or lost: nobody to tell
        if self._sending:
            connection.reset(self.id, CANCEL)
            return
        try:
            block = header_block(_trailers(code, details, metadata))
        except (UnicodeError, AttributeError, TypeError) as exc:  # metadata that is no header: the status without it
            log.error("gRPC method %s: trailing metadata that cannot be sent (%r)", self.method, exc)
            block = header_block(_trailers(grpc.StatusCode.INTERNAL, "Trailing metadata that cannot be sent", ()))
        if not self._headers_sent:  # trailers-only
            self._headers_sent = True
            block = header_block([*_RESPONSE_HEADERS, *self._initial]) + block
        connection.send_headers(self.id, block, True)
        self._close()

    async def _answer(self, message: bytes) -> None:
        """A unary call's answer: headers, its message and trailers, in one write when the windows take it."""
        data = grpc_message(message)
        trailers = header_block(_trailers(_OK, self._details, self._trailing))
        head = b"" if self._headers_sent else self._headers_block()
        self._headers_sent = True
        if self._connection.send_now(self, data, headers=head, trailers=trailers):
            self._finished = True
            self._drop_requests()
            self._close()
            return
        await self._send(data, head)
        self._finish(_OK, self._details, self._trailing)

    async def _send(self, data: bytes, headers: bytes = b"") -> None:
        """A message on the stream, as the windows allow; a cut while it is in part sent resets the stream."""
        self._sending = True
        await self._connection.send(self, data, False, headers)
        self._sending = False

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
        await self._send(grpc_message(data), head)

    async def read(self) -> Any:
        """The next request message of a client-streaming call; `grpc.aio.EOF` once there are no more."""
        raw = await self._read_raw()
        return grpc.aio.EOF if raw is None else _parsed(self._parse, raw)  # type: ignore[attr-defined]  # missing from grpc-stubs

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


def _inflated(raw: bytes, wbits: int) -> bytes:
    try:
        message = zlib.decompressobj(wbits).decompress(raw, MAX_MESSAGE + 1)
    except zlib.error as exc:
        raise _Status(grpc.StatusCode.INTERNAL, f"A message that does not decompress: {exc}") from exc
    if len(message) > MAX_MESSAGE:
        raise _Status(grpc.StatusCode.RESOURCE_EXHAUSTED, f"A message over {MAX_MESSAGE} bytes once inflated")
    return message


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
