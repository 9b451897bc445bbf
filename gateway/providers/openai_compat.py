"""The OpenAI-compatible provider: OpenAI itself, vLLM, Ollama's /v1, Groq, Mistral, Together, LM Studio…

The transport (a pooled session, idle-based timeouts, SSE) is `gateway.providers.http`. Upstream errors map to
client-facing errors by HTTP status and documented error codes, never by message text.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson

from gateway.codec.openai_encode import encode_chat_params, encode_embeddings_request
from gateway.codec.openai_response import decode_chunk, decode_completion, decode_embeddings
from gateway.config import BackendConfig
from gateway.errors import (
    GatewayError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamCredentialsError,
    UpstreamError,
    UpstreamRequestError,
    UpstreamTimeoutError,
)
from gateway.providers.answer import Answer
from gateway.providers.http import MALFORMED, json_body, read_error_body
from gateway.providers.openai_endpoints import OpenAIEndpoints
from tollgate.gateway.v1 import gateway_pb2 as pb

log = logging.getLogger("tollgate.providers")

OPENAI_BASE_URL = "https://api.openai.com/v1"


# Where each operation lives under the base URL (chat and embeddings; the rest are gateway.providers.openai_endpoints').
PATHS = {
    "chat": "chat/completions",
    "embeddings": "embeddings",
    "completions": "completions",
    "images": "images/generations",
    "transcriptions": "audio/transcriptions",
    "speech": "audio/speech",
    "moderations": "moderations",
    "rerank": "rerank",  # vLLM serves it at /rerank, /v1/rerank and /v2/rerank; the base URL says which
}


class OpenAICompatibleProvider(OpenAIEndpoints):
    """A backend that speaks OpenAI's chat completions and embeddings API, and the endpoints beside them."""

    def __init__(self, backend: BackendConfig, headers: Mapping[str, str] | None = None) -> None:
        if headers is None:
            headers = {"Authorization": f"Bearer {backend.api_key.reveal()}"} if backend.api_key is not None else {}
        super().__init__(backend, headers)
        base_url = backend.base_url or OPENAI_BASE_URL
        self._urls = {operation: f"{base_url}/{path}" for operation, path in PATHS.items()}
        self._probe_url = f"{base_url}/models"

    def _url(self, operation: str, model: str) -> str:
        """Where `operation` (a key of PATHS) for `model` is sent; Azure puts the model in the path."""
        return self._urls[operation]

    def _in_band_error(self, error: Any) -> GatewayError:
        return _in_band_error(error, self.backend.name)

    async def complete(self, model: str, params: pb.ChatCompletionParams) -> pb.CreateChatCompletionResponse:
        """A non-streaming chat completion, from the non-streaming endpoint.

        Not folded from `stream`: one JSON body costs about 3 µs to decode where a 20-token stream's events cost
        about 100 µs (and every further token 4 µs more), on the hot path of every non-streaming request.
        """
        body = json_body(encode_chat_params(params, model, stream=False))
        raw = await self._post(self._url("chat", model), body)
        try:
            return decode_completion(orjson.loads(raw))
        except MALFORMED as exc:
            raise self._malformed(exc) from exc

    async def embed(self, model: str, request: pb.CreateEmbeddingsRequest) -> pb.CreateEmbeddingsResponse:
        """Embeddings."""
        body = json_body(encode_embeddings_request(request, model))
        raw = await self._post(self._url("embeddings", model), body)
        try:
            return decode_embeddings(orjson.loads(raw))
        except MALFORMED as exc:
            raise self._malformed(exc) from exc

    def stream(
        self, model: str, params: pb.ChatCompletionParams
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """A streaming chat completion; usage is always requested so the last chunk carries it."""
        return self._stream(model, encode_chat_params(params, model, stream=True))

    def continue_stream(
        self, model: str, params: pb.ChatCompletionParams, prefix: str
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The rest of an answer that began with `prefix`, as the backend's `continuation` says: vLLM continues the
        last assistant message with `continue_final_message` (no new generation prompt); Mistral and DeepSeek take
        it with `"prefix": true`. Either way the stream carries only the new text."""
        body = encode_chat_params(params, model, stream=True)
        message: dict[str, Any] = {"role": "assistant", "content": prefix}
        if self.backend.continuation == "prefix":
            message["prefix"] = True
        else:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body["messages"].append(message)
        return self._stream(model, body)

    def _stream(self, model: str, request: dict[str, Any]) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        return self._stream_choices("chat", model, request, decode_chunk)

    async def _error(self, resp: Answer) -> GatewayError:
        body = await read_error_body(resp)
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
