"""The OpenAI API's endpoints beside chat, at the front door: `POST /v1/completions` (JSON and SSE),
`/v1/images/generations`, `/v1/audio/transcriptions` (a multipart upload), `/v1/audio/speech` (audio bytes, streamed
back), `/v1/moderations`, and `/v1/rerank` (also `/rerank` and `/v2/rerank`, where vLLM serves it).

Only translation, as `openai_http.py` does for chat: JSON (or the upload) → messages → the engine → JSON (or text,
or audio). Errors are OpenAI's error bodies (vLLM's rerank answers its errors in the same shape).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

import orjson
from aiohttp import BodyPartReader, web

from gateway.call import CallContext, Engine
from gateway.codec.endpoints_request import (
    decode_completion_params,
    decode_image_request,
    decode_moderation_request,
    decode_rerank_request,
    decode_speech_request,
    decode_transcription_form,
)
from gateway.codec.endpoints_response import (
    PLAIN_FORMATS,
    encode_images,
    encode_moderation,
    encode_rerank,
    encode_text_chunk,
    encode_text_completion,
    encode_transcription,
)
from gateway.errors import GatewayError, InvalidRequestError, RequestTimeoutError, RequestTooLargeError
from gateway.frontdoor.body import BODY_TIMEOUT
from gateway.frontdoor.handling import OVERHEAD_HEADER, guarded, json_response, overhead_ms, read_json, stream_events
from gateway.frontdoor.openai_http import error_response
from tollgate.gateway.v1 import endpoints_pb2 as ep

log = logging.getLogger("tollgate.frontdoor")

_DONE = b"data: [DONE]\n\n"
_FIELD_MAX = 64 * 1024  # bytes of one form field beside the file: a prompt, a language…


class _TextChunkEncoder:
    """OpenAI's stream framing for text completions: one `data:` event per chunk, then `data: [DONE]`."""

    __slots__ = ()

    def start(self, chunk: ep.StreamCompletionResponse) -> bytes:
        return self.feed(chunk)

    def feed(self, chunk: ep.StreamCompletionResponse) -> bytes:
        return b"data: " + orjson.dumps(encode_text_chunk(chunk)) + b"\n\n"

    def finish(self) -> bytes:
        return _DONE

    def fail(self, error: GatewayError, ctx: CallContext) -> bytes:
        return b"data: " + orjson.dumps(error.to_openai()) + b"\n\n" + _DONE


