"""The Anthropic-compatible HTTP front door: `POST /v1/messages` (JSON and SSE) and `/v1/messages/count_tokens`.

Like the OpenAI front door it only translates: Messages API JSON in, `tollgate.gateway.v1` calls to the same engine
out, so auth, limits, routing and usage apply unchanged. Keys come from `x-api-key` or `authorization: Bearer`.
Every failure is an Anthropic-shaped error (`{"type": "error", "error": {"type", "message"}}`) with the right
status; an error after the first streamed byte is the API's in-band `event: error`.
"""

from __future__ import annotations

from aiohttp import web

from gateway.call import CallContext, Engine
from gateway.codec.anthropic_request import decode_messages_request
from gateway.codec.anthropic_response import MessageStreamEncoder, encode_message, error_body, error_event
from gateway.errors import GatewayError, retry_after_header
from gateway.frontdoor.handling import guarded, json_response, read_json, stream_events
from tollgate.gateway.v1 import gateway_pb2 as pb


def anthropic_error_response(exc: GatewayError, ctx: CallContext) -> web.Response:
    """An Anthropic error body with the error's status; Retry-After on every 503 and whenever the error knows one."""
    response = json_response(error_body(exc, ctx.reply.request_id), ctx, exc.http_status)
    response.headers["request-id"] = ctx.reply.request_id
    if (retry_after := retry_after_header(exc)) is not None:
        response.headers["Retry-After"] = retry_after
    return response


class AnthropicFrontDoor:
    """The routes of the Anthropic Messages API, over an `Engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def routes(self) -> list[web.RouteDef]:
        """The Messages API paths (the SDK puts `/v1` in them)."""
        return [
            web.post("/v1/messages", guarded(self.messages, anthropic_error_response)),
            web.post("/v1/messages/count_tokens", guarded(self.count_tokens, anthropic_error_response)),
        ]

    async def messages(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/messages`, streaming or not."""
        params, stream = decode_messages_request(await read_json(request), request.headers.get("anthropic-beta", ""))
        if stream:
            return await self._stream(request, params, ctx)
        completion = await self._engine.create_chat_completion(params, ctx)
        response = json_response(encode_message(completion), ctx)
        response.headers["request-id"] = ctx.reply.request_id
        return response

    async def count_tokens(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/messages/count_tokens`: the backend's own count (see docs/anthropic-api.md)."""
        body = await read_json(request)
        if isinstance(body, dict) and "max_tokens" not in body:
            body = {**body, "max_tokens": 1}  # count_tokens takes no max_tokens; the codec requires one
        params, _ = decode_messages_request(body, request.headers.get("anthropic-beta", ""))
        counted = await self._engine.count_tokens(params, ctx)
        return json_response({"input_tokens": counted.input_tokens}, ctx)

    async def _stream(
        self, request: web.Request, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> web.StreamResponse:
        chunks = self._engine.stream_chat_completion(params, ctx)
        return await stream_events(request, chunks, ctx, _EventEncoder(), {"request-id": ctx.reply.request_id})


class _EventEncoder(MessageStreamEncoder):
    """The Messages API's stream framing, with its in-band `error` event after the first byte."""

    __slots__ = ()

    def fail(self, error: GatewayError, ctx: CallContext) -> bytes:
        return error_event(error, ctx.reply.request_id)
