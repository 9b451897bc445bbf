"""HTTP/2 connections carrying gRPC streams (RFC 9113, and gRPC's PROTOCOL-HTTP2), spoken from the event loop:
the frames in and out, flow control both ways, HPACK, PING, GOAWAY, RST_STREAM; `Connection` is what both ends
share, `ClientConnection` a client's (it opens streams, and keeps the connection alive), and a server's is
`gateway.wire_server`'s. What a stream is to gRPC (its messages, its status, its metadata) is the stream's own
(`exchange_wire.WireStream` for a client, `wire_call.Call` for a server, both reading and writing gRPC's framing with
`gateway.grpc_messages`); this module ends streams with the `grpc.aio.AioRpcError` a grpc.aio call would have raised
where the connection is the cause (lost, reset, going away).

The connection's receive window is returned as data arrives; a stream's, as the stream says it took what it
received (`Stream.returned`); DATA past either ends the connection (FLOW_CONTROL_ERROR). A send window the peer's
new settings made negative holds data back until it is positive again; we send header fields as HPACK literals,
never indexed, and decode the peer's with the `hpack` package; what a connection writes in one turn of the loop goes
to the socket as one write. A peer may ask for answers (PING, SETTINGS) and reset streams only so fast
(`Allowance`), may send frames of `MAX_FRAME` bytes and header blocks of `MAX_HEADER_BLOCK`, and what we queue for
it while it reads nothing, DATA aside, is bounded (`MAX_HELD`): past any of these its connection ends
(ENHANCE_YOUR_CALM, FRAME_SIZE_ERROR), as it does at any other protocol error. Keepalive, either end: a PING after
`keepalive` seconds of silence while streams are open, at most two without data of ours in between; anything heard
after it shows the connection alive; nothing within `ping_timeout` ends the connection.
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

from gateway.grpc_messages import rpc_error

log = logging.getLogger("tollgate.http2")

WINDOW = 4 << 20  # our receive window per stream and for the connection
_DEFAULT_WINDOW = 65_535
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_FRAME = struct.Struct(">BHBBI")  # length (high byte, low 16 bits), type, flags, stream id
_DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = range(10)
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, REFUSED, CANCEL, ENHANCE_YOUR_CALM = 0x0, 0x1, 0x7, 0x8, 0xB
_FLOW_CONTROL_ERROR, _FRAME_SIZE_ERROR = 0x3, 0x6
_SETTING_INITIAL_WINDOW, _SETTING_MAX_FRAME = 0x4, 0x5
# The HTTP/2 error codes a reset stream ends with, as gRPC's status (PROTOCOL-HTTP2, "Errors").
_RESET_CODES = {
    REFUSED: grpc.StatusCode.UNAVAILABLE,
    CANCEL: grpc.StatusCode.CANCELLED,
    ENHANCE_YOUR_CALM: grpc.StatusCode.RESOURCE_EXHAUSTED,
    0xC: grpc.StatusCode.PERMISSION_DENIED,  # INADEQUATE_SECURITY
}
MAX_HEADER_BLOCK = 64 << 10  # the largest header block taken (grpc's own limit is 16 KiB of metadata)
MAX_FRAME = 16_384  # the largest frame taken (SETTINGS_MAX_FRAME_SIZE: we keep HTTP/2's default)
MAX_HELD = 1 << 20  # bytes of answers (PING and SETTINGS acks, headers) queued for a peer that reads nothing
# What a peer may ask of us at most (a burst, then so many a second): frames we must answer (SETTINGS, and PINGs
# that come with no DATA of ours since the last: a client measuring its window pings as our data arrives, as grpc's
# do) and streams it resets (each may have started work: HTTP/2's "rapid reset"; a client cancelling calls at its
# deadlines stays far below).
_ANSWERS = (100, 10.0)
_RESETS = (10_000, 1_000.0)
_DECODED = 64  # header blocks kept decoded, per connection


class PeerError(ValueError):
    """What the peer did ends the connection, with this HTTP/2 error code in our GOAWAY."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class Allowance:
    """A token bucket: `burst` at once, `rate` more a second. (Not `gateway.ratelimit.gcra`: a split front door, which
    speaks HTTP/2 to its engine, loads no policy.)"""

    def __init__(self, burst: int, rate: float) -> None:
        self._burst, self._rate = burst, rate
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def frame(kind: int, flags: int, stream: int, payload: bytes | memoryview = b"") -> bytes:
    length = len(payload)
    return _FRAME.pack(length >> 16, length & 0xFFFF, kind, flags, stream) + payload


