"""An upstream's answer as it arrives (gateway.providers.transport sends the request): the connection it comes on,
its status and headers parsed by llhttp (`httptools`, as in uvicorn), its body taken whole or piece by piece under an
idle-based read timeout, and the errors an answer can end in.
"""

from __future__ import annotations

import asyncio
import collections
import zlib

import httptools

from gateway.sweep import Sweep

__all__ = ["Answer", "BrokenAnswer", "ConnectFailed", "Headers", "MalformedAnswer", "Origin", "TransportError"]

PAUSE_AT = 1 << 20  # answer bytes read but not yet taken past which the socket is not read until the reader catches up
_MAX_HEADER_BYTES = 256 * 1024  # an answer's status line and headers together
_GZIP = frozenset((b"gzip", b"x-gzip"))

Origin = tuple[str, str, int]  # scheme, host, port


class TransportError(Exception):
    """What the transport raises besides `TimeoutError` and `ConnectionError`s."""


class ConnectFailed(ConnectionError):
    """No connection could be made: refused, unreachable, an unknown name, a failed TLS handshake."""


class MalformedAnswer(TransportError):
    """What came back is not an HTTP/1.1 answer."""


class BrokenAnswer(TransportError):
    """The answer broke off, or its body could not be read, after its headers had arrived."""


