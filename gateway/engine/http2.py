"""`Connection`: one HTTP/2 client connection carrying gRPC streams (RFC 9113, and gRPC's PROTOCOL-HTTP2), spoken
from the event loop: the frames in and out, flow control both ways, HPACK, PING, GOAWAY, RST_STREAM and keepalive.
What a stream is to gRPC (its messages, its status, its metadata) is `exchange_wire.WireStream`'s; this module ends
streams with the `grpc.aio.AioRpcError` a grpc.aio call would have raised where the connection is the cause (lost,
reset, going away).

Our receive windows are returned as data arrives (what bounds a stream is its user's own credit); a send window the
peer's new settings made negative holds data back until it is positive again; we send header fields as HPACK
literals, never indexed, and decode the peer's with the `hpack` package. Keepalive: a PING after `keepalive` seconds
of silence while streams are open, at most two without data of ours in between; anything heard after it shows the
connection alive; nothing within `ping_timeout` ends the connection. A protocol error ends the connection.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import Protocol, cast

import grpc
import hpack

log = logging.getLogger("tollgate.frontdoor")

_WINDOW = 4 << 20  # our receive window per stream and for the connection
_DEFAULT_WINDOW = 65_535
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_FRAME = struct.Struct(">BHBBI")  # length (high byte, low 16 bits), type, flags, stream id
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
Metadata = tuple[tuple[str, str | bytes], ...]  # HTTP/2 metadata: a `-bin` key's value is bytes


def frame(kind: int, flags: int, stream: int, payload: bytes | memoryview = b"") -> bytes:
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


def header_block(fields: list[tuple[bytes, bytes]]) -> bytes:
    """`fields` as HPACK literals without indexing (first byte 0): nothing of ours enters the peer's table."""
    return b"".join(b"\x00" + _literal(name) + _literal(value) for name, value in fields)


