"""What every HTTP provider adapter shares: one pooled upstream client per backend (gateway.providers.transport), the
one place where transport exceptions become `GatewayError`s, and an SSE reader.

Timeouts are a connect timeout and an idle-based read timeout (the longest wait for the next bytes), so a long stream
that keeps producing is never cut, and a stalled one is. A subclass supplies its headers and `_error`, which reads an
error answer into the provider's documented error.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Protocol

import orjson

from gateway.config import BackendConfig
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamTimeoutError,
)
from gateway.providers.answer import Answer, BrokenAnswer, TransportError
from gateway.providers.transport import InvalidHeader, UpstreamClient

_DATA = b"data:"
_MAX_ERROR_BODY = 64 * 1024  # of an error answer, what is read to find its message
_MAX_LINE = 8 * 1024 * 1024  # a single SSE line may carry a large tool-call argument chunk, but not without end
# What decoding a body of the wrong shape raises (orjson's errors are ValueErrors).
MALFORMED = (KeyError, TypeError, ValueError, AttributeError)


def json_body(value: object) -> bytes:
    """`value` as a JSON request body. orjson's bytes keep the buffer orjson wrote them into, at least 4 KiB and about
    ten times the length of a long text (a 100 KB prompt holds 1 MB), and a body lives as long as its call: minutes
    for a stream. So it is copied to its own size (a memcpy: ≈ 0.1 µs a KB)."""
    return bytes(memoryview(orjson.dumps(value)))


class HttpProvider:
    """The transport half of a provider adapter; the provider's JSON lives in the subclass."""

    def __init__(self, backend: BackendConfig, headers: Mapping[str, str]) -> None:
        self.backend = backend
        merged = {"Content-Type": "application/json", "Accept": "application/json", **headers}
        merged.update(backend.headers)  # the operator's extra headers win
        self._headers = merged
        self._session: UpstreamClient | None = None
        # The cheapest documented call that needs a valid key (listing models), for active health checks.
        self._probe_url = ""

    def _client(self) -> UpstreamClient:
        # Created on first use, inside the running event loop, then reused for every request.
        if self._session is None:
            backend = self.backend
            self._session = UpstreamClient(
                limit=backend.max_connections,
                connect_timeout=backend.connect_timeout,
                read_timeout=backend.read_timeout,
                headers=self._headers,
            )
        return self._session

    async def close(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
        with self._translate_errors():
            async with self._client().post(url, data=body, headers=headers) as resp:
                if resp.status >= 400:
                    raise await self._error(resp)
                return await resp.read()

    async def probe(self) -> None:
        """`GET` the provider's model list: raises a `GatewayError` when the backend does not answer it well."""
        with self._translate_errors():
            async with self._client().get(self._probe_url) as resp:
                if resp.status >= 400:
                    raise await self._error(resp)
                await resp.read()

    async def _error(self, resp: Answer) -> GatewayError:
        """The client-facing error for an upstream error answer (each provider reads its own error body)."""
        raise NotImplementedError

    def _malformed(self, exc: Exception) -> UpstreamError:
        """An answer of the wrong shape is the backend's failure, and is reported as one."""
        return UpstreamError(f"backend '{self.backend.name}' sent a malformed answer ({type(exc).__name__})")

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """The one place where the transport's and the OS's exceptions become `GatewayError`s."""
        name = self.backend.name
        try:
            yield
        except GatewayError:
            raise
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"backend '{name}' did not answer in time") from exc
        except BrokenAnswer as exc:
            raise UpstreamError(f"backend '{name}' broke off its answer") from exc
        except InvalidHeader as exc:  # a header the request itself carries (say, an Anthropic beta name)
            raise InvalidRequestError(f"cannot be sent to backend '{name}': {exc}") from exc
        except OSError as exc:
            raise UpstreamConnectionError(f"backend '{name}' could not be reached ({type(exc).__name__})") from exc
        except TransportError as exc:
            raise UpstreamError(f"backend '{name}' failed ({type(exc).__name__})") from exc


async def read_error_body(resp: Answer) -> Any:
    """The parsed JSON of an error answer (its first `_MAX_ERROR_BODY` bytes, under the read timeout), or None when it
    is not JSON: each provider makes its own error of it."""
    try:
        return orjson.loads(await resp.read(_MAX_ERROR_BODY))
    except (orjson.JSONDecodeError, TimeoutError, TransportError, OSError):
        return None


class Pieces(Protocol):
    """A body read as it arrives: an `Answer`, or (in bench.upstream_client) aiohttp's `StreamReader`."""

    async def readany(self) -> bytes:
        """What has arrived and was not taken yet, waiting for some if nothing has; b"" at the end."""
        ...


async def sse_data(resp: Pieces) -> AsyncIterator[bytes]:
    """The `data` of each server-sent event, as the spec joins multi-line data; comments and other fields skipped.

    An event is dispatched at its blank line; a last event the server did not terminate is discarded, as the SSE
    specification says. The body is read as it arrives and split into lines here: a `readline` each (two a chunk)
    cost more than the rest of a chunk's reading. A line longer than `_MAX_LINE` is a broken answer.
    """
    data: list[bytes] = []
    pending: list[bytes] = []  # the start of a line whose newline has not arrived
    pending_size = 0
    while True:
        if pending_size > _MAX_LINE:
            raise BrokenAnswer(f"an event stream line over {_MAX_LINE} bytes")
        block = await resp.readany()
        if block:
            if b"\n" not in block:
                pending.append(block)
                pending_size += len(block)
                continue
            if pending:
                pending.append(block)
                block = b"".join(pending)
            lines = block.split(b"\n")
            tail = lines.pop()
            pending = [tail] if tail else []
            pending_size = len(tail)
        elif pending:  # the end of the body: a last line without its newline is still a line
            lines, pending = [b"".join(pending)], []
        else:
            return
        for line in lines:
            if line.startswith(_DATA):
                data.append(line[5:].strip())
                continue
            if line.strip() or not data:
                continue  # comments (`: ping`), `event:` and `id:` fields, blank keep-alives
            yield data[0] if len(data) == 1 else b"\n".join(data)
            data = []