class Headers(dict[str, str]):
    """An answer's headers, looked up without regard to case; a repeated header's values joined with ", "."""

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class Connection(asyncio.Protocol):
    """One kept-alive TCP (or TLS) connection; the answer being read, if any, gets its bytes."""

    __slots__ = ("answer", "closed", "idle_since", "origin", "transport")

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.answer: Answer | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.answer is None:  # bytes nobody asked for: the connection is out of step
            self.close()
            return
        self.answer.feed(data)

    def eof_received(self) -> bool:
        self.closed = True  # the transport closes now; connection_lost comes a loop iteration later
        if self.answer is not None:
            self.answer.ended()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answer is not None:
            self.answer.lost(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Answer:
    """An upstream's answer: its status at once, its headers when asked, its body as it arrives.

    Read the body whole (`read`) or piece by piece (`readany`); pieces not yet taken are bounded: past `PAUSE_AT`
    bytes the socket is not read until the reader catches up. An answer waiting longer than the read timeout for its
    next bytes fails with `TimeoutError`.
    """

    __slots__ = (
        "_body",
        "_buffered",
        "_decoder",
        "_delimited",
        "_error",
        "_head_bytes",
        "_header_bytes",
        "_headers",
        "_headers_done",
        "_interim",
        "_last_bytes",
        "_loop",
        "_parser",
        "_paused",
        "_raw_headers",
        "_read_timeout",
        "_sweep",
        "_waiter",
        "_whole",
        "complete",
        "connection",
        "keep_alive",
        "status",
    )

    def __init__(
        self, connection: Connection, read_timeout: float, sweep: Sweep, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.status = 0
        self.connection = connection
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0  # of the header lines parsed: exact, whatever the packets
        self._head_bytes = 0  # of the packets fed before the headers were complete: bounds a line that never ends
        self._headers: Headers | None = None
        self._headers_done = False
        self._interim = False  # a 1xx answer before the real one
        self._delimited = False  # a Content-Length or chunked body: its end is known without the connection closing
        self._decoder: _Decoder | None = None
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._whole = False  # the reader wants the whole body: never pause for it
        self._paused = False
        self.complete = False
        self.keep_alive = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._read_timeout = read_timeout
        self._last_bytes = loop.time()
        self._sweep = sweep  # the read timeout: checked with every other answer's on one timer
        sweep.watch(self)

    # The connection's side.

    def feed(self, data: bytes) -> None:
        self._last_bytes = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(MalformedAnswer(f"a switch of protocols ({self.status}) that was not asked for"))
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, TransportError):  # raised by one of the callbacks below
                self._fail(exc.__context__)
            else:
                self._fail(
                    BrokenAnswer(f"unreadable body ({exc})") if self._headers_done else MalformedAnswer(str(exc))
                )
        if not self._headers_done:
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEADER_BYTES:
                self._fail(BrokenAnswer(f"headers over {_MAX_HEADER_BYTES} bytes"))

    def ended(self) -> None:
        """The server closed its side: the end of a close-delimited body, or an answer cut short."""
        if self.complete:
            return
        if self._headers_done and not self._delimited:
            try:
                self._end_decoding()
            except BrokenAnswer as exc:
                self._fail(exc)
                return
            self._finish()
        elif self._headers_done:
            self._fail(BrokenAnswer("the connection closed before the end of the body"))
        else:
            self._fail(ConnectionResetError("the connection closed before an answer"))

    def lost(self, exc: Exception | None) -> None:
        """The connection is gone, closed (`exc` None) or broken."""
        if exc is None:
            self.ended()
        elif self._headers_done:
            self._fail(BrokenAnswer(f"the connection broke during the body ({exc!r})"))
        else:
            self._fail(ConnectionResetError(f"the connection broke before an answer ({exc!r})"))

    def abandon(self) -> None:
        """The caller gave up on the answer: its connection cannot carry another."""
        self._fail(ConnectionResetError("the call was given up"))

    def reusable(self) -> bool:
        """Whether the answer was read to its end on a connection that stays open; stops the read timeout."""
        self._unwatch()
        self._resume()
        return self.complete and self.keep_alive and not self.connection.closed

    # httptools' callbacks.

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer nobody asked for: stop here, and never reuse the connection
            self.keep_alive = False
            self.connection.close()
            raise BrokenAnswer("bytes after the answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise BrokenAnswer(f"headers over {_MAX_HEADER_BYTES} bytes")
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # 103 Early Hints and the like: the answer is still to come
            self._interim = True
            self._raw_headers = []
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._headers_done = True
        for name, value in self._raw_headers:
            lowered = name.lower()
            if lowered == b"content-length":
                self._delimited = True
            elif lowered == b"transfer-encoding":  # chunked last: delimited; any other coding: read until the close
                self._delimited = value.rpartition(b",")[2].strip().lower() == b"chunked"
            elif lowered == b"content-encoding":
                self._decoder = _decoder(value)
        self._wake()

    def on_body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                raise BrokenAnswer(f"undecodable compressed body ({exc})") from exc
            if not data:
                return
        self._body.append(data)
        self._buffered += len(data)
        if self._buffered > PAUSE_AT and not self._whole and not self._paused:
            self._paused = True
            self._reading(False)
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._end_decoding()
        self._finish()

    def _end_decoding(self) -> None:
        decoder = self._decoder
        if decoder is None:
            return
        rest = decoder.flush()
        if rest:
            self._body.append(rest)
        if not decoder.eof and decoder.started:
            raise BrokenAnswer("a compressed body cut short")

    # The reader's side.

    async def headers_received(self) -> None:
        """Wait for the status line and headers."""
        while not self._headers_done:
            await self._wait()

    @property
    def headers(self) -> Headers:
        """The answer's headers (built on first use: most calls look at none)."""
        if self._headers is None:
            headers = Headers()
            for raw_name, raw_value in self._raw_headers:
                name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
                earlier = dict.get(headers, name)  # names are lower-case already
                headers[name] = value if earlier is None else f"{earlier}, {value}"
            self._headers = headers
        return self._headers

    async def readany(self, limit: int = 0) -> bytes:
        """What has arrived of the body and was not taken yet (at most `limit` bytes if given), waiting for some if
        nothing has; b"" at the end of the body."""
        while not self._body:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            await self._wait()
        body = self._body
        data = body.popleft() if len(body) == 1 else b"".join(body.popleft() for _ in range(len(body)))
        if limit and len(data) > limit:
            body.appendleft(data[limit:])
            data = data[:limit]
        self._buffered -= len(data)
        if self._buffered <= PAUSE_AT // 2:
            self._resume()
        return data

    async def read(self, limit: int = 0) -> bytes:
        """The whole body, or its first `limit` bytes if given (an error answer's, say; the rest is never read)."""
        if not limit:
            self._whole = True
            self._resume()
            while not self.complete:
                if self._error is not None:
                    raise self._error
                await self._wait()
            self._buffered = 0
            body, self._body = self._body, collections.deque()
            return body[0] if len(body) == 1 else b"".join(body)
        parts: list[bytes] = []
        size = 0
        while size < limit:
            piece = await self.readany(limit - size)
            if not piece:
                break
            parts.append(piece)
            size += len(piece)
        return b"".join(parts)

    # Inside.

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self) -> None:
        self.complete = True
        self._unwatch()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._error is not None or self.complete:
            return
        self._error = error
        self.keep_alive = False
        self._unwatch()
        self.connection.close()
        self._wake()

    def _unwatch(self) -> None:
        self._sweep.unwatch(self)

    def check(self, now: float) -> bool:
        """The read timeout (`Sweep`): fail an answer whose bytes stopped coming; whether to go on watching it."""
        if self.complete or self._error is not None:
            return False
        if self._paused:  # the reader is behind: the backend is not the one waiting
            self._last_bytes = now
        if now - self._last_bytes < self._read_timeout:
            return True
        self._fail(TimeoutError(f"no bytes for {self._read_timeout:g} s"))
        return False

    def _resume(self) -> None:
        """Read the socket again, if it was held back for the reader."""
        if self._paused:
            self._paused = False
            self._reading(True)

    def _reading(self, on: bool) -> None:
        transport = self.connection.transport
        if transport is None or self.connection.closed:
            return
        transport.resume_reading() if on else transport.pause_reading()


class _Decoder:
    """A body's decompressor: gzip, or "deflate", which servers send zlib-wrapped (as RFC 9110 says) or raw."""

    __slots__ = ("_inner", "_wbits", "started")

    def __init__(self, wbits: int | None) -> None:
        self._wbits = wbits  # None: deflate, zlib-wrapped or raw as its first byte says
        self._inner: zlib._Decompress | None = None
        self.started = False

    def decompress(self, data: bytes) -> bytes:
        if self._inner is None:
            if not data:
                return b""
            wbits = self._wbits
            if wbits is None:  # a zlib stream's first byte names the deflate method (8); aiohttp tells them apart so
                wbits = zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS
            self._inner = zlib.decompressobj(wbits)
            self.started = True
        return self._inner.decompress(data)

    def flush(self) -> bytes:
        return self._inner.flush() if self._inner is not None else b""

    @property
    def eof(self) -> bool:
        return self._inner is not None and self._inner.eof


def _decoder(encoding: bytes) -> _Decoder | None:
    name = encoding.strip().lower()
    if name in _GZIP:
        return _Decoder(16 + zlib.MAX_WBITS)
    if name == b"deflate":
        return _Decoder(None)
    if name == b"identity":
        return None
    raise BrokenAnswer(f"a body in an encoding that was not asked for ({encoding[:40]!r})")
