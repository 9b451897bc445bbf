"""`GatewayService` over grpc.aio: a thin adapter from gRPC calls to `EngineCore`.

It reads the call context from metadata (`authorization`, `x-request-id`), and turns a `GatewayError` into a gRPC
status with trailing metadata that `RemoteEngine` turns back into the same error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import NoReturn, TypeVar

import grpc

from gateway.engine.contract import CACHE_STATUS_HEADER, CallContext, api_key, client_request_id, new_request_id
from gateway.engine.core import EngineCore
from gateway.errors import GatewayError, InternalError
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

T = TypeVar("T")
log = logging.getLogger("tollgate.engine")
UPSTREAM_MS = "tollgate-upstream-ms"
# A split front door passes its client's address, and the HTTP headers auth wants, under these names.
CLIENT_ADDRESS = "tollgate-client-address"
HEADER_PREFIX = "tollgate-header-"


def call_context(context: grpc.aio.ServicerContext[object, object]) -> CallContext:
    """The call context from gRPC metadata; the key is kept as a `Secret` so it never prints."""
    metadata: dict[str, str] = {}
    forwarded: dict[str, str] = {}
    for k, v in context.invocation_metadata() or ():
        if isinstance(v, str):
            if k.startswith(HEADER_PREFIX):
                forwarded[k[len(HEADER_PREFIX) :]] = v
            else:
                metadata[k] = v
    return CallContext(
        request_id=new_request_id(),
        client_request_id=client_request_id(metadata.get("x-request-id")),
        api_key=api_key(metadata),
        peer=metadata.get(CLIENT_ADDRESS) or context.peer() or "",
        headers={**metadata, **forwarded} if forwarded else metadata,
        trace_parent=metadata.get("traceparent", ""),  # the caller's span, never a forwarded client header
    )


def _upstream_ms(ctx: CallContext) -> tuple[tuple[str, str], ...]:
    return ((UPSTREAM_MS, f"{ctx.upstream_seconds * 1000:.3f}"), *_identity(ctx))


def _identity(ctx: CallContext) -> tuple[tuple[str, str], ...]:
    """The engine's request id, the `x-ratelimit-*` values and the cache status, for the caller to show its client."""
    cache = ((CACHE_STATUS_HEADER, ctx.cache_status),) if ctx.cache_status else ()
    return (("x-request-id", ctx.request_id), *ctx.limit_headers.items(), *cache)


def _internal(ctx: CallContext) -> InternalError:
    """A bug: logged here with its traceback, and never described to the caller (grpc.aio would send its text)."""
    log.exception("unhandled error", extra={"request_id": ctx.request_id})
    return InternalError(f"Internal error (request {ctx.request_id})")


async def _abort(context: grpc.aio.ServicerContext[object, object], exc: GatewayError, ctx: CallContext) -> NoReturn:
    await context.abort(exc.grpc_code, exc.message, (*exc.to_metadata(), *_identity(ctx)))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def _unary(context: grpc.aio.ServicerContext[object, object], run: Callable[[CallContext], Awaitable[T]]) -> T:
    """Run one unary call: its context from metadata, its error as a status, its upstream time as trailing metadata."""
    ctx = call_context(context)
    try:
        result = await run(ctx)
    except GatewayError as exc:
        await _abort(context, exc, ctx)
    except Exception:
        await _abort(context, _internal(ctx), ctx)
    context.set_trailing_metadata(_upstream_ms(ctx))
    return result


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    """The engine, served."""

    def __init__(self, engine: EngineCore) -> None:
        self._engine = engine

    async def CreateChatCompletion(  # the gRPC method name is fixed by the proto
        self, request: pb.CreateChatCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CreateChatCompletionResponse:
        return await _unary(context, lambda ctx: self._engine.create_chat_completion(request.params, ctx))

    async def StreamChatCompletion(  # the gRPC method name is fixed by the proto
        self, request: pb.StreamChatCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.StreamChatCompletionResponse]:
        ctx = call_context(context)
        try:
            async with aclosing(self._engine.stream_chat_completion(request.params, ctx)) as chunks:
                first = True
                async for chunk in chunks:
                    if first:
                        # The time to the first chunk spent upstream, for the front door's overhead figure.
                        await context.send_initial_metadata(_upstream_ms(ctx))
                        first = False
                    yield chunk
        except GatewayError as exc:
            await _abort(context, exc, ctx)
        except Exception:
            await _abort(context, _internal(ctx), ctx)

    async def CreateEmbeddings(  # the gRPC method name is fixed by the proto
        self, request: pb.CreateEmbeddingsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CreateEmbeddingsResponse:
        return await _unary(context, lambda ctx: self._engine.create_embeddings(request, ctx))

    async def ListModels(  # the gRPC method name is fixed by the proto
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListModelsResponse:
        return await _unary(context, self._engine.list_models)

    async def CountTokens(  # the gRPC method name is fixed by the proto
        self, request: pb.CountTokensRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CountTokensResponse:
        return await _unary(context, lambda ctx: self._engine.count_tokens(request.params, ctx))
