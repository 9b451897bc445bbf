"""The OpenAI-compatible HTTP front door: OpenAI JSON and SSE in, `tollgate.gateway.v1` calls to the engine out.

It only translates. Every response carries `x-request-id` and `x-tollgate-overhead-ms` (the time the gateway itself
added: the whole handling time less the time spent waiting on providers). Every failure is an OpenAI-shaped error
body with the right status; an error after the first streamed byte is an in-band SSE error event followed by
`data: [DONE]`, never a silent truncation.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.call import CallContext, Engine
from gateway.codec.openai_decode import decode_chat_params, decode_embeddings_request
from gateway.codec.openai_response import (
    encode_chunk,
    encode_completion,
    encode_embeddings,
    encode_model,
    encode_models,
)
from gateway.errors import GatewayError, NotFoundError, retry_after_header
from gateway.frontdoor.handling import guarded, json_response, read_json, stream_events
from tollgate.gateway.v1 import gateway_pb2 as pb

_DONE = b"data: [DONE]\n\n"


def error_response(exc: GatewayError, ctx: CallContext) -> web.Response:
    """An OpenAI error body with the error's status, and Retry-After on every 503 and whenever the error knows one."""
    response = json_response(exc.to_openai(), ctx, exc.http_status)
    if (retry_after := retry_after_header(exc)) is not None:
        response.headers["Retry-After"] = retry_after
    return response


class _ChunkEncoder:
    """OpenAI's stream framing: one `data:` event per chunk, then `data: [DONE]` (after an error event too)."""

    __slots__ = ()

    def start(self, chunk: pb.StreamChatCompletionResponse) -> bytes:
        return self.feed(chunk)

    def feed(self, chunk: pb.StreamChatCompletionResponse) -> bytes:
        return b"data: " + orjson.dumps(encode_chunk(chunk)) + b"\n\n"

    def finish(self) -> bytes:
        return _DONE

    def fail(self, error: GatewayError, ctx: CallContext) -> bytes:
        return b"data: " + orjson.dumps(error.to_openai()) + b"\n\n" + _DONE


_ENCODER = _ChunkEncoder()  # stateless: one for every stream


class OpenAIFrontDoor:
    """The routes of the OpenAI API, over an `Engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def routes(self) -> list[web.RouteDef]:
        """The OpenAI paths, with and without the `/v1` prefix (clients differ in where they put it)."""
        table = [
            ("POST", "/chat/completions", self.chat_completions),
            ("POST", "/embeddings", self.embeddings),
            ("GET", "/models", self.models),
            ("GET", "/models/{model:.+}", self.model),  # ids may hold slashes: `openai/gpt-4o`
        ]
        return [
            web.route(method, prefix + path, guarded(handler, error_response))
            for method, path, handler in table
            for prefix in ("/v1", "")
        ]

    async def chat_completions(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/chat/completions`, streaming or not."""
        params, stream = decode_chat_params(await read_json(request))
        if stream:
            # Awaited here rather than in a helper of its own: every chunk's wake-up resumes each frame in between.
            return await stream_events(request, self._engine.stream_chat_completion(params, ctx), ctx, _ENCODER)
        completion = await self._engine.create_chat_completion(params, ctx)
        return json_response(encode_completion(completion), ctx)

    async def embeddings(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/embeddings`."""
        embeddings_request = decode_embeddings_request(await read_json(request))
        return json_response(encode_embeddings(await self._engine.create_embeddings(embeddings_request, ctx)), ctx)

    async def models(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`GET /v1/models`."""
        return json_response(encode_models(await self._engine.list_models(ctx)), ctx)

    async def model(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`GET /v1/models/{model}` (the SDK's `models.retrieve`): one of the caller's models, else OpenAI's 404.

        Read from the caller's model list, so a model the key may not use is as unknown as one that does not exist.
        """
        name = request.match_info["model"]
        found = next((m for m in (await self._engine.list_models(ctx)).models if m.id == name), None)
        if found is None:
            raise NotFoundError(f"The model '{name}' does not exist", param="model")
        return json_response(encode_model(found), ctx)
