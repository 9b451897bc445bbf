"""`WireOpener`: a split front door's `Exchange` streams on its own HTTP/2 connection to the engine, speaking gRPC's
wire protocol (gRPC over HTTP/2: a HEADERS frame opens the call, each message is a DATA frame's 5-byte prefix and
bytes, trailers end it) straight from the event loop instead of through grpc.aio.

Why: an exchange is one long stream that carries many calls, so what it costs is its messages, and each grpc.aio
message crosses three threads (the loop, grpc's completion-queue poller, its event engine) and a socketpair each
way. Here a message is one `transport.write` and one parse in `data_received`. The engine is unchanged: a grpc.aio
server, for this client as for any other. Everything else a front door asks its engine (health, admin, a release
without `Exchange`) stays on its grpc.aio channel.

What it does of HTTP/2: the connection preface and settings, flow control both ways (our receive windows are
returned as data arrives: the exchange's own credit is what bounds a stream, see `exchange_client`; a send window
the peer's new settings made negative holds data back until it is positive again), HPACK (the `hpack` package
decodes; we send literal fields, never indexed), CONTINUATION, PING answered, GOAWAY (streams past its last id fail
as UNAVAILABLE, the rest finish), RST_STREAM, and keepalive as the channel had it (a PING after `KEEPALIVE` seconds
of silence while streams are open, at most two without data in between, twice as long after the peer's
`too_many_pings`; no answer within `PING_TIMEOUT` ends the connection). A protocol error ends the connection; a
stream's unreadable status ends only that stream. One connection per target at a time, renewed when it fails or is
told to go away. A stream's outcome is what a grpc.aio call's would be, down to the `grpc.aio.AioRpcError` and its
status, so `exchange_client` reads both the same way; a failure to connect (refused, TLS refused, files that cannot
be read) is UNAVAILABLE, never a stream left waiting. TLS as grpc's channel: ALPN `h2`, the `tls.engine` files (with
no `ca`, the system's roots, where grpc uses its own bundled ones).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar, cast
from urllib.parse import unquote

import grpc
import hpack

from gateway.config.tls import ClientTLS

log = logging.getLogger("tollgate.frontdoor")

Req = TypeVar("Req")
Resp = TypeVar("Resp")

KEEPALIVE = 30.0  # seconds of silence on a connection with open streams before a PING
PING_TIMEOUT = 20.0  # seconds a PING has to be answered
CONNECT_TIMEOUT = 20.0
MAX_MESSAGE = 64 << 20  # the largest message taken from the engine (the channel's max_receive_message_length)
_WINDOW = 4 << 20  # our receive window per stream and for the connection
_DEFAULT_WINDOW = 65_535
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_FRAME = struct.Struct(">BHBBI")  # length (high byte, low 16 bits), type, flags, stream id
_PREFIX = struct.Struct(">BI")  # a gRPC message's compressed flag and length
_DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = range(10)
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
_CANCEL, _REFUSED, _ENHANCE_YOUR_CALM = 0x8, 0x7, 0xB
_INITIAL_WINDOW, _MAX_FRAME = 0x4, 0x5
# The HTTP/2 error codes a reset stream ends with, as gRPC's status (PROTOCOL-HTTP2, "Errors").
_RESET_CODES = {
    _REFUSED: grpc.StatusCode.UNAVAILABLE,
    _CANCEL: grpc.StatusCode.CANCELLED,
    _ENHANCE_YOUR_CALM: grpc.StatusCode.RESOURCE_EXHAUSTED,
    0xC: grpc.StatusCode.PERMISSION_DENIED,  # INADEQUATE_SECURITY
}
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
Metadata = tuple[tuple[str, str | bytes], ...]  # HTTP/2 metadata: a `-bin` key's value is bytes
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_RESERVED = {b":status", b"content-type", b"grpc-status", b"grpc-message", b"grpc-encoding", b"grpc-accept-encoding"}


def _frame(kind: int, flags: int, stream: int, payload: bytes | memoryview = b"") -> bytes:
    length = len(payload)
    return _FRAME.pack(length >> 16, length & 0xFFFF, kind, flags, stream) + payload


def _literal(value: bytes) -> bytes:
    """An HPACK string, not Huffman-coded."""
    n = len(value)
    if n < 0x7F:
        return bytes([n]) + value
    out, n = bytearray([0x7F]), n - 0x7F
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(out) + bytes([n]) + value


def _header_block(fields: list[tuple[bytes, bytes]]) -> bytes:
    """`fields` as HPACK literals without indexing (first byte 0): nothing of ours enters the peer's table."""
    return b"".join(b"\x00" + _literal(name) + _literal(value) for name, value in fields)


