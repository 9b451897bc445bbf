"""The endpoints beside chat on an OpenAI-compatible server: `/completions`, `/images/generations`,
`/audio/transcriptions` (a multipart upload), `/audio/speech` (audio bytes, streamed back), `/moderations` and
`/rerank` (vLLM's, the Cohere/Jina shape).

The JSON is `gateway.codec.endpoints_request` / `endpoints_response`; this module is the transport, on the
provider's pooled session, through its one place for transport errors and its error mapping. Where each endpoint
lives is the provider's `_url` (Azure puts the deployment in the path).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any, Protocol, TypeVar

import orjson

from gateway.codec.endpoints_request import (
    encode_completion_params,
    encode_image_request,
    encode_moderation_request,
    encode_rerank_request,
    encode_speech_request,
    transcription_form,
)
from gateway.codec.endpoints_response import (
    decode_images,
    decode_moderation,
    decode_rerank,
    decode_text_chunk,
    decode_text_completion,
    decode_transcription,
)
from gateway.errors import GatewayError, UpstreamError
from gateway.providers import capabilities as cap
from gateway.providers.http import MALFORMED, HttpProvider, json_body, sse_data
from gateway.providers.transport import multipart_form
from tollgate.gateway.v1 import endpoints_pb2 as ep

_DONE = b"[DONE]"
_AUDIO_PIECE = 64 * 1024  # the most audio one streamed message carries


class _Choice(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def finish_reason(self) -> object: ...


class _Chunk(Protocol):
    @property
    def choices(self) -> Iterable[_Choice]: ...


C = TypeVar("C", bound=_Chunk)  # a streamed chunk with choices: chat's or a legacy completion's


class OpenAIEndpoints(HttpProvider):
    """The endpoints beside chat, for a provider whose `_url(operation, model)` says where each lives."""

    endpoints = frozenset((cap.COMPLETIONS, cap.IMAGES, cap.TRANSCRIPTIONS, cap.SPEECH, cap.MODERATIONS, cap.RERANK))

    def _url(self, operation: str, model: str) -> str:
        """Where `operation` for `model` is sent (each provider's own)."""
        raise NotImplementedError

    def _in_band_error(self, error: Any) -> GatewayError:
        """The error an error event inside a stream stands for (each provider's own mapping)."""
        raise NotImplementedError

    async def _post_json(self, operation: str, model: str, body: dict[str, Any]) -> Any:
        raw = await self._post(self._url(operation, model), json_body(body))
        try:
            return orjson.loads(raw)
        except MALFORMED as exc:
            raise self._malformed(exc) from exc

    async def complete_text(self, model: str, params: ep.CompletionParams) -> ep.CreateCompletionResponse:
        """A whole legacy completion."""
        raw = await self._post_json(cap.COMPLETIONS, model, encode_completion_params(params, model, stream=False))
        try:
            return decode_text_completion(raw)
        except MALFORMED as exc:
            raise self._malformed(exc) from exc

    def stream_text(self, model: str, params: ep.CompletionParams) -> AsyncGenerator[ep.StreamCompletionResponse, None]:
        """A streamed legacy completion; usage is always asked for, so the last chunk carries it."""
        body = encode_completion_params(params, model, stream=True)
        return self._stream_choices(cap.COMPLETIONS, model, body, decode_text_chunk)

    async def _stream_choices(
        self, operation: str, model: str, request: dict[str, Any], decode: Callable[[Any], C]
    ) -> AsyncGenerator[C, None]:
        """An OpenAI stream of chunks with choices (chat's, legacy completions'), each decoded by `decode`."""
        body = json_body(request)
        del request  # a stream may last minutes: of its request it keeps the body it sent, nothing else
        # Which choices started and which finished, to tell a stream cut short from one that ended without [DONE].
        started: set[int] = set()
        finished: set[int] = set()
        with self._translate_errors():
            async with self._client().post(self._url(operation, model), data=body) as resp:
                if resp.status >= 400:
                    raise await self._error(resp)
                async for payload in sse_data(resp):
                    if payload == _DONE:
                        return
                    try:  # inline rather than a context manager: this runs for every chunk
                        raw = orjson.loads(payload)
                        if "error" in raw:
                            raise self._in_band_error(raw["error"])
                        chunk = decode(raw)
                        for choice in raw.get("choices") or ():  # the JSON's: cheaper to read than the message's
                            index = int(choice.get("index") or 0)
                            started.add(index)
                            if choice.get("finish_reason"):
                                finished.add(index)
                    except MALFORMED as exc:
                        raise self._malformed(exc) from exc
                    yield chunk
        # A server that closes without [DONE] is accepted only if it had finished every choice it started.
        if not started or started != finished:
            raise UpstreamError(f"backend '{self.backend.name}' closed the stream before it finished")

    async def generate_images(self, model: str, request: ep.CreateImageRequest) -> ep.CreateImageResponse:
        """Generated images, as url or b64_json as the request asked."""
        raw = await self._post_json(cap.IMAGES, model, encode_image_request(request, model))
        try:
            return decode_images(raw)
        except MALFORMED as exc:
            raise self._malformed(exc) from exc

    async def transcribe(self, model: str, request: ep.CreateTranscriptionRequest) -> ep.CreateTranscriptionResponse:
        """The text of an audio file, uploaded as multipart/form-data."""
        file = ("file", request.filename or "audio", request.content_type or "application/octet-stream", request.file)
        body, content_type = multipart_form(transcription_form(request, model), file)
        # The session's JSON content type must not stand: the upload's own names its boundary.
        raw = await self._post(
            self._url(cap.TRANSCRIPTIONS, model), body, {"Content-Type": content_type, "Accept": "*/*"}
        )
        try:
            return decode_transcription(raw, request.response_format)
        except (*MALFORMED, UnicodeDecodeError) as exc:
            raise self._malformed(exc) from exc

    async def speak(self, model: str, request: ep.StreamSpeechRequest) -> AsyncGenerator[ep.StreamSpeechResponse, None]:
        """The audio, piece by piece as the server sends it; the first piece names its media type."""
        body = json_body(encode_speech_request(request, model))
        with self._translate_errors():
            url = self._url(cap.SPEECH, model)
            async with self._client().post(url, data=body, headers={"Accept": "*/*"}) as resp:
                if resp.status >= 400:
                    raise await self._error(resp)
                content_type = resp.headers.get("Content-Type") or "application/octet-stream"
                sent = False
                while piece := await resp.readany(_AUDIO_PIECE):
                    yield ep.StreamSpeechResponse(content_type="" if sent else content_type, audio=piece)
                    sent = True
                if not sent:
                    raise UpstreamError(f"backend '{self.backend.name}' sent no audio")

    async def moderate(self, model: str, request: ep.CreateModerationRequest) -> ep.CreateModerationResponse:
        """Moderation results."""
        raw = await self._post_json(cap.MODERATIONS, model, encode_moderation_request(request, model))
        try:
            return decode_moderation(raw)
        except MALFORMED as exc:
            raise self._malformed(exc) from exc

    async def rerank(self, model: str, request: ep.RerankRequest) -> ep.RerankResponse:
        """Documents ordered by relevance (vLLM's `/rerank`)."""
        raw = await self._post_json(cap.RERANK, model, encode_rerank_request(request, model))
        try:
            return decode_rerank(raw)
        except MALFORMED as exc:
            raise self._malformed(exc) from exc
