"""What every HTTP front door shares: the call context of a request, JSON answers with the request id and the
gateway's overhead, turning every failure into an answer in the API's own error shape, reading a JSON body, and
writing a stream as server-sent events whose failures after the first byte travel in-band.

The API-specific parts (paths, codecs, error bodies, event framing) stay in each front door's module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import orjson
from aiohttp import web

from gateway.batching import ready_batches
from gateway.call import CallContext, new_request_id
from gateway.drain import absorb_cut
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    InternalError,
    InvalidRequestError,
    RequestTimeoutError,
    RequestTooLargeError,
    ShuttingDownError,
)
from gateway.frontdoor.body import BODY_TIMEOUT, MAX_BODY, decode_body
from gateway.frontdoor.connections import CONNECTIONS
from gateway.headers import api_key, client_request_id, printable
from gateway.telemetry.context import ENGINE_TOOK_CALL, TRACE_PARENT

log = logging.getLogger("tollgate.frontdoor")

OVERHEAD_HEADER = "x-tollgate-overhead-ms"
_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
Handler = Callable[[web.Request, CallContext], Awaitable[web.StreamResponse]]
Chunk_contra = TypeVar("Chunk_contra", contravariant=True)  # a stream's message: a chat chunk, a text completion chunk…
T = TypeVar("T")


def _context(request: web.Request) -> CallContext:
    headers = request.headers
    return CallContext(
        request_id=new_request_id(),
        client_request_id=client_request_id(headers.get("x-request-id")),
        api_key=api_key(headers),
        peer=request.remote or "",
        headers=headers,
        trace_parent=TRACE_PARENT.get(),
    )


def overhead_ms(ctx: CallContext) -> str:
    return f"{max(0.0, time.perf_counter() - ctx.started - ctx.reply.upstream_seconds) * 1000:.3f}"


def json_response(body: Any, ctx: CallContext, status: int = 200) -> web.Response:
    """A JSON answer with the request id, the gateway's overhead and the engine's answer headers."""
    reply = ctx.reply
    headers = {"Content-Type": _JSON, "x-request-id": reply.request_id, OVERHEAD_HEADER: overhead_ms(ctx)}
    if reply.headers:
        headers.update(reply.headers)
    return web.Response(body=orjson.dumps(body), status=status, headers=headers)


ErrorRenderer = Callable[[GatewayError, CallContext], web.Response]


def guarded(handler: Handler, render: ErrorRenderer) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Every request gets a context, and every failure an answer in the API's error shape (`render`); a bug never
    shows a traceback."""

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
        except asyncio.CancelledError as exc:
            if not absorb_cut(exc):
                raise
            return render(ShuttingDownError(), ctx)  # cut before its answer began: a 503 the client may retry
        except Exception:
            log.exception("unhandled error", extra={"request_id": ctx.reply.request_id})
            return render(InternalError(f"Internal error (request {ctx.reply.request_id})"), ctx)
        finally:
            if ctx.reply.metered:  # an engine (a remote one too) metered the call: its access log has it
                ENGINE_TOOK_CALL.set(True)

    return handle


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body, or the 400/413 that says what is wrong with it."""
    config = request.config_dict  # a new view on every access: taken once
    try:
        if request.content.is_eof():  # the whole body came with the headers (the usual case): nothing to wait for
            raw = await request.read()
        else:
            async with asyncio.timeout(config.get(BODY_TIMEOUT)):
                raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise RequestTooLargeError(f"Request body is too large: {exc.text}") from None
    except TimeoutError:
        request.protocol.close()  # the rest of the body may never come: close the connection after the answer
        if (guard := config.get(CONNECTIONS)) is not None:
            guard.body_late()
        raise RequestTimeoutError("The request body took too long to arrive") from None
    raw = decode_body(raw, request.headers.get("Content-Encoding", ""), config.get(MAX_BODY, len(raw)))
    if not raw:
        raise InvalidRequestError("Request body is empty; send a JSON object", code="invalid_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc.msg}", code="invalid_json") from None


class StreamEncoder(Protocol[Chunk_contra]):
    """How one API frames a stream: its first events, each chunk's, the end, and an error after the first byte."""

    def start(self, chunk: Chunk_contra) -> bytes:
        """The events of the first chunk (and whatever the API sends before them)."""
        ...

    def feed(self, chunk: Chunk_contra) -> bytes:
        """The events of a later chunk; empty when it makes none."""
        ...

    def finish(self) -> bytes:
        """The events that end a stream that went well."""
        ...

    def fail(self, error: GatewayError, ctx: CallContext) -> bytes:
        """The in-band error, and whatever ends the stream after it."""
        ...


async def stream_events(
    request: web.Request,
    chunks: AsyncGenerator[T, None],
    ctx: CallContext,
    encoder: StreamEncoder[T],
    headers: Mapping[str, str] = MappingProxyType({}),
) -> web.StreamResponse:
    """Answer with the engine's stream as server-sent events, each written as it comes.

    An error before the first chunk is raised (and answered with its own status); after it the status is sent, so
    every failure travels in-band. A client that leaves closes `chunks`, which cancels the upstream call.
    """
    async with aclosing(chunks):
        first = await anext(chunks)
        reply = ctx.reply
        sent = {**_SSE_HEADERS, **reply.headers, "x-request-id": reply.request_id, OVERHEAD_HEADER: overhead_ms(ctx)}
        response = web.StreamResponse(headers={**sent, **headers})
        await response.prepare(request)
        failure: GatewayError | None = None
        # The chunks that are ready together go out in one write (see gateway.batching); each as it comes otherwise.
        batches = ready_batches(chunks)
        try:
            await response.write(encoder.start(first))
            async with aclosing(batches):
                async for batch in batches:
                    if events := b"".join([encoder.feed(chunk) for chunk in batch]):
                        await response.write(events)
        except GatewayError as exc:
            failure = exc
        except ConnectionResetError:
            return response  # the client left; closing the chunks cancels the upstream call
        except asyncio.CancelledError as exc:
            if not absorb_cut(exc):
                raise
            await batches.aclose()  # a step waiting on the chunks is cancelled first: the stream is then free
            failure = await _cut(chunks)
        except Exception:
            log.exception("unhandled error mid-stream", extra={"request_id": ctx.reply.request_id})
            failure = InternalError(f"Internal error (request {ctx.reply.request_id})")
        try:
            await response.write(encoder.fail(failure, ctx) if failure is not None else encoder.finish())
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client left as the stream ended
        return response


async def _cut(chunks: AsyncGenerator[T, None]) -> GatewayError:
    """The shutdown grace ran out mid-stream: tell the stream (so its usage is recorded as cut by a shutdown, when it
    was waiting on us rather than upstream) and return the error the client gets in-band."""
    error = ShuttingDownError()
    with contextlib.suppress(GatewayError, StopAsyncIteration):
        await chunks.athrow(error)
    return error