def _error(
    code: grpc.StatusCode, details: str, initial: Metadata = (), trailing: Metadata = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(*initial), grpc.aio.Metadata(*trailing), details, "")


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


def client_context(tls: ClientTLS) -> ssl.SSLContext:
    """TLS as a gRPC channel would do it (`gateway.tls.grpc_channel_credentials`): trust `ca` (else the system's
    roots), present `cert` and `key` when given, and offer HTTP/2 by ALPN. Read afresh for each connection, so
    rotated files are used by the next one."""
    context = ssl.create_default_context(cafile=tls.ca or None)  # PEM, text around the certificates skipped
    if tls.cert and tls.key:
        context.load_cert_chain(tls.cert, tls.key)
    context.set_alpn_protocols(["h2"])
    return context


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection to the engine: its frames in and out, its streams by id, flow control and keepalive."""

    def __init__(self, keepalive: float, calm: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self.keepalive = keepalive  # seconds of silence before a PING
        self._calm = calm  # told when the peer says we ping too often
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, WireStream[object, object]] = {}
        self.usable = True  # takes new streams: no GOAWAY, not lost
        self._next_id = 1
        self._buffer = bytearray()
        self._broken = False  # a protocol error was seen: the connection is closing
        self._block: tuple[int, int, bytearray] | None = None  # a header block waiting for its CONTINUATION frames
        self._decoder = hpack.Decoder()
        self.send_window = _DEFAULT_WINDOW  # connection-level, for our DATA
        self.initial_window = _DEFAULT_WINDOW  # a new stream's send window (the peer's SETTINGS_INITIAL_WINDOW_SIZE)
        self.max_frame = 16_384
        self._returned = 0  # bytes received on the connection, not yet returned with a WINDOW_UPDATE
        self._paused = False  # the transport's buffer is full
        self._changed = asyncio.Event()  # a window opened, the transport resumed, or the connection was lost
        self._heard = time.monotonic()
        self._ping_sent: float | None = None
        self._pings_without_data = 0
        self._timer: asyncio.TimerHandle | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self._handlers: dict[int, Callable[[int, int, bytes], None]] = {
            _DATA: self._data,
            _HEADERS: self._header_frame,
            _CONTINUATION: self._continuation,
            _RST: self._reset,
            _SETTINGS: self._settings,
            _PING: self._ping,
            _GOAWAY: self._goaway,
            _WINDOW_UPDATE: self._window_update,
            _PUSH: self._push,
        }

    # ------------------------------------------------------------------------------------------ the transport's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport by class
        settings = struct.pack(">HIHI", 0x2, 0, _INITIAL_WINDOW, _WINDOW)  # no push; our window
        grow = struct.pack(">I", _WINDOW - _DEFAULT_WINDOW)
        self.transport.write(_PREFACE + _frame(_SETTINGS, 0, 0, settings) + _frame(_WINDOW_UPDATE, 0, 0, grow))
        self._timer = self._loop.call_later(self.keepalive / 3, self._keepalive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self._timer is not None:
            self._timer.cancel()
        for stream in list(self.streams.values()):
            stream.ended(_error(grpc.StatusCode.UNAVAILABLE, "The connection to the engine was lost"))
        self.streams.clear()
        self._changed.set()  # writers waiting for a window find their stream ended
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._changed.set()

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        self._heard = time.monotonic()
        buffer = self._buffer
        buffer += data
        size, at = len(buffer), 0
        try:
            while size - at >= 9:
                high, low, kind, flags, stream = _FRAME.unpack_from(buffer, at)
                end = at + 9 + (high << 16 | low)
                if end > size:
                    break
                self._frame(kind, flags, stream & 0x7FFFFFFF, bytes(buffer[at + 9 : end]))
                at = end
        except (hpack.HPACKError, ValueError, IndexError, struct.error) as exc:
            log.warning("the engine's HTTP/2 connection broke: %r", exc)
            self._broken = True  # nothing more is read (a closing TLS transport may still deliver some)
            del buffer[:]
            self.close(0x1, abort=True)  # PROTOCOL_ERROR
            return
        del buffer[:at]

    # ------------------------------------------------------------------------------------------------ frames in

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and kind != _CONTINUATION:
            raise ValueError("a header block was interrupted")
        handle = self._handlers.get(kind)
        if handle is not None:  # PRIORITY and unknown kinds are ignored, as HTTP/2 says
            handle(flags, stream_id, payload)

    def _header_frame(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & _PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        if flags & _PRIORITY_FLAG:
            payload = payload[5:]
        self._block = (stream_id, flags, bytearray(payload))
        if flags & _END_HEADERS:
            self._headers()

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is None or self._block[0] != stream_id:
            raise ValueError("CONTINUATION without its HEADERS")
        self._block[2].extend(payload)
        if flags & _END_HEADERS:
            self._headers()

    def _reset(self, flags: int, stream_id: int, payload: bytes) -> None:
        if (stream := self.streams.get(stream_id)) is not None:
            code = int.from_bytes(payload[:4], "big")
            status = _RESET_CODES.get(code, grpc.StatusCode.INTERNAL)
            stream.ended(_error(status, f"The engine reset the stream (HTTP/2 error {code})"))

    def _ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & _ACK:
            self._ping_sent = None
        else:
            self._write(_frame(_PING, _ACK, 0, payload))

    def _push(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise ValueError("PUSH_PROMISE, with push disabled")

    def _window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        if not increment:
            raise ValueError("a WINDOW_UPDATE of 0")
        if stream_id == 0:
            self.send_window += increment
        elif (stream := self.streams.get(stream_id)) is not None:
            stream.send_window += increment
        self._changed.set()

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        flow = len(payload)  # flow control counts the padding too
        self._returned += flow
        if flags & _PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.unreturned += flow
            stream.received(payload)
            if flags & _END_STREAM:
                stream.ended(_error(grpc.StatusCode.INTERNAL, "The engine ended the stream without a status"))
        if self._returned >= _WINDOW // 2:  # the connection's and the streams' windows, returned together
            grow = struct.pack(">I", self._returned)
            frames = [_frame(_WINDOW_UPDATE, 0, 0, grow)]
            frames += [_frame(_WINDOW_UPDATE, 0, sid, s.returned()) for sid, s in self.streams.items() if s.unreturned]
            self._returned = 0
            self._write(b"".join(frames))

    def _headers(self) -> None:
        assert self._block is not None
        stream_id, flags, block = self._block
        self._block = None
        # Always decoded, the stream gone or not: the table is the connection's. `raw`: names and values are bytes.
        fields = cast(list[tuple[bytes, bytes]], self._decoder.decode(bytes(block), raw=True))
        if (stream := self.streams.get(stream_id)) is not None:
            try:
                stream.headers(fields, bool(flags & _END_STREAM))
            except ValueError as exc:  # a status that is no number, bad base64 in a -bin value
                stream.ended(_error(grpc.StatusCode.INTERNAL, f"The engine's headers could not be read: {exc}"))

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & _ACK:
            return
        for at in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, at)
            if key == _INITIAL_WINDOW:
                for stream in self.streams.values():
                    stream.send_window += value - self.initial_window
                self.initial_window = value
            elif key == _MAX_FRAME:
                if not 16_384 <= value < 1 << 24:
                    raise ValueError(f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.max_frame = value
        self._write(_frame(_SETTINGS, _ACK, 0))
        self._changed.set()

    def _goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        last, code = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(payload[4:8], "big")
        self.usable = False
        if code == _ENHANCE_YOUR_CALM and payload[8:] == b"too_many_pings":
            self._calm()  # as grpc's channel does: the next connection pings half as often
        for number, stream in list(self.streams.items()):
            if number > last:
                stream.ended(_error(grpc.StatusCode.UNAVAILABLE, f"The engine is going away (HTTP/2 error {code})"))
        if not self.streams:
            self.close()

    # ----------------------------------------------------------------------------------------------- frames out

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def open(self, stream: WireStream[object, object], headers: bytes) -> int:
        """Open `stream` with its header block: its id."""
        stream_id, self._next_id = self._next_id, self._next_id + 2
        self.streams[stream_id] = stream
        stream.send_window = self.initial_window
        self._pings_without_data = 0
        self._write(_frame(_HEADERS, _END_HEADERS, stream_id, headers))
        if stream_id >= 1 << 30:
            self.usable = False  # ids run out long after this; the next stream opens a new connection
        return stream_id

    async def send(self, stream: WireStream[object, object], data: bytes, end: bool) -> None:
        """`data` as DATA frames on `stream`, as its and the connection's windows allow; `end` closes our side."""
        self._pings_without_data = 0
        view = memoryview(data)
        while True:
            if stream.outcome is not None:
                ended = _error(grpc.StatusCode.INTERNAL, "The engine ended the stream before our side was written")
                raise stream.outcome if isinstance(stream.outcome, BaseException) else ended
            # A window may be negative (the peer lowered SETTINGS_INITIAL_WINDOW_SIZE): nothing goes until it is not.
            size = max(0, min(len(view), stream.send_window, self.send_window, self.max_frame))
            if self._paused or (size == 0 and view):
                self._changed.clear()
                await self._changed.wait()
                continue
            last = size == len(view)
            self._write(_frame(_DATA, _END_STREAM if end and last else 0, stream.id, view[:size]))
            stream.send_window -= size
            self.send_window -= size
            if last:
                return
            view = view[size:]

    def reset(self, stream_id: int) -> None:
        """Cancel a stream of ours."""
        self.streams.pop(stream_id, None)
        self._changed.set()  # its writer, if waiting for a window, finds it ended
        self._write(_frame(_RST, 0, stream_id, _CANCEL.to_bytes(4, "big")))
        self._close_if_done()

    def forget(self, stream_id: int) -> None:
        """A stream has ended."""
        self.streams.pop(stream_id, None)
        self._changed.set()  # its writer, if waiting for a window, finds it ended
        self._close_if_done()

    def _close_if_done(self) -> None:
        if not self.usable and not self.streams:
            self.close()

    def close(self, code: int = 0, *, abort: bool = False) -> None:
        """Say GOAWAY and close (`abort`: without waiting for what is still to be written)."""
        self.usable = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(_GOAWAY, 0, 0, struct.pack(">II", 0, code)))
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _keepalive(self) -> None:
        now = time.monotonic()
        if self._ping_sent is not None and self._heard > self._ping_sent:
            self._ping_sent = None  # anything heard since the PING shows the connection alive, its ACK or not
        if self._ping_sent is not None and now - self._ping_sent >= PING_TIMEOUT:
            log.warning("the engine did not answer a PING in %.0f s: its connection is closed", PING_TIMEOUT)
            self.usable = False
            if self.transport is not None:
                self.transport.abort()
            return
        quiet = now - self._heard >= self.keepalive
        if self.streams and self._ping_sent is None and quiet and self._pings_without_data < 2:
            self._ping_sent = now
            self._pings_without_data += 1
            self._write(_frame(_PING, 0, 0, bytes(8)))
        self._timer = self._loop.call_later(self.keepalive / 3, self._keepalive)