def data_frame(stream_id: int, data: bytes | memoryview, end: bool = False) -> bytes:
    return frame(_DATA, _END_STREAM if end else 0, stream_id, data)


def headers_frames(stream_id: int, block: bytes, end: bool, max_frame: int) -> bytes:
    """A header block as HEADERS frames (`end`: it ends our side), in CONTINUATION frames past `max_frame`."""
    flags = _END_STREAM if end else 0
    if len(block) <= max_frame:
        return frame(_HEADERS, flags | _END_HEADERS, stream_id, block)
    pieces = [block[at : at + max_frame] for at in range(0, len(block), max_frame)]
    frames = [frame(_HEADERS, flags, stream_id, pieces[0])]
    frames += [frame(_CONTINUATION, 0, stream_id, piece) for piece in pieces[1:-1]]
    frames.append(frame(_CONTINUATION, _END_HEADERS, stream_id, pieces[-1]))
    return b"".join(frames)


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


def header_block(fields: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> bytes:
    """`fields` as HPACK literals without indexing (first byte 0): nothing of ours enters the peer's table."""
    return b"".join(b"\x00" + _literal(name) + _literal(value) for name, value in fields)


class Stream(Protocol):
    """What a connection needs of a stream on it."""

    id: int
    send_window: int  # what it may send (negative after the peer lowered the initial window)
    recv_window: int  # what the peer may still send on it (the connection keeps it)
    outcome: object  # None while it runs

    def received(self, data: bytes, flow: int, end: bool) -> None:
        """DATA for it (`flow`: what the frame counts against the windows; `end`: the peer's side is over)."""

    def headers(self, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        """A header block for it (`end`: it ends the peer's side)."""

    def ended(self, outcome: object) -> None:
        """It is over, reset or lost (an error, or its own sign of an OK end)."""

    def returned(self) -> int:
        """What it received and took, not yet returned to the peer's window (and now counted as returned)."""


class Connection(asyncio.Protocol):
    """One HTTP/2 connection: its frames in and out, its streams by id, flow control. A client's or a server's
    (`ClientConnection`, `wire_server.ServerConnection`), which say how streams begin and how the peer's GOAWAY ends
    them."""

    def __init__(self, settings: bytes, keepalive: float, ping_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self.keepalive = keepalive  # seconds of silence, with streams open, before a PING
        self.ping_timeout = ping_timeout  # seconds a PING has to be answered
        self._ping_sent: float | None = None
        self._pings_without_data = 0
        self._timer: asyncio.TimerHandle | None = None
        self._answers = Allowance(*_ANSWERS)
        self._resets = Allowance(*_RESETS)
        self._held = 0  # bytes other than DATA written while the transport is paused
        self._data_sent = False  # DATA of ours since the peer's last PING
        self._loop = loop
        self._settings_out = settings  # our SETTINGS payload
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.usable = True  # takes new streams: no GOAWAY, not lost
        self._buffer = bytearray()
        self._broken = False  # a protocol error was seen: the connection is closing
        self._block: tuple[int, int, bytearray] | None = None  # a header block waiting for its CONTINUATION frames
        self._decoder = hpack.Decoder()
        self._decoded: dict[bytes, list[tuple[bytes, bytes]]] = {}  # blocks that leave the table as it is, read
        self._table_state: tuple[int, int, int] = (0, 0, 0)  # the table they were read against
        self.send_window = _DEFAULT_WINDOW  # connection-level, for our DATA
        self.initial_window = _DEFAULT_WINDOW  # a new stream's send window (the peer's SETTINGS_INITIAL_WINDOW_SIZE)
        self.max_frame = 16_384
        self._returned = 0  # bytes received on the connection, not yet returned (the peer may send WINDOW less this)
        self._paused = False  # the transport's buffer is full
        self._pending: list[bytes] | None = None  # written in this turn of the loop, not yet flushed
        self._changed = asyncio.Event()  # a window opened, the transport resumed, or the connection was lost
        self._heard = time.monotonic()
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
        grow = struct.pack(">I", WINDOW - _DEFAULT_WINDOW)
        self.transport.write(frame(_SETTINGS, 0, 0, self._settings_out) + frame(_WINDOW_UPDATE, 0, 0, grow))
        self._timer = self._loop.call_later(self.keepalive / 3, self._keepalive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._pending = None
        if self._timer is not None:
            self._timer.cancel()
        for stream in list(self.streams.values()):
            stream.ended(rpc_error(grpc.StatusCode.UNAVAILABLE, "The connection was lost"))
        self.streams.clear()
        self._changed.set()  # writers waiting for a window find their stream ended
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._held = 0
        self._changed.set()

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        self._heard = time.monotonic()
        buffer = self._buffer
        buffer += data
        size, at = len(buffer), 0
        try:
            at = self._preface(buffer)
            if at < 0:
                return  # the preface is not all here yet
            while size - at >= 9:
                high, low, kind, flags, stream = _FRAME.unpack_from(buffer, at)
                length = high << 16 | low
                if length > MAX_FRAME:
                    raise PeerError(f"a frame of {length} bytes, over SETTINGS_MAX_FRAME_SIZE", _FRAME_SIZE_ERROR)
                end = at + 9 + length
                if end > size:
                    break
                self.frame(kind, flags, stream & 0x7FFFFFFF, bytes(buffer[at + 9 : end]))
                at = end
        except (hpack.HPACKError, ValueError, IndexError, struct.error) as exc:
            log.warning("an HTTP/2 connection broke: %r", exc)
            self._broken = True  # nothing more is read (a closing TLS transport may still deliver some)
            del buffer[:]
            self.close(exc.code if isinstance(exc, PeerError) else PROTOCOL_ERROR, abort=True)
            return
        del buffer[:at]

    def _preface(self, buffer: bytearray) -> int:
        """How much of `buffer` is the peer's connection preface, read (a server's reads the client's); -1 while it
        is not all there."""
        return 0

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
        if len(payload) > MAX_HEADER_BLOCK:
            raise PeerError("a header block over the limit", ENHANCE_YOUR_CALM)
        if flags & _END_HEADERS:
            self._headers()

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is None or self._block[0] != stream_id:
            raise ValueError("CONTINUATION without its HEADERS")
        self._block[2].extend(payload)
        if len(self._block[2]) > MAX_HEADER_BLOCK:
            raise PeerError("a header block over the limit", ENHANCE_YOUR_CALM)
        if flags & _END_HEADERS:
            self._headers()

    def _reset(self, flags: int, stream_id: int, payload: bytes) -> None:
        if (stream := self.streams.get(stream_id)) is not None:
            if not self._resets.take():
                raise PeerError("streams reset faster than allowed", ENHANCE_YOUR_CALM)
            code = int.from_bytes(payload[:4], "big")
            status = _RESET_CODES.get(code, grpc.StatusCode.INTERNAL)
            self.streams.pop(stream_id, None)
            stream.ended(rpc_error(status, f"The peer reset the stream (HTTP/2 error {code})"))
            self._changed.set()  # its writer, if waiting for a window, finds it ended

    def _ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 8:
            raise PeerError("a PING that is not 8 bytes", _FRAME_SIZE_ERROR)
        if flags & _ACK:
            self._ping_sent = None
            return
        if self._data_sent:
            self._data_sent = False
        elif not self._answers.take():
            raise PeerError("PINGs and SETTINGS faster than allowed", ENHANCE_YOUR_CALM)
        self._write(frame(_PING, _ACK, 0, payload))

    def _push(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise ValueError("PUSH_PROMISE, with push disabled")

    def _window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        if not increment:
            raise ValueError("a WINDOW_UPDATE of 0")
        if stream_id == 0:
            self.send_window += increment
            window = self.send_window
        elif (stream := self.streams.get(stream_id)) is not None:
            stream.send_window += increment
            window = stream.send_window
        else:
            return
        if window > 0x7FFFFFFF:
            raise PeerError("a window over 2^31-1", _FLOW_CONTROL_ERROR)
        self._changed.set()

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ValueError("DATA on stream 0")
        flow = len(payload)  # flow control counts the padding too
        self._returned += flow
        if self._returned > WINDOW:
            raise PeerError("DATA past the connection's window", _FLOW_CONTROL_ERROR)
        if flags & _PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.recv_window -= flow
            if stream.recv_window < 0:
                raise PeerError("DATA past a stream's window", _FLOW_CONTROL_ERROR)
            stream.received(payload, flow, bool(flags & _END_STREAM))
        if self._returned >= WINDOW // 2:  # the connection's window, and what the streams took of theirs
            grow = struct.pack(">I", self._returned)
            frames = [frame(_WINDOW_UPDATE, 0, 0, grow)]
            for sid, s in self.streams.items():
                if increment := s.returned():
                    s.recv_window += increment
                    frames.append(frame(_WINDOW_UPDATE, 0, sid, increment.to_bytes(4, "big")))
            self._returned = 0
            self._write(b"".join(frames))

    def _headers(self) -> None:
        assert self._block is not None
        stream_id, flags, block = self._block
        self._block = None
        fields = self._decode(bytes(block))
        end = bool(flags & _END_STREAM)
        if (stream := self.streams.get(stream_id)) is None:
            self._new_stream(stream_id, fields, end)
            return
        try:
            stream.headers(fields, end)
        except ValueError as exc:  # a status that is no number, bad base64 in a -bin value
            stream.ended(rpc_error(grpc.StatusCode.INTERNAL, f"The peer's headers could not be read: {exc}"))

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """A header block's fields. Always decoded, the stream gone or not: the table is the connection's (`raw`:
        names and values as bytes). A client sends the same block call after call once its headers are in the
        table, and decoding one costs tens of µs: a block that left the table as it was is kept, and taken again
        while the table stays so (the newest entry, the count and the size say it did)."""
        table = self._decoder.header_table
        entries = table.dynamic_entries
        state = (len(entries), id(entries[0]) if entries else 0, table.maxsize)
        if state == self._table_state and (fields := self._decoded.get(block)) is not None:
            return fields
        fields = cast(list[tuple[bytes, bytes]], self._decoder.decode(block, raw=True))
        after = (len(entries), id(entries[0]) if entries else 0, table.maxsize)
        if after != state or after != self._table_state or len(self._decoded) >= _DECODED:
            self._decoded.clear()  # what was kept was read against another table
            self._table_state = after
        if after == state:
            self._decoded[block] = fields
        return fields

    def _new_stream(self, stream_id: int, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        """HEADERS for a stream we do not have: a client ignores them (a stream it ended), a server may open one."""

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & _ACK:
            return
        if not self._answers.take():
            raise PeerError("PINGs and SETTINGS faster than allowed", ENHANCE_YOUR_CALM)
        for at in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, at)
            if key == _SETTING_INITIAL_WINDOW:
                if value > 0x7FFFFFFF:
                    raise PeerError("SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1", _FLOW_CONTROL_ERROR)
                for stream in self.streams.values():
                    stream.send_window += value - self.initial_window
                self.initial_window = value
            elif key == _SETTING_MAX_FRAME:
                if not 16_384 <= value < 1 << 24:
                    raise ValueError(f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.max_frame = value
        self._write(frame(_SETTINGS, _ACK, 0))
        self._changed.set()

    def _goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        self.usable = False
        if not self.streams:
            self.close()

    # ----------------------------------------------------------------------------------------------- frames out

    def _write(self, data: bytes, *, answer: bool = True) -> None:
        """Queue `data`: what is written in one turn of the loop goes to the socket as one write, at its end. What is
        not DATA (`answer`) and is written while the peer reads nothing is counted: past `MAX_HELD`, the connection
        is closed (a peer that asks and never reads must not fill our memory)."""
        if answer and self._paused and not self._broken:
            self._held += len(data)
            if self._held > MAX_HELD:
                log.warning("an HTTP/2 peer reads nothing of what it asks for: its connection is closed")
                self._broken = True
                self.close(ENHANCE_YOUR_CALM, abort=True)
                return
        if self._pending is not None:
            self._pending.append(data)
        elif self.transport is not None and not self.transport.is_closing():
            self._pending = [data]
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued now."""
        pending, self._pending = self._pending, None
        if pending and self.transport is not None and not self.transport.is_closing():
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def send_headers(self, stream_id: int, block: bytes, end: bool) -> None:
        """A header block on a stream (`end`: it ends our side)."""
        self._write(headers_frames(stream_id, block, end, self.max_frame))

    def send_now(
        self, stream: Stream, data: bytes, end: bool = False, headers: bytes = b"", trailers: bytes = b""
    ) -> bool:
        """The header block `headers` (if any), `data` as one DATA frame (`end`: it closes our side) and the header
        block `trailers` closing our side (if any), in one write, if the windows take `data` now; False, nothing
        written, if they do not."""
        size = len(data)
        if self._paused or not 0 < size <= min(stream.send_window, self.send_window, self.max_frame):
            return False
        self._sending()
        head = headers_frames(stream.id, headers, False, self.max_frame) if headers else b""
        tail = headers_frames(stream.id, trailers, True, self.max_frame) if trailers else b""
        self._write(head + data_frame(stream.id, data, end) + tail, answer=False)
        stream.send_window -= size
        self.send_window -= size
        return True

    async def send(self, stream: Stream, data: bytes, end: bool, headers: bytes = b"") -> None:
        """`data` as DATA frames on `stream`, as its and the connection's windows allow; `end` closes our side;
        `headers`, a header block to send first (in the same write as the first DATA when it can go at once)."""
        if self.send_now(stream, data, end, headers):
            return
        self._sending()
        if headers:
            self.send_headers(stream.id, headers, False)
        view = memoryview(data)
        while True:
            if stream.outcome is not None:
                ended = rpc_error(grpc.StatusCode.INTERNAL, "The stream ended before our side was written")
                raise stream.outcome if isinstance(stream.outcome, BaseException) else ended
            # A window may be negative (the peer lowered SETTINGS_INITIAL_WINDOW_SIZE): nothing goes until it is not.
            size = max(0, min(len(view), stream.send_window, self.send_window, self.max_frame))
            if self._paused or (size == 0 and view):
                self._changed.clear()
                await self._changed.wait()
                continue
            last = size == len(view)
            self._write(data_frame(stream.id, view[:size], end and last), answer=False)
            stream.send_window -= size
            self.send_window -= size
            if last:
                return
            view = view[size:]

    def _sending(self) -> None:
        """We are about to send DATA (keepalive and the peer's PINGs count it)."""
        self._pings_without_data = 0
        self._data_sent = True

    def give_back(self, stream: Stream) -> None:
        """Return to the peer now what `stream` took of its window (its reader caught up with a full window)."""
        if stream.id in self.streams and (increment := stream.returned()):
            stream.recv_window += increment
            self._write(frame(_WINDOW_UPDATE, 0, stream.id, increment.to_bytes(4, "big")))

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        """End a stream with RST_STREAM `code`."""
        self.streams.pop(stream_id, None)
        self._changed.set()  # its writer, if waiting for a window, finds it ended
        self._write(frame(_RST, 0, stream_id, code.to_bytes(4, "big")))
        self._close_if_done()

    def forget(self, stream_id: int) -> None:
        """A stream has ended."""
        self.streams.pop(stream_id, None)
        self._changed.set()  # its writer, if waiting for a window, finds it ended
        self._close_if_done()

    def _close_if_done(self) -> None:
        if not self.usable and not self.streams:
            self.close()

    def write_goaway(self, last: int, code: int = NO_ERROR) -> None:
        """Say GOAWAY: no stream of the peer's after `last` is taken."""
        self._write(frame(_GOAWAY, 0, 0, struct.pack(">II", last, code)))

    def close(self, code: int = NO_ERROR, *, abort: bool = False, last: int = 0) -> None:
        """Say GOAWAY (`last`: the last stream of the peer's we took) and close (`abort`: without waiting for what is
        still to be written)."""
        self.usable = False
        if self.transport is not None and not self.transport.is_closing():
            self.write_goaway(last, code)
            self.flush()
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _keepalive(self) -> None:
        now = time.monotonic()
        if self._ping_sent is not None and self._heard > self._ping_sent:
            self._ping_sent = None  # anything heard since the PING shows the connection alive, its ACK or not
        if self._ping_sent is not None and now - self._ping_sent >= self.ping_timeout:
            log.warning("a PING went unanswered for %.0f s: the connection is closed", self.ping_timeout)
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


class ClientConnection(Connection):
    """A client's connection: it opens streams, ends those the peer's GOAWAY will not take, and keeps itself alive
    (see the module docstring)."""

    def __init__(self, keepalive: float, ping_timeout: float, calm: Callable[[], None]) -> None:
        super().__init__(
            struct.pack(">HIHI", 0x2, 0, _SETTING_INITIAL_WINDOW, WINDOW), keepalive, ping_timeout
        )  # no push
        self._calm = calm  # told when the peer says we ping too often
        self._next_id = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(PREFACE)
        super().connection_made(transport)

    def _goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        last, code = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(payload[4:8], "big")
        if code == ENHANCE_YOUR_CALM and payload[8:] == b"too_many_pings":
            self._calm()  # as grpc's channel does: the next connection pings half as often
        for number, stream in list(self.streams.items()):
            if number > last:
                stream.ended(rpc_error(grpc.StatusCode.UNAVAILABLE, f"The peer is going away (HTTP/2 error {code})"))
        super()._goaway(flags, stream_id, payload)

    def open(self, stream: Stream, headers: bytes) -> int:
        """Open `stream` with its header block: its id."""
        stream_id, self._next_id = self._next_id, self._next_id + 2
        self.streams[stream_id] = stream
        stream.send_window = self.initial_window
        stream.recv_window = WINDOW
        self._pings_without_data = 0
        self.send_headers(stream_id, headers, False)
        if stream_id >= 1 << 30:
            self.usable = False  # ids run out long after this; the next stream opens a new connection
        return stream_id
