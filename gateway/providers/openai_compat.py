"""The OpenAI-compatible provider: OpenAI itself, vLLM, Ollama's /v1, Groq, Mistral, Together, LM Studio…

One pooled aiohttp session per backend. Timeouts are a connect timeout and an idle-based read timeout (the longest
wait for the next bytes), so a long stream that keeps producing is never cut, and a stalled one is. Upstream errors
map to client-facing errors by HTTP status and documented error codes, never by message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import aiohttp
import orjson

from gateway.codec.openai_request import encode_chat_params, encode_embeddings_request
from gateway.codec.openai_response import decode_chunk, decode_completion, decode_embeddings
from gateway.config import BackendConfig
from gateway.errors import (
    GatewayError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamConnectionError,
    UpstreamCredentialsError,
    UpstreamError,
    UpstreamRequestError,
    UpstreamTimeoutError,
)
from tollgate.gateway.v1 import gateway_pb2 as pb

log = logging.getLogger("tollgate.providers")

OPENAI_BASE_URL = "https://api.openai.com/v1"
_MAX_ERROR_BODY = 64 * 1024
# A single SSE line may carry a large tool-call argument chunk; aiohttp's default line limit is 64 KiB.
_READ_BUFFER = 4 * 1024 * 1024
_DATA = b"data:"
# What decoding a body of the wrong shape raises (orjson's errors are ValueErrors).
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError)
_DONE = b"[DONE]"


class OpenAICompatibleProvider:
    """A backend that speaks OpenAI's chat completions and embeddings API."""

    def __init__(self, backend: BackendConfig) -> None:
        self.backend = backend
        base_url = backend.base_url or OPENAI_BASE_URL
        self._chat_url = f"{base_url}/chat/completions"
        self._embeddings_url = f"{base_url}/embeddings"
        self._models_url = f"{base_url}/models"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if backend.api_key is not None:
            headers["Authorization"] = f"Bearer {backend.api_key.reveal()}"
        headers.update(backend.headers)
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running event loop, then reused for every request.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.backend.max_connections, ttl_dns_cache=300, keepalive_timeout=30, enable_cleanup_closed=True
            )
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self.backend.connect_timeout, sock_read=self.backend.read_timeout
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=timeout,
                read_bufsize=_READ_BUFFER,
                max_line_size=_READ_BUFFER,
                max_field_size=_READ_BUFFER,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self) -> None:
        """`GET {base_url}/models`: the cheapest documented call, and one that needs a valid key."""
        with self._translate_errors():
            async with self._client().get(self._models_url) as resp:
                if resp.status >= 400:
                    raise await self._error(resp)
                await resp.read()

    async def complete(self, model: str, params: pb.ChatCompletionParams) -> pb.CreateChatCompletionResponse:
        """A non-streaming chat completion."""
        raw = await self._post(self._chat_url, orjson.dumps(encode_chat_params(params, model, stream=False)))
        try:
            return decode_completion(orjson.loads(raw))
        except _MALFORMED as exc:
            raise self._malformed(exc) from exc

    async def embed(self, model: str, request: pb.CreateEmbeddingsRequest) -> pb.CreateEmbeddingsResponse:
        """Embeddings."""
        raw = await self._post(self._embeddings_url, orjson.dumps(encode_embeddings_request(request, model)))
        try:
            return decode_embeddings(orjson.loads(raw))
        except _MALFORMED as exc:
            raise self._malformed(exc) from exc

    async def _post(self, url: str, body: bytes) -> bytes:
        with self._translate_errors():
            async with self._client().post(url, data=body) as resp:
                if resp.status >= 400:
                    raise await self._error(resp)
                return await resp.read()

    async def stream(
        self, model: str, params: pb.ChatCompletionParams
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """A streaming chat completion; usage is always requested so the last chunk carries it."""
        body = orjson.dumps(encode_chat_params(params, model, stream=True))
        # Which choices started and which finished, to tell a stream cut short from one that ended without [DONE].
        started: set[int] = set()
        finished: set[int] = set()
        with self._translate_errors():
            async with self._client().post(self._chat_url, data=body) as resp:
                if resp.status >= 400:
                    raise await self._error(resp)
                data: list[bytes] = []
                async for line in resp.content:
                    if line.startswith(_DATA):
                        data.append(line[5:].strip())
                        continue
                    if line.strip() or not data:
                        continue  # comments (`: ping`), `event:` and `id:` fields, blank keep-alives
                    payload = data[0] if len(data) == 1 else b"\n".join(data)
                    data = []
                    if payload == _DONE:
                        return
                    try:  # inline rather than a context manager: this runs for every chunk
                        raw = orjson.loads(payload)
                        if "error" in raw:
                            raise _in_band_error(raw["error"], self.backend.name)
                        chunk = decode_chunk(raw)
                    except _MALFORMED as exc:
                        raise self._malformed(exc) from exc
                    for choice in chunk.choices:
                        started.add(choice.index)
                        if choice.finish_reason:
                            finished.add(choice.index)
                    yield chunk
        # A server that closes without [DONE] is accepted only if it had finished every choice it started.
        if not started or started != finished:
            raise UpstreamError(f"backend '{self.backend.name}' closed the stream before it finished")

    def _malformed(self, exc: Exception) -> UpstreamError:
        """An answer of the wrong shape is the backend's failure, and is reported as one."""
        return UpstreamError(f"backend '{self.backend.name}' sent a malformed answer ({type(exc).__name__})")

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """The one place where aiohttp's and the OS's exceptions become `GatewayError`s."""
        name = self.backend.name
        try:
            yield
        except GatewayError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeoutError(f"backend '{name}' did not answer in time") from exc
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamError(f"backend '{name}' broke off its answer") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise UpstreamConnectionError(f"backend '{name}' could not be reached ({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"backend '{name}' failed ({type(exc).__name__})") from exc

    async def _error(self, resp: aiohttp.ClientResponse) -> GatewayError:
        try:
            raw = await asyncio.wait_for(resp.content.read(_MAX_ERROR_BODY), self.backend.read_timeout)
            body = orjson.loads(raw)
        except (orjson.JSONDecodeError, TimeoutError, aiohttp.ClientError):
            body = None
        return upstream_error(resp.status, body, resp.headers.get("Retry-After"), self.backend.name)


def _error_fields(body: Any) -> tuple[str, str | None, str | None]:
    """(message, code, param) from an OpenAI-style error body, or vLLM's / Ollama's flatter variants."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        return "", None, None
    message = error.get("message") or error.get("detail") or ""
    code, param = error.get("code"), error.get("param")
    return str(message), str(code) if isinstance(code, str) else None, str(param) if isinstance(param, str) else None


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare from model APIs and is ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def upstream_error(status: int, body: Any, retry_after: str | None, backend: str) -> GatewayError:
    """The client-facing error for an upstream HTTP error status."""
    message, code, param = _error_fields(body)
    detail = f"backend '{backend}' answered {status}" + (f": {message}" if message else "")
    if status == 429:
        return RateLimitError(detail, code=code, retry_after=parse_retry_after(retry_after))
    if status in (401, 403):
        # The provider refused the gateway's own key: a configuration problem that another target may not have.
        # Its message may quote part of that key, so the client is told only what happened.
        log.warning("backend %s refused the gateway's credentials (%s)", backend, status)
        return UpstreamCredentialsError(f"backend '{backend}' refused the gateway's credentials ({status})")
    if status in (408, 504):
        return UpstreamTimeoutError(detail)
    if status == 503:
        return ServiceUnavailableError(detail, retry_after=parse_retry_after(retry_after))
    if 400 <= status < 500:
        return UpstreamRequestError(message or detail, code=code, param=param, status=status)
    return UpstreamError(detail)


def _in_band_error(error: Any, backend: str) -> GatewayError:
    """An error event inside an upstream stream (vLLM and OpenAI send these after the first byte)."""
    status = error.get("code") if isinstance(error, dict) else None
    return upstream_error(status if isinstance(status, int) and status >= 400 else 502, {"error": error}, None, backend)