def rpc_error(
    code: grpc.StatusCode, details: str, initial: Metadata = (), trailing: Metadata = ()
) -> grpc.aio.AioRpcError:
    """The error a grpc.aio call ending so would raise."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(*initial), grpc.aio.Metadata(*trailing), details, "")


class Stream(Protocol):
    """What a connection needs of a stream on it."""

    id: int
    send_window: int  # what it may send (negative after the peer lowered the initial window)
    unreturned: int  # what it received, not yet returned to the peer's window
    outcome: object  # None while it runs

    def received(self, data: bytes) -> None:
        """DATA for it."""

    def headers(self, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        """A header block for it (`end`: it ends the stream)."""

    def ended(self, outcome: object) -> None:
        """It is over (an error, or its own sign of an OK end)."""

    def returned(self) -> bytes:
        """The WINDOW_UPDATE increment that returns what it received."""


class Connection(asyncio.Protocol):
    """One HTTP/2 connection to the engine: its frames in and out, its streams by id, flow control and keepalive."""

    def __init__(self, keepalive: float, ping_timeout: float, calm: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self.keepalive = keepalive  # seconds of silence before a PING
        self.ping_timeout = ping_timeout  # seconds a PING has to be answered
        self._calm = calm  # told when the peer says we ping too often
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
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
        self.transport.write(_PREFACE + frame(_SETTINGS, 0, 0, settings) + frame(_WINDOW_UPDATE, 0, 0, grow))
        self._timer = self._loop.call_later(self.keepalive / 3, self._keepalive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self._timer is not None:
            self._timer.cancel()
        for stream in list(self.streams.values()):
            stream.ended(rpc_error(grpc.StatusCode.UNAVAILABLE, "The connection to the engine was lost"))
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
                self.frame(kind, flags, stream & 0x7FFFFFFF, bytes(buffer[at + 9 : end]))
                at = end
        except (hpack.HPACKError, ValueError, IndexError, struct.error) as exc:
            log.warning("the engine's HTTP/2 connection broke: %r", exc)
            self._broken = True  # nothing more is read (a closing TLS transport may still deliver some)
            del buffer[:]
            self.close(0x1, abort=True)  # PROTOCOL_ERROR
            return
        del buffer[:at]

    # ------------------------------------------------------------------------------------------------ frames in

    def frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
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
            stream.ended(rpc_error(status, f"The engine reset the stream (HTTP/2 error {code})"))

    def _ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & _ACK:
            self._ping_sent = None
        else:
            self._write(frame(_PING, _ACK, 0, payload))

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
                stream.ended(rpc_error(grpc.StatusCode.INTERNAL, "The engine ended the stream without a status"))
        if self._returned >= _WINDOW // 2:  # the connection's and the streams' windows, returned together
            grow = struct.pack(">I", self._returned)
            frames = [frame(_WINDOW_UPDATE, 0, 0, grow)]
            frames += [frame(_WINDOW_UPDATE, 0, sid, s.returned()) for sid, s in self.streams.items() if s.unreturned]
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
                stream.ended(rpc_error(grpc.StatusCode.INTERNAL, f"The engine's headers could not be read: {exc}"))

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
        self._write(frame(_SETTINGS, _ACK, 0))
        self._changed.set()

    def _goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        last, code = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(payload[4:8], "big")
        self.usable = False
        if code == _ENHANCE_YOUR_CALM and payload[8:] == b"too_many_pings":
            self._calm()  # as grpc's channel does: the next connection pings half as often
        for number, stream in list(self.streams.items()):
            if number > last:
                stream.ended(rpc_error(grpc.StatusCode.UNAVAILABLE, f"The engine is going away (HTTP/2 error {code})"))
        if not self.streams:
            self.close()

    # ----------------------------------------------------------------------------------------------- frames out

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def open(self, stream: Stream, headers: bytes) -> int:
        """Open `stream` with its header block: its id."""
        stream_id, self._next_id = self._next_id, self._next_id + 2
        self.streams[stream_id] = stream
        stream.send_window = self.initial_window
        self._pings_without_data = 0
        self._write(frame(_HEADERS, _END_HEADERS, stream_id, headers))
        if stream_id >= 1 << 30:
            self.usable = False  # ids run out long after this; the next stream opens a new connection
        return stream_id

    async def send(self, stream: Stream, data: bytes, end: bool) -> None:
        """`data` as DATA frames on `stream`, as its and the connection's windows allow; `end` closes our side."""
        self._pings_without_data = 0
        view = memoryview(data)
        while True:
            if stream.outcome is not None:
                ended = rpc_error(grpc.StatusCode.INTERNAL, "The engine ended the stream before our side was written")
                raise stream.outcome if isinstance(stream.outcome, BaseException) else ended
            # A window may be negative (the peer lowered SETTINGS_INITIAL_WINDOW_SIZE): nothing goes until it is not.
            size = max(0, min(len(view), stream.send_window, self.send_window, self.max_frame))
            if self._paused or (size == 0 and view):
                self._changed.clear()
                await self._changed.wait()
                continue
            last = size == len(view)
            self._write(frame(_DATA, _END_STREAM if end and last else 0, stream.id, view[:size]))
            stream.send_window -= size
            self.send_window -= size
            if last:
                return
            view = view[size:]

    def reset(self, stream_id: int) -> None:
        """Cancel a stream of ours."""
        self.streams.pop(stream_id, None)
        self._changed.set()  # its writer, if waiting for a window, finds it ended
        self._write(frame(_RST, 0, stream_id, _CANCEL.to_bytes(4, "big")))
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
            self.transport.write(frame(_GOAWAY, 0, 0, struct.pack(">II", 0, code)))
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _keepalive(self) -> None:
        now = time.monotonic()
        if self._ping_sent is not None and self._heard > self._ping_sent:
            self._ping_sent = None  # anything heard since the PING shows the connection alive, its ACK or not
        if self._ping_sent is not None and now - self._ping_sent >= self.ping_timeout:
            log.warning("the engine did not answer a PING in %.0f s: its connection is closed", self.ping_timeout)
            self.usable = False
            if self.transport is not None:
                self.transport.abort()
            return
        quiet = now - self._heard >= self.keepalive
        if self.streams and self._ping_sent is None and quiet and self._pings_without_data < 2:
            self._ping_sent = now
            self._pings_without_data += 1
            self._write(frame(_PING, 0, 0, bytes(8)))
        self._timer = self._loop.call_later(self.keepalive / 3, self._keepalive)
