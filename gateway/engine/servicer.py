"""`GatewayService` over grpc.aio: a thin adapter from gRPC calls to the engine.

It reads the call context from metadata (`gateway.engine.wire`), and turns a `GatewayError` into a gRPC
status with trailing metadata that `RemoteEngine` turns back into the same error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import NoReturn, TypeVar, cast

import grpc

from gateway.batching import ready_batches
from gateway.call import CallContext, Engine
from gateway.engine.wire import Metadata, call_context, reply_metadata
from gateway.errors import GatewayError, InternalError
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

T = TypeVar("T")
log = logging.getLogger("tollgate.engine")


def context_of(context: grpc.aio.ServicerContext[object, object]) -> CallContext:
    """The call context of a gRPC call: its metadata, its peer and its deadline."""
    # grpc-stubs types metadata as opaque items; at run time they are (key, value) pairs.
    pairs = cast(tuple[tuple[str, str | bytes], ...], tuple(context.invocation_metadata() or ()))
    return call_context(pairs, context.peer() or "", context.time_remaining())


def _internal(ctx: CallContext) -> InternalError:
    """A bug: logged here with its traceback, and never described to the caller (grpc.aio would send its text)."""
    log.exception("unhandled error", extra={"request_id": ctx.request_id})
    return InternalError(f"Internal error (request {ctx.request_id})")


async def _abort(context: grpc.aio.ServicerContext[object, object], exc: GatewayError, ctx: CallContext) -> NoReturn:
    await context.abort(exc.grpc_code, exc.message, (*exc.to_metadata(), *reply_metadata(ctx.reply, upstream=False)))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def _unary(context: grpc.aio.ServicerContext[object, object], run: Callable[[CallContext], Awaitable[T]]) -> T:
    """Run one unary call: its context from metadata, its error as a status, its upstream time as trailing metadata."""
    ctx = context_of(context)
    try:
        result = await run(ctx)
    except GatewayError as exc:
        await _abort(context, exc, ctx)
    except Exception:
        await _abort(context, _internal(ctx), ctx)
    context.set_trailing_metadata(reply_metadata(ctx.reply))
    return result


async def _streamed(
    context: grpc.aio.ServicerContext[object, object],
    run: Callable[[CallContext], AsyncGenerator[T, None]],
    carry: Callable[[T, Metadata], None] | None = None,
) -> AsyncGenerator[T, None]:
    """Run one streaming call: its error as a status, and its reply with the first message, as initial metadata or
    (`carry`) inside that message, which spares the stream a write of its own."""
    ctx = context_of(context)
    try:
        async with aclosing(run(ctx)) as messages:
            first = True
            async for message in messages:
                if first:
                    # The time to the first chunk spent upstream, for the front door's overhead figure.
                    if carry is None:
                        await context.send_initial_metadata(reply_metadata(ctx.reply))
                    else:
                        carry(message, reply_metadata(ctx.reply))
                    first = False
                yield message
    except GatewayError as exc:
        await _abort(context, exc, ctx)
    except Exception:
        await _abort(context, _internal(ctx), ctx)


def _carry(message: pb.StreamChatCompletionBatchesResponse, metadata: Metadata) -> None:
    message.reply_metadata.update(metadata)


async def _batched(
    chunks: AsyncGenerator[pb.StreamChatCompletionResponse, None],
) -> AsyncGenerator[pb.StreamChatCompletionBatchesResponse, None]:
    """The chunks that are ready together, one message each batch (`gateway.batching`)."""
    async with aclosing(chunks), aclosing(ready_batches(chunks)) as batches:
        async for batch in batches:
            yield pb.StreamChatCompletionBatchesResponse(chunks=batch)


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    """The engine, served."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def CreateChatCompletion(  # the gRPC method name is fixed by the proto
        self, request: pb.CreateChatCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CreateChatCompletionResponse:
        return await _unary(context, lambda ctx: self._engine.create_chat_completion(request.params, ctx))

    async def StreamChatCompletion(  # the gRPC method name is fixed by the proto
        self, request: pb.StreamChatCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.StreamChatCompletionResponse]:
        # grpc.aio serves a streaming method as asynchronous only if it is an async generator function.
        stream = _streamed(context, lambda ctx: self._engine.stream_chat_completion(request.params, ctx))
        async with aclosing(stream):
            async for chunk in stream:
                yield chunk

    async def StreamChatCompletionBatches(  # the gRPC method name is fixed by the proto
        self, request: pb.StreamChatCompletionBatchesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.StreamChatCompletionBatchesResponse]:
        stream = _streamed(
            context, lambda ctx: _batched(self._engine.stream_chat_completion(request.params, ctx)), _carry
        )
        async with aclosing(stream):
            async for batch in stream:
                yield batch

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