_OK = object()  # a stream's outcome when it ended with status OK


class WireStream(Generic[Req, Resp]):
    """One gRPC bidirectional stream, with what `exchange_client` uses of a `grpc.aio.StreamStreamCall`: `write`,
    `done_writing`, `cancel`, and its responses by `async for` (an `AioRpcError` for a status other than OK)."""

    def __init__(self, opener: WireOpener[Req, Resp]) -> None:
        self._serialize, self._deserialize = opener.serialize, opener.deserialize
        self._connection: _Connection | None = None
        self.id = 0
        self.send_window = 0
        self.unreturned = 0  # bytes received, not yet returned to the engine's window
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
                self.ended(_error(grpc.StatusCode.UNAVAILABLE, f"Could not connect to the engine: {exc!r}"))
                return
            if self.outcome is not None:  # cancelled while connecting
                return
            if connection.usable:
                self._connection = connection
                self.id = connection.open(self, opener.headers)  # type: ignore[arg-type]
                return
        self.ended(_error(grpc.StatusCode.UNAVAILABLE, "The engine's connections kept going away"))

    # --------------------------------------------------------------------------------------- what the caller uses

    async def write(self, request: Req) -> None:
        await self._started
        self._check()
        message = self._serialize(request)
        assert self._connection is not None
        await self._connection.send(self, _PREFIX.pack(0, len(message)) + message, False)  # type: ignore[arg-type]

    async def done_writing(self) -> None:
        await self._started
        self._check()
        assert self._connection is not None
        await self._connection.send(self, b"", True)  # type: ignore[arg-type]

    def cancel(self) -> bool:
        if self.outcome is not None:
            return False
        self.outcome = _error(grpc.StatusCode.CANCELLED, "Locally cancelled", self._initial)
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

    def received(self, data: bytes) -> None:
        """DATA for this stream: the whole messages in it (and before it) are parsed and queued."""
        buffer = self._buffer
        buffer += data
        at, size = 0, len(buffer)
        while size - at >= 5:
            compressed, length = _PREFIX.unpack_from(buffer, at)
            if compressed or length > MAX_MESSAGE:
                what = "compressed" if compressed else f"of {length} bytes, over the limit of {MAX_MESSAGE}"
                self.cancel()
                self.outcome = _error(
                    grpc.StatusCode.RESOURCE_EXHAUSTED if length > MAX_MESSAGE else grpc.StatusCode.INTERNAL,
                    f"A message {what}",
                )
                return
            if size - at - 5 < length:
                break
            try:
                response = self._deserialize(bytes(buffer[at + 5 : at + 5 + length]))
            except Exception as exc:  # not the message the method answers with
                self.cancel()
                self.outcome = exc  # raised to the reader as it is: `exchange_client` ends the exchange as broken
                return
            self._responses.append(response)
            at += 5 + length
        del buffer[:at]
        self._arrived.set()

    def returned(self) -> bytes:
        """The WINDOW_UPDATE increment that returns what was received."""
        increment, self.unreturned = self.unreturned, 0
        return increment.to_bytes(4, "big")

    def headers(self, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        """A header block: the response's headers, or its trailers (`end`), or both at once (trailers-only)."""
        metadata = _metadata(fields)
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
            self.ended(_error(code, f"The engine answered {what}", self._initial, metadata))
        elif (code := _CODES.get(int(grpc_status), grpc.StatusCode.UNKNOWN)) != grpc.StatusCode.OK:
            details = unquote(values.get(b"grpc-message", b"").decode("utf-8", "replace"))
            self.ended(_error(code, details, self._initial, metadata))
        elif self._buffer:
            self.ended(_error(grpc.StatusCode.INTERNAL, "The engine's stream ended inside a message", self._initial))
        else:
            self.ended(_OK)

    def ended(self, outcome: object) -> None:
        """The stream is over (`_OK`, or the error its reader gets once the responses before it are read)."""
        if self.outcome is None:
            self.outcome = outcome
            if self._connection is not None:
                self._connection.forget(self.id)
        self._arrived.set()


def _metadata(fields: list[tuple[bytes, bytes]]) -> Metadata:
    """The metadata in a header block: every field but the pseudo-headers and gRPC's own; `-bin` values decoded."""
    pairs: list[tuple[str, str | bytes]] = []
    for name, value in fields:
        if name.startswith(b":") or name in _RESERVED:
            continue
        key = name.decode("ascii", "replace")
        if key.endswith("-bin"):
            pairs.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
        else:
            pairs.append((key, value.decode("utf-8", "replace")))
    return tuple(pairs)


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
        self._current: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._all: set[_Connection] = set()
        self._closed = False
        self._keepalive = KEEPALIVE
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.headers = _header_block(
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

    async def connection(self) -> _Connection:
        """The connection a new stream opens on: the current one, or a new one."""
        current = self._current
        if current is not None and current.usable:
            return current
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise ConnectionError("the front door is closing")
        loop = asyncio.get_running_loop()
        tls = self._tls
        context = client_context(tls) if tls is not None else None
        server_name = (tls.server_name or self._host) if tls is not None else None
        async with asyncio.timeout(CONNECT_TIMEOUT):
            transport, connection = await loop.create_connection(
                lambda: _Connection(self._keepalive, self._calm),
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
