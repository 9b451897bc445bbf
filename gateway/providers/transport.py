"""The HTTP/1.1 client providers call their backends with: keep-alive connections pooled per origin under one limit,
a connect timeout and an idle-based read timeout, TLS, length-delimited, chunked and close-delimited bodies, gzip and
deflate, and flow control for answers read piece by piece.

It does what a provider call needs and no more: no cookies, no redirects (a 3xx is an answer like any other), no
proxies, one request at a time on a connection. That is why it exists: a call through aiohttp's `ClientSession` cost
≈ 65 µs of CPU, about as much as the rest of a one-process request's own work; a call here costs ≈ 30 µs
(docs/benchmarks.md, "Round 6: the upstream client"). The answer is read by gateway.providers.answer, host names are
looked up by gateway.providers.resolver.

    client = UpstreamClient(limit=100, connect_timeout=5, read_timeout=60, headers={"Authorization": "Bearer …"})
    async with client.post(url, body) as answer:
        if answer.status >= 400: ...
        data = await answer.read()
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from urllib.parse import quote, urlsplit

from gateway.config.fields import header_name_problem, header_value_problem
from gateway.providers.answer import Answer, ConnectFailed, Connection, Origin, TransportError
from gateway.providers.resolver import Resolver
from gateway.sweep import Sweep, tick_for

__all__ = ["InvalidHeader", "UpstreamClient", "multipart_form"]

_ACCEPT_ENCODING = "gzip, deflate"
_KEEPALIVE = 30.0  # an idle connection older than this is closed rather than reused (aiohttp's client kept 30 s too)
_URL_CACHE = 256  # a backend calls a handful of URLs; the cache is cleared if a caller makes up many more
_PATH_SAFE = "/:@!$&'()*+,;=-._~%?"  # what a URL's path and query keep as they are; anything else is percent-encoded


class InvalidHeader(TransportError, ValueError):
    """A request header that cannot be sent: a name that is not a token, or a line break or NUL in a value."""


def _header_lines(headers: Mapping[str, str]) -> bytes:
    """`headers` as the lines of a request head, each checked as config checks an operator's; the caller adds the
    final blank line."""
    for name, value in headers.items():
        if problem := header_name_problem(name):
            raise InvalidHeader(problem)
        if problem := header_value_problem(value):
            raise InvalidHeader(f"{name}: {problem}")
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")


class _Call:
    """`async with client.post(…) as answer`: the answer while the block runs, its connection released after."""

    __slots__ = ("_answer", "_body", "_client", "_headers", "_method", "_url")

    def __init__(
        self, client: UpstreamClient, method: bytes, url: str, body: bytes | None, headers: Mapping[str, str] | None
    ) -> None:
        self._client, self._method, self._url, self._body, self._headers = client, method, url, body, headers
        self._answer: Answer | None = None

    async def __aenter__(self) -> Answer:
        self._answer = await self._client.send(self._method, self._url, self._body, self._headers)
        return self._answer

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._answer is not None:
            self._client.release(self._answer)


class UpstreamClient:
    """Keep-alive connections to a backend's origins, at most `limit` in use at once (a call past it waits)."""

    def __init__(
        self,
        *,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        headers: Mapping[str, str],
        ssl_context: ssl.SSLContext | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._sweep = Sweep(tick_for(read_timeout))
        self._ssl = ssl_context
        self._resolver = resolver or Resolver()
        defaults = {"Accept-Encoding": _ACCEPT_ENCODING, **headers}
        self._defaults = {name.lower(): (name, value) for name, value in defaults.items()}
        self._default_lines = _header_lines(defaults)
        self._own_host = "host" in self._defaults
        self._loop = asyncio.get_running_loop()
        self._idle: dict[Origin, list[Connection]] = {}
        self._in_use = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._urls: dict[str, tuple[Origin, bytes]] = {}
        self._closed = False

    def post(self, url: str, data: bytes, headers: Mapping[str, str] | None = None) -> _Call:
        """POST `data` to `url`; use as `async with`."""
        return _Call(self, b"POST", url, data, headers)

    def get(self, url: str, headers: Mapping[str, str] | None = None) -> _Call:
        """GET `url`; use as `async with`."""
        return _Call(self, b"GET", url, None, headers)

    async def send(
        self, method: bytes, url: str, body: bytes | None, headers: Mapping[str, str] | None = None
    ) -> Answer:
        """Send a request and wait for its answer's headers; the caller must `release` the answer."""
        origin, head_start = self._target(method, url)
        lines, own_host = self._head_lines(headers)
        if own_host:  # a Host header of the caller's (or the operator's) replaces the URL's, as in aiohttp
            head_start = head_start[: head_start.index(b"\r\n") + 2]
        head = head_start + lines
        if body is not None:
            head += b"Content-Length: %d\r\n" % len(body)
        connection = await self._acquire(origin)
        answer = Answer(connection, self._read_timeout, self._sweep, self._loop)
        connection.answer = answer
        try:
            transport = connection.transport
            assert transport is not None
            if body and len(body) > 16384:  # a large body is not copied onto the head
                transport.writelines((head, b"\r\n", body))
            else:
                transport.write(head + b"\r\n" + body if body else head + b"\r\n")
            await answer.headers_received()
        except BaseException:
            answer.abandon()
            self.release(answer)
            raise
        return answer

    def release(self, answer: Answer) -> None:
        """The call is over: its connection goes back to the pool if the whole answer was read, else it is closed."""
        connection = answer.connection
        if connection.answer is not answer:
            return  # released already
        connection.answer = None
        if answer.reusable() and not self._closed:
            connection.idle_since = now = self._loop.time()
            idle = self._idle.setdefault(connection.origin, [])
            idle.append(connection)
            if idle[0].idle_since < now - _KEEPALIVE:
                _close_stale(idle, now - _KEEPALIVE)
        else:
            connection.close()
        self._free()

    async def close(self) -> None:
        """Close every idle connection; those in use are closed when their calls end."""
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    # Inside.

    def _target(self, method: bytes, url: str) -> tuple[Origin, bytes]:
        key = url if method == b"POST" else f"{method.decode()} {url}"
        known = self._urls.get(key)
        if known is not None:
            return known
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url[:80]!r}")  # config validates every base_url
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = quote(parts.path or "/", safe=_PATH_SAFE) + (
            "?" + quote(parts.query, safe=_PATH_SAFE) if parts.query else ""
        )
        host = parts.netloc.rpartition("@")[2]  # never credentials in the Host header
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        start = f"{method.decode()} {path} HTTP/1.1\r\nHost: {host}\r\n".encode("ascii")
        if len(self._urls) >= _URL_CACHE:
            self._urls.clear()
        self._urls[key] = known = ((parts.scheme, parts.hostname, port), start)
        return known

    def _head_lines(self, headers: Mapping[str, str] | None) -> tuple[bytes, bool]:
        """The header lines of a request (the client's own, a caller's winning whatever their case), and whether they
        name its Host."""
        if not headers:
            return self._default_lines, self._own_host
        merged = dict(self._defaults)
        for name, value in headers.items():
            merged[name.lower()] = (name, value)
        return _header_lines(dict(merged.values())), "host" in merged

    async def _acquire(self, origin: Origin) -> Connection:
        if self._in_use >= self._limit:
            waiter = self._loop.create_future()
            self._waiting.append(waiter)
            try:
                await waiter  # a slot is handed over: `_in_use` already counts it, so no newcomer can take it first
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._free()  # this one was handed a slot it will not take
                raise
        else:
            self._in_use += 1
        try:
            idle = self._idle.get(origin)
            now = self._loop.time()
            while idle:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < _KEEPALIVE:
                    return connection
                connection.close()
            return await self._connect(origin)
        except BaseException:
            self._free()
            raise

    async def _connect(self, origin: Origin) -> Connection:
        scheme, host, port = origin
        tls = scheme == "https"
        if tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        tls_context = self._ssl if tls else None
        failure: OSError | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                for address, address_port in await self._resolver.addresses(host, port):
                    try:
                        _, connection = await self._loop.create_connection(
                            lambda: Connection(origin),
                            address,
                            address_port,
                            ssl=tls_context,
                            server_hostname=host if tls else None,
                        )
                    except OSError as exc:  # the next address, if the name has another
                        failure = exc
                    else:
                        return connection
        except TimeoutError:
            raise TimeoutError(f"no connection to {host}:{port} in {self._connect_timeout:g} s") from None
        except OSError as exc:  # the name has no address
            failure = exc
        self._resolver.forget(host, port)
        assert failure is not None
        raise ConnectFailed(f"{host}:{port}: {failure.strerror or failure}") from failure

    def _free(self) -> None:
        """A slot is free: handed to the first call still waiting, else returned."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_use -= 1


def _close_stale(idle: list[Connection], horizon: float) -> None:
    """Close the idle connections that have waited since before `horizon` (the oldest come first)."""
    stale = 0
    while stale < len(idle) and idle[stale].idle_since < horizon:
        idle[stale].close()
        stale += 1
    del idle[:stale]


def multipart_form(fields: Sequence[tuple[str, str]], file: tuple[str, str, str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body of text `fields` and one `file` (field name, file name, media type, bytes), and the
    Content-Type naming its boundary."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'.encode())
        parts.append(value.encode() + b"\r\n")
    name, filename, media_type, data = file
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"; filename="{_quoted(filename)}"\r\n'
        f"Content-Type: {_quoted(media_type)}\r\n\r\n".encode()
    )
    parts += [data, f"\r\n--{boundary}--\r\n".encode()]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _quoted(value: str) -> str:
    # What browsers (and aiohttp) do with a quote or a line break in a form's names: percent-encode it.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
