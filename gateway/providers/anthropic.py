"""The Anthropic provider: Claude through the Messages API (`POST /v1/messages`).

It shares every HTTP adapter's pooled session, idle-based timeouts, transport error translation and SSE reader
(gateway.providers.http), and owns only what differs: the headers (`x-api-key`, `anthropic-version`,
`anthropic-beta`), the request body (gateway.providers.anthropic_encode), and the answers, stream events and error
types (gateway.providers.anthropic_decode). Shapes: https://docs.anthropic.com/en/api/messages.

Backend options (`options:` in the config):
- `version`: the `anthropic-version` header, default 2023-06-01;
- `default_max_tokens`: the `max_tokens` sent when the client set none (Anthropic requires one), default 4096;
- `beta`: a list of `anthropic-beta` flags sent with every request (a client's own flags are added to them).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config import BackendConfig, ConfigError
from gateway.errors import GatewayError, InvalidRequestError, UpstreamError
from gateway.providers.answer import Answer
from gateway.providers.anthropic_decode import StreamTranslator, anthropic_error, decode_message
from gateway.providers.anthropic_encode import encode_messages_request
from gateway.providers.base import with_prefix
from gateway.providers.http import MALFORMED, HttpProvider, json_body, read_error_body, sse_data
from tollgate.gateway.v1 import gateway_pb2 as pb

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
# Request fields the count_tokens endpoint does not take (it counts input only).
_NOT_COUNTED = ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences", "metadata", "stream")


@dataclass(frozen=True, slots=True)
class AnthropicOptions:
    """The Anthropic backend's own settings."""

    version: str = ANTHROPIC_VERSION
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    beta: tuple[str, ...] = ()

    @staticmethod
    def parse(options: Mapping[str, Any], path: str) -> AnthropicOptions:
        """Validated options; a bad one is a `ConfigError` naming it."""
        unknown = sorted(set(options) - {"version", "default_max_tokens", "beta"})
        if unknown:
            raise ConfigError(f"{path}.options.{unknown[0]}: unknown option (known: beta, default_max_tokens, version)")
        version = options.get("version", ANTHROPIC_VERSION)
        if not isinstance(version, str) or not version:
            raise ConfigError(f"{path}.options.version: expected a non-empty string")
        max_tokens = options.get("default_max_tokens", DEFAULT_MAX_TOKENS)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"{path}.options.default_max_tokens: expected a positive integer")
        beta = options.get("beta", [])
        if isinstance(beta, str):
            beta = [beta]
        if not isinstance(beta, list) or not all(isinstance(b, str) and b for b in beta):
            raise ConfigError(f"{path}.options.beta: expected a list of feature names")
        return AnthropicOptions(version=version, default_max_tokens=max_tokens, beta=tuple(beta))


class AnthropicProvider(HttpProvider):
    """A backend that speaks Anthropic's Messages API."""

    def __init__(
        self, backend: BackendConfig, options: AnthropicOptions, clock: Callable[[], float] = time.time
    ) -> None:
        headers = {"anthropic-version": options.version}
        if backend.api_key is not None:
            headers["x-api-key"] = backend.api_key.reveal()
        super().__init__(backend, headers)
        self.options = options
        self._clock = clock  # Anthropic's answers carry no creation time; the chunks' `created` is when they came
        self._chat_url = f"{backend.base_url or ANTHROPIC_BASE_URL}/v1/messages"
        self._count_url = f"{self._chat_url}/count_tokens"
        self._probe_url = f"{backend.base_url or ANTHROPIC_BASE_URL}/v1/models?limit=1"

    def _request(self, model: str, params: pb.ChatCompletionParams, *, stream: bool) -> tuple[bytes, dict[str, str]]:
        body = encode_messages_request(params, model, stream=stream, default_max_tokens=self.options.default_max_tokens)
        beta = [*self.options.beta, *(b for b in params.anthropic_beta if b not in self.options.beta)]
        return json_body(body), ({"anthropic-beta": ",".join(beta)} if beta else {})

    async def complete(self, model: str, params: pb.ChatCompletionParams) -> pb.CreateChatCompletionResponse:
        """A non-streaming message, from the non-streaming Messages endpoint: one JSON body to decode rather than an
        event per token (see `OpenAICompatibleProvider.complete`)."""
        body, headers = self._request(model, params, stream=False)
        raw = await self._post(self._chat_url, body, headers)
        try:
            return decode_message(orjson.loads(raw), int(self._clock()))
        except MALFORMED as exc:
            raise self._malformed(exc) from exc

    def stream(
        self, model: str, params: pb.ChatCompletionParams
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """A streamed message, translated event by event; the last chunk carries the usage."""
        return self._stream(*self._request(model, params, stream=True))

    async def continue_stream(
        self, model: str, params: pb.ChatCompletionParams, prefix: str
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The rest of an answer that began with `prefix`: a trailing assistant message is a prefill, which Claude
        continues. Anthropic refuses one that ends in whitespace, so that is left off, and the continuation's own
        leading whitespace dropped (the caller has it already)."""
        trimmed = prefix.rstrip()
        continued = with_prefix(params, trimmed) if trimmed else params
        chunks = self._stream(*self._request(model, continued, stream=True))
        seam = len(prefix) > len(trimmed)
        async with aclosing(chunks):
            async for chunk in chunks:
                if seam and chunk.choices and chunk.choices[0].delta.content:
                    delta = chunk.choices[0].delta
                    delta.content, seam = delta.content.lstrip(), False
                    if not delta.content and not chunk.choices[0].finish_reason:
                        continue
                yield chunk

    async def _stream(
        self, body: bytes, headers: dict[str, str]
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        translator = StreamTranslator(int(self._clock()))
        name = self.backend.name
        with self._translate_errors():
            async with self._client().post(self._chat_url, data=body, headers=headers) as resp:
                if resp.status >= 400:
                    raise await self._error(resp)
                async for data in sse_data(resp):
                    # Each event's type is in its JSON too, so the `event:` line is not needed.
                    try:
                        chunk = translator.feed(orjson.loads(data), name)
                    except MALFORMED as exc:
                        raise self._malformed(exc) from exc
                    if chunk is not None:
                        yield chunk
                    if translator.done:
                        return
        raise UpstreamError(f"backend '{name}' closed the stream before it finished")

    async def count_tokens(self, model: str, params: pb.ChatCompletionParams) -> int:
        """Anthropic's own count of the request's input tokens (`POST /v1/messages/count_tokens`)."""
        body = encode_messages_request(params, model, stream=False, default_max_tokens=1)
        for key in _NOT_COUNTED:
            body.pop(key, None)
        _, headers = self._request(model, params, stream=False)
        raw = await self._post(self._count_url, json_body(body), headers)
        try:
            return int(orjson.loads(raw)["input_tokens"])
        except MALFORMED as exc:
            raise self._malformed(exc) from exc

    async def embed(self, model: str, request: pb.CreateEmbeddingsRequest) -> pb.CreateEmbeddingsResponse:
        """Anthropic has no embeddings API."""
        raise InvalidRequestError(
            f"backend '{self.backend.name}' (Anthropic) has no embeddings", code="unsupported_operation"
        )

    async def _error(self, resp: Answer) -> GatewayError:
        body = await read_error_body(resp)
        return anthropic_error(resp.status, body, resp.headers.get("Retry-After"), self.backend.name)


def build_anthropic(backend: BackendConfig, path: str) -> AnthropicProvider:
    """The registry's factory: options validated with their path."""
    return AnthropicProvider(backend, AnthropicOptions.parse(backend.options, path))
