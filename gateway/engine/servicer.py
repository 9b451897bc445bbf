"""`GatewayService` over grpc.aio: a thin adapter from gRPC calls to the engine.

It reads the call context from metadata (`gateway.engine.wire`), and turns a `GatewayError` into a gRPC
status with trailing metadata that `RemoteEngine` turns back into the same error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import NoReturn, TypeVar, cast

import grpc

from gateway.batching import ready_batches
from gateway.call import CallContext, Engine
from gateway.drain import Drain
from gateway.engine.wire import Metadata, Network, call_context, reply_metadata
from gateway.errors import GatewayError, InternalError
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc
from tollgate.gateway.v1 import responses_pb2 as rpb

T = TypeVar("T")
S = TypeVar("S")  # a servicer
R = TypeVar("R")  # a request message
log = logging.getLogger("tollgate.engine")


def context_of(context: grpc.aio.ServicerContext[object, object], front_doors: Sequence[Network] = ()) -> CallContext:
    """The call context of a gRPC call: its metadata, its peer and its deadline (the client's address a front door
    passes believed only from `front_doors`, when there are any)."""
    # grpc-stubs types metadata as opaque items; at run time they are (key, value) pairs.
    pairs = cast(tuple[tuple[str, str | bytes], ...], tuple(context.invocation_metadata() or ()))
    return call_context(pairs, context.peer() or "", context.time_remaining(), front_doors)


def _internal(ctx: CallContext) -> InternalError:
    """A bug: logged here with its traceback, and never described to the caller (grpc.aio would send its text)."""
    log.exception("unhandled error", extra={"request_id": ctx.request_id})
    return InternalError(f"Internal error (request {ctx.request_id})")


async def _abort(context: grpc.aio.ServicerContext[object, object], exc: GatewayError, ctx: CallContext) -> NoReturn:
    await context.abort(exc.grpc_code, exc.message, (*exc.to_metadata(), *reply_metadata(ctx.reply, upstream=False)))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def _unary(
    context: grpc.aio.ServicerContext[object, object], ctx: CallContext, run: Callable[[CallContext], Awaitable[T]]
) -> T:
    """Run one unary call (`ctx` its context from metadata): its error as a status, its upstream time as trailing
    metadata."""
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
    ctx: CallContext,
    run: Callable[[CallContext], AsyncGenerator[T, None]],
    carry: Callable[[T, Metadata], None] | None = None,
) -> AsyncGenerator[T, None]:
    """Run one server-streaming call (`ctx` its context from metadata): the engine's reply metadata (the time to the
    first message spent upstream, for the front door's overhead figure) with the first message, as initial metadata
    or (`carry`) inside that message, which spares the stream a write of its own; its error (before or after the
    first) as a status."""
    try:
        async with aclosing(run(ctx)) as messages:
            first = True
            async for message in messages:
                if first:
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


def _streaming(
    method: Callable[[S, R, grpc.aio.ServicerContext[object, object]], AsyncGenerator[T, None]],
) -> Callable[[S, R, grpc.aio.ServicerContext[object, object]], AsyncGenerator[T, None]]:
    """A streaming method as an async generator function, which is how grpc.aio knows to stream it (without our
    guard in front too: an engine mounted in another server)."""

    @functools.wraps(method)
    async def stream(self: S, request: R, context: grpc.aio.ServicerContext[object, object]) -> AsyncGenerator[T, None]:
        async with aclosing(method(self, request, context)) as messages:
            async for message in messages:
                yield message

    return stream


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

    def __init__(self, engine: Engine, front_doors: Sequence[Network] = (), drain: Drain | None = None) -> None:
        self._engine = engine
        self._front_doors = tuple(front_doors)  # whose `tollgate-client-address` is believed (none: anyone's)
        self._drain = drain  # the calls a front door cuts at its shutdown (`CutCalls`) are ended through it

    def _context(self, context: grpc.aio.ServicerContext[object, object]) -> CallContext:
        return context_of(context, self._front_doors)

    async def CreateChatCompletion(  # the gRPC method name is fixed by the proto
        self, request: pb.CreateChatCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CreateChatCompletionResponse:
        return await _unary(
            context, self._context(context), lambda ctx: self._engine.create_chat_completion(request.params, ctx)
        )

    @_streaming
    def StreamChatCompletion(  # the gRPC method name is fixed by the proto
        self, request: pb.StreamChatCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        return _streamed(
            context, self._context(context), lambda ctx: self._engine.stream_chat_completion(request.params, ctx)
        )

    @_streaming
    def StreamChatCompletionBatches(  # the gRPC method name is fixed by the proto
        self, request: pb.StreamChatCompletionBatchesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncGenerator[pb.StreamChatCompletionBatchesResponse, None]:
        return _streamed(
            context,
            self._context(context),
            lambda ctx: _batched(self._engine.stream_chat_completion(request.params, ctx)),
            _carry,
        )

    async def CreateEmbeddings(  # the gRPC method name is fixed by the proto
        self, request: pb.CreateEmbeddingsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CreateEmbeddingsResponse:
        return await _unary(context, self._context(context), lambda ctx: self._engine.create_embeddings(request, ctx))

    async def ListModels(  # the gRPC method name is fixed by the proto
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListModelsResponse:
        return await _unary(context, self._context(context), self._engine.list_models)

    async def CountTokens(  # the gRPC method name is fixed by the proto
        self, request: pb.CountTokensRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CountTokensResponse:
        return await _unary(context, self._context(context), lambda ctx: self._engine.count_tokens(request.params, ctx))

    # Legacy completions, images, audio, moderations, rerank (endpoints.proto).
    async def CreateCompletion(  # the gRPC method name is fixed by the proto
        self, request: ep.CreateCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ep.CreateCompletionResponse:
        return await _unary(
            context, self._context(context), lambda ctx: self._engine.create_completion(request.params, ctx)
        )

    @_streaming
    def StreamCompletion(  # the gRPC method name is fixed by the proto
        self, request: ep.StreamCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncGenerator[ep.StreamCompletionResponse, None]:
        return _streamed(
            context, self._context(context), lambda ctx: self._engine.stream_completion(request.params, ctx)
        )

    async def CreateImage(  # the gRPC method name is fixed by the proto
        self, request: ep.CreateImageRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ep.CreateImageResponse:
        return await _unary(context, self._context(context), lambda ctx: self._engine.create_image(request, ctx))

    async def CreateTranscription(  # the gRPC method name is fixed by the proto
        self, request: ep.CreateTranscriptionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ep.CreateTranscriptionResponse:
        return await _unary(
            context, self._context(context), lambda ctx: self._engine.create_transcription(request, ctx)
        )

    @_streaming
    def StreamSpeech(  # the gRPC method name is fixed by the proto
        self, request: ep.StreamSpeechRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncGenerator[ep.StreamSpeechResponse, None]:
        return _streamed(context, self._context(context), lambda ctx: self._engine.stream_speech(request, ctx))

    async def CreateModeration(  # the gRPC method name is fixed by the proto
        self, request: ep.CreateModerationRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ep.CreateModerationResponse:
        return await _unary(context, self._context(context), lambda ctx: self._engine.create_moderation(request, ctx))

    async def Rerank(  # the gRPC method name is fixed by the proto
        self, request: ep.RerankRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ep.RerankResponse:
        return await _unary(context, self._context(context), lambda ctx: self._engine.rerank(request, ctx))

    # The Responses API (responses.proto).
    async def CreateResponse(  # the gRPC method name is fixed by the proto
        self, request: rpb.CreateResponseRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> rpb.CreateResponseResponse:
        async def run(ctx: CallContext) -> rpb.CreateResponseResponse:
            return rpb.CreateResponseResponse(response=await self._engine.create_response(request.params, ctx))

        return await _unary(context, self._context(context), run)

    @_streaming
    def StreamResponse(  # the gRPC method name is fixed by the proto
        self, request: rpb.StreamResponseRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncGenerator[rpb.StreamResponseResponse, None]:
        return _streamed(context, self._context(context), lambda ctx: self._engine.stream_response(request.params, ctx))

    async def GetResponse(  # the gRPC method name is fixed by the proto
        self, request: rpb.GetResponseRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> rpb.GetResponseResponse:
        async def run(ctx: CallContext) -> rpb.GetResponseResponse:
            return rpb.GetResponseResponse(response=await self._engine.get_response(request.response_id, ctx))

        return await _unary(context, self._context(context), run)

    async def DeleteResponse(  # the gRPC method name is fixed by the proto
        self, request: rpb.DeleteResponseRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> rpb.DeleteResponseResponse:
        return await _unary(
            context, self._context(context), lambda ctx: self._engine.delete_response(request.response_id, ctx)
        )

    async def ListResponseInputItems(  # the gRPC method name is fixed by the proto
        self, request: rpb.ListResponseInputItemsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> rpb.ListResponseInputItemsResponse:
        return await _unary(
            context, self._context(context), lambda ctx: self._engine.list_response_input_items(request, ctx)
        )

    async def CutCalls(  # the gRPC method name is fixed by the proto
        self, request: pb.CutCallsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CutCallsResponse:
        # A split front door cutting its calls at its own shutdown deadline: they end as this engine's own cuts do.
        return pb.CutCallsResponse(cut=self._drain.cut_calls(request.calls) if self._drain is not None else 0)