class EndpointsFrontDoor:
    """The routes of legacy completions, images, audio, moderations and rerank, over an `Engine`."""

    def __init__(self, engine: Engine, max_audio_bytes: int) -> None:
        self._engine = engine
        self._max_audio = max_audio_bytes

    def routes(self) -> list[web.RouteDef]:
        """The paths, with and without the `/v1` prefix (and rerank at vLLM's `/v2` too)."""
        table = [
            ("/completions", self.completions),
            ("/images/generations", self.images),
            ("/audio/transcriptions", self.transcriptions),
            ("/audio/speech", self.speech),
            ("/moderations", self.moderations),
            ("/rerank", self.rerank),
        ]
        routes = [
            web.post(prefix + path, guarded(handler, error_response))
            for path, handler in table
            for prefix in ("/v1", "")
        ]
        routes.append(web.post("/v2/rerank", guarded(self.rerank, error_response)))
        return routes

    async def completions(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/completions`, streaming or not."""
        params, stream = decode_completion_params(await read_json(request))
        if stream:
            chunks = self._engine.stream_completion(params, ctx)
            return await stream_events(request, chunks, ctx, _TextChunkEncoder())
        return json_response(encode_text_completion(await self._engine.create_completion(params, ctx)), ctx)

    async def images(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/images/generations`."""
        image_request = decode_image_request(await read_json(request))
        return json_response(encode_images(await self._engine.create_image(image_request, ctx)), ctx)

    async def moderations(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/moderations`."""
        moderation = decode_moderation_request(await read_json(request))
        return json_response(encode_moderation(await self._engine.create_moderation(moderation, ctx)), ctx)

    async def rerank(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/rerank`."""
        rerank = decode_rerank_request(await read_json(request))
        return json_response(encode_rerank(await self._engine.rerank(rerank, ctx)), ctx)

    async def transcriptions(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/audio/transcriptions`: a multipart upload; JSON, or plain text for text/srt/vtt."""
        try:
            async with asyncio.timeout(request.config_dict.get(BODY_TIMEOUT)):
                fields, file = await _read_form(request, self._max_audio)
        except TimeoutError:
            request.protocol.close()  # the rest of the upload may never come
            raise RequestTimeoutError("The request body took too long to arrive") from None
        result = await self._engine.create_transcription(decode_transcription_form(fields, file), ctx)
        if result.response_format in PLAIN_FORMATS:
            return _text_response(result.text, ctx)
        return json_response(encode_transcription(result), ctx)

    async def speech(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/audio/speech`: the audio bytes, written as they come, with the backend's content type."""
        speech = decode_speech_request(await read_json(request))
        return await _stream_audio(request, self._engine.stream_speech(speech, ctx), ctx)


def _text_response(text: str, ctx: CallContext) -> web.Response:
    """A plain-text answer with the headers `json_response` gives a JSON one."""
    reply = ctx.reply
    headers = {**reply.headers, "x-request-id": reply.request_id, OVERHEAD_HEADER: overhead_ms(ctx)}
    return web.Response(text=text, content_type="text/plain", headers=headers)


async def _read_form(request: web.Request, max_file: int) -> tuple[dict[str, list[str]], tuple[bytes, str, str] | None]:
    """The form fields and the file of a multipart upload, the file bounded by `max_file` bytes (a 413 beyond)."""
    if request.content_type != "multipart/form-data":
        raise InvalidRequestError(
            f"Content-Type: expected multipart/form-data with the audio file, got {request.content_type[:60]!r}",
            code="invalid_content_type",
        )
    fields: dict[str, list[str]] = {}
    file: tuple[bytes, str, str] | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.name:
                raise InvalidRequestError("body: a form part without a name", code="invalid_body")
            if part.name == "file":
                data = await _read_part(part, max_file, "file")
                file = (data, part.filename or "audio", part.headers.get("Content-Type", "application/octet-stream"))
            else:
                text = (await _read_part(part, _FIELD_MAX, part.name)).decode()
                fields.setdefault(part.name, []).append(text)
    except (ValueError, AssertionError, UnicodeDecodeError) as exc:  # aiohttp's multipart parser on a broken body
        raise InvalidRequestError(
            f"body: not a valid multipart/form-data upload ({exc!s:.100})", code="invalid_body"
        ) from None
    return fields, file


async def _read_part(part: BodyPartReader, limit: int, name: str) -> bytes:
    """A part's bytes, at most `limit` of them."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(f"{name}: larger than the limit of {limit} bytes", param=name)
        chunks.append(chunk)
    return b"".join(chunks)


async def _stream_audio(
    request: web.Request, pieces: AsyncGenerator[ep.StreamSpeechResponse, None], ctx: CallContext
) -> web.StreamResponse:
    """Write the audio as it comes. An error before the first piece is raised (an error body with its status);
    after it the status is sent and audio has no in-band error, so the connection is broken off before the
    chunked body's end: the client sees a truncated answer as a failure, never as a whole one."""
    async with aclosing(pieces) as audio:
        first = await anext(audio)
        reply = ctx.reply
        headers = {
            **reply.headers,
            "Content-Type": first.content_type or "application/octet-stream",
            "x-request-id": reply.request_id,
            OVERHEAD_HEADER: overhead_ms(ctx),
        }
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        try:
            await response.write(first.audio)
            async for piece in audio:
                await response.write(piece.audio)
        except ConnectionResetError:
            return response  # the client left; closing the pieces cancels the upstream call
        except Exception as exc:
            if not isinstance(exc, GatewayError):
                log.exception("unhandled error mid-stream", extra={"request_id": reply.request_id})
            if request.transport is not None:
                request.transport.close()  # no terminating chunk: the client knows the audio is incomplete
            return response
        await response.write_eof()
        return response
