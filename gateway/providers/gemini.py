"""The Google Gemini API provider (`provider: gemini`): generateContent, streamGenerateContent?alt=sse and
batchEmbedContents, authenticated with the `x-goog-api-key` header.

The translation lives in `gemini_request` (proto → Gemini JSON) and `gemini_response` (Gemini JSON → proto); this
module is the transport and the error mapping. Errors follow https://ai.google.dev/gemini-api/docs/troubleshooting:
the HTTP status decides the error's kind, the canonical `status` (INVALID_ARGUMENT, RESOURCE_EXHAUSTED…) becomes its
code, a `google.rpc.ErrorInfo` with reason API_KEY_INVALID is the gateway's own key being refused, and a
`google.rpc.RetryInfo` delay becomes Retry-After.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import orjson

from gateway.config import BackendConfig, ConfigError
from gateway.errors import GatewayError, UpstreamCredentialsError, UpstreamError
from gateway.providers import capabilities as cap
from gateway.providers.answer import Answer
from gateway.providers.base import collect
from gateway.providers.gemini_images import decode_imagen, encode_imagen_request
from gateway.providers.gemini_request import encode_embed_request, encode_generate_request, model_path
from gateway.providers.gemini_response import GeminiTranslator, decode_embeddings
from gateway.providers.http import MALFORMED, HttpProvider, json_body, read_error_body, sse_data
from gateway.providers.openai_compat import upstream_error
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import gateway_pb2 as pb

GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_KEY_REFUSED = frozenset(("API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED"))


class GeminiProvider(HttpProvider):
    """A backend that speaks the Gemini API; `clock` gives the `created` time Gemini does not send."""

    endpoints = frozenset((cap.IMAGES,))  # Imagen models (gateway.providers.gemini_images)

    def __init__(self, backend: BackendConfig, path: str = "backend", clock: Callable[[], float] = time.time) -> None:
        if backend.options:
            raise ConfigError(f"{path}.options.{sorted(backend.options)[0]}: unknown option for the gemini provider")
        if backend.api_key is None:
            raise ConfigError(f"{path}.api_key: required for provider 'gemini'")
        super().__init__(backend, {"x-goog-api-key": backend.api_key.reveal()})
        self._base_url = backend.base_url or GEMINI_BASE_URL
        self._probe_url = f"{self._base_url}/models?pageSize=1"
        self._clock = clock

    def _url(self, model: str, method: str) -> str:
        return f"{self._base_url}/{model_path(model)}:{method}"

    async def stream(
        self, model: str, params: pb.ChatCompletionParams
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """A streamed answer, translated one server-sent event at a time, then its usage."""
        body = json_body(encode_generate_request(params))
        translator = GeminiTranslator(model, int(self._clock()))
        with self._translate_errors():
            async with self._client().post(self._url(model, "streamGenerateContent?alt=sse"), data=body) as resp:
                if resp.status >= 400:
                    raise await self._error(resp)
                async for payload in sse_data(resp):
                    try:
                        raw = orjson.loads(payload)
                        if "error" in raw:
                            raise _gemini_error(raw, None, self.backend.name, 0)
                        chunk = translator.chunk(raw)
                    except MALFORMED as exc:
                        raise self._malformed(exc) from exc
                    if chunk.choices:
                        yield chunk
        # Gemini sends no end marker: an answer is whole only when every candidate it started has finished.
        if translator.unfinished():
            raise UpstreamError(f"backend '{self.backend.name}' closed the stream before it finished")
        if (usage := translator.usage_chunk()) is not None:
            yield usage

    async def complete(self, model: str, params: pb.ChatCompletionParams) -> pb.CreateChatCompletionResponse:
        """A whole answer from generateContent, folded through the same translation as a stream."""
        raw = await self._post(self._url(model, "generateContent"), json_body(encode_generate_request(params)))
        translator = GeminiTranslator(model, int(self._clock()))
        try:
            chunks = [translator.chunk(orjson.loads(raw))]
        except MALFORMED as exc:
            raise self._malformed(exc) from exc
        if translator.unfinished():
            raise UpstreamError(f"backend '{self.backend.name}' sent an answer with no candidates")
        if (usage := translator.usage_chunk()) is not None:
            chunks.append(usage)
        return await collect(_aiter(chunks))

    async def embed(self, model: str, request: pb.CreateEmbeddingsRequest) -> pb.CreateEmbeddingsResponse:
        """Every input in one batchEmbedContents call."""
        body = json_body(encode_embed_request(request, model))
        raw = await self._post(self._url(model, "batchEmbedContents"), body)
        try:
            out = decode_embeddings(orjson.loads(raw), model, request.encoding_format)
        except MALFORMED as exc:
            raise self._malformed(exc) from exc
        if len(out.data) != len(request.input):
            raise UpstreamError(f"backend '{self.backend.name}' answered {len(out.data)} embeddings for "
                                f"{len(request.input)} inputs")  # fmt: skip
        return out

    async def _error(self, resp: Answer) -> GatewayError:
        body = await read_error_body(resp)
        return _gemini_error(body, resp.headers.get("Retry-After"), self.backend.name, resp.status)

    async def generate_images(self, model: str, request: ep.CreateImageRequest) -> ep.CreateImageResponse:
        """Images from an Imagen model's `:predict`."""
        raw = await self._post(self._url(model, "predict"), json_body(encode_imagen_request(request)))
        try:
            out = decode_imagen(orjson.loads(raw), int(self._clock()))
        except MALFORMED as exc:
            raise self._malformed(exc) from exc
        if not out.data:
            raise UpstreamError(f"backend '{self.backend.name}' answered no images (all filtered, or none made)")
        return out


async def _aiter(chunks: list[pb.StreamChatCompletionResponse]) -> AsyncGenerator[pb.StreamChatCompletionResponse]:
    for chunk in chunks:
        yield chunk


def _gemini_error(body: Any, retry_after: str | None, backend: str, status: int) -> GatewayError:
    """The client-facing error for a Gemini error body (`{"error": {code, message, status, details}}`); `status` 0
    means the error came inside a stream, and the body's code is the status."""
    error = body.get("error") if isinstance(body, dict) else None
    if not status:  # an error inside a stream carries its status in the body
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) and 400 <= code < 600 else 502
    if not isinstance(error, dict):
        return upstream_error(status, body, retry_after, backend)
    canonical = error.get("status")
    details = [d for d in error.get("details") or () if isinstance(d, dict)]
    if any(d.get("@type") == _ERROR_INFO and d.get("reason") in _KEY_REFUSED for d in details):
        return UpstreamCredentialsError(f"backend '{backend}' refused the gateway's credentials ({status})")
    for detail in details:
        delay = detail.get("retryDelay")
        if detail.get("@type") == _RETRY_INFO and isinstance(delay, str) and delay.endswith("s"):
            retry_after = retry_after or delay[:-1]
    normal = {"message": error.get("message") or "", "code": canonical.lower() if isinstance(canonical, str) else None}
    return upstream_error(status, {"error": normal}, retry_after, backend)
