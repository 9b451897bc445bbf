"""The OpenAI-compatible HTTP front door: OpenAI JSON and SSE in, `tollgate.gateway.v1` calls to the engine out.

It only translates. Every response carries `x-request-id` and `x-tollgate-overhead-ms` (the time the gateway itself
added: the whole handling time less the time spent waiting on providers). Every failure is an OpenAI-shaped error
body with the right status; an error after the first streamed byte is an in-band SSE error event followed by
`data: [DONE]`, never a silent truncation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import orjson
from aiohttp import web

from gateway.codec.openai_request import decode_chat_params, decode_embeddings_request
from gateway.codec.openai_response import encode_chunk, encode_completion, encode_embeddings, encode_models
from gateway.engine.contract import (
    CACHE_STATUS_HEADER,
    CallContext,
    Engine,
    api_key,
    client_request_id,
    new_request_id,
    printable,
)
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    InternalError,
    InvalidRequestError,
    RequestTooLargeError,
)
from gateway.frontdoor.body import MAX_BODY, decode_body
from tollgate.gateway.v1 import gateway_pb2 as pb

log = logging.getLogger("tollgate.frontdoor")

OVERHEAD_HEADER = "x-tollgate-overhead-ms"
_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_DONE = b"data: [DONE]\n\n"
Handler = Callable[[web.Request, CallContext], Awaitable[web.StreamResponse]]


def _context(request: web.Request) -> CallContext:
    headers = request.headers
    return CallContext(
        request_id=new_request_id(),
        client_request_id=client_request_id(headers.get("x-request-id")),
        api_key=api_key(headers),
        peer=request.remote or "",
        headers=headers,
    )


def _overhead_ms(ctx: CallContext) -> str:
    return f"{max(0.0, time.perf_counter() - ctx.started - ctx.upstream_seconds) * 1000:.3f}"


def json_response(body: Any, ctx: CallContext, status: int = 200) -> web.Response:
    """A JSON answer with the request id and the gateway's overhead."""
    headers = {"Content-Type": _JSON, "x-request-id": ctx.request_id, OVERHEAD_HEADER: _overhead_ms(ctx)}
    if ctx.limit_headers:
        headers.update(ctx.limit_headers)
    if ctx.cache_status:
        headers[CACHE_STATUS_HEADER] = ctx.cache_status
    return web.Response(body=orjson.dumps(body), status=status, headers=headers)


def error_response(exc: GatewayError, ctx: CallContext) -> web.Response:
    """An OpenAI error body with the error's status, and Retry-After when the error knows one."""
    response = json_response(exc.to_openai(), ctx, exc.http_status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


ErrorRenderer = Callable[[GatewayError, CallContext], web.Response]


def _guarded(
    handler: Handler, render: ErrorRenderer = error_response
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Every request gets a context, and every failure an answer in the API's error shape (`render`, OpenAI's by
    default); a bug never shows a traceback."""

    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = _context(request)
        if ctx.api_key is not None and not printable(ctx.api_key.reveal()):
            # No key has bytes like these (aiohttp passes invalid UTF-8 through as surrogates): refuse it here,
            # before it reaches gRPC metadata or the auth server, which would fail on it.
            return render(AuthenticationError("Invalid API key"), ctx)
        try:
            return await handler(request, ctx)
        except GatewayError as exc:
            return render(exc, ctx)
        except Exception:
            log.exception("unhandled error", extra={"request_id": ctx.request_id})
            return render(InternalError(f"Internal error (request {ctx.request_id})"), ctx)

    return handle


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body, or the 400/413 that says what is wrong with it."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise RequestTooLargeError(f"Request body is too large: {exc.text}") from None
    raw = decode_body(raw, request.headers.get("Content-Encoding", ""), request.config_dict.get(MAX_BODY, len(raw)))
    if not raw:
        raise InvalidRequestError("Request body is empty; send a JSON object", code="invalid_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc.msg}", code="invalid_json") from None


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
        ]
        return [
            web.route(method, prefix + path, _guarded(handler))
            for method, path, handler in table
            for prefix in ("/v1", "")
        ]

    async def chat_completions(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/chat/completions`, streaming or not."""
        params, stream = decode_chat_params(await read_json(request))
        if stream:
            return await self._stream(request, params, ctx)
        completion = await self._engine.create_chat_completion(params, ctx)
        return json_response(encode_completion(completion), ctx)

    async def _stream(
        self, request: web.Request, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> web.StreamResponse:
        async with aclosing(self._engine.stream_chat_completion(params, ctx)) as chunks:
            # An error before the first chunk is raised here and answered with its own status.
            first = await anext(chunks)
            headers = {
                **_SSE_HEADERS,
                **ctx.limit_headers,
                "x-request-id": ctx.request_id,
                OVERHEAD_HEADER: _overhead_ms(ctx),
            }
            if ctx.cache_status:
                headers[CACHE_STATUS_HEADER] = ctx.cache_status
            response = web.StreamResponse(headers=headers)
            await response.prepare(request)
            # From here on the status is sent: every failure must travel in-band, then [DONE].
            failure: GatewayError | None = None
            try:
                await response.write(b"data: " + orjson.dumps(encode_chunk(first)) + b"\n\n")
                async for chunk in chunks:
                    await response.write(b"data: " + orjson.dumps(encode_chunk(chunk)) + b"\n\n")
            except GatewayError as exc:
                failure = exc
            except ConnectionResetError:
                return response  # the client left; closing the chunks cancels the upstream call
            except Exception:
                log.exception("unhandled error mid-stream", extra={"request_id": ctx.request_id})
                failure = InternalError(f"Internal error (request {ctx.request_id})")
            try:
                if failure is not None:
                    await response.write(b"data: " + orjson.dumps(failure.to_openai()) + b"\n\n")
                await response.write(_DONE)
                await response.write_eof()
            except ConnectionResetError:
                pass  # the client left as the stream ended
            return response

    async def embeddings(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/embeddings`."""
        embeddings_request = decode_embeddings_request(await read_json(request))
        return json_response(encode_embeddings(await self._engine.create_embeddings(embeddings_request, ctx)), ctx)

    async def models(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`GET /v1/models`."""
        return json_response(encode_models(await self._engine.list_models(ctx)), ctx)
