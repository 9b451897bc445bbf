"""`GatewayService` over grpc.aio: a thin adapter from gRPC calls to the engine's `Method`s (`gateway.engine.methods`).

It reads the call context from metadata (`gateway.engine.wire`), and turns a `GatewayError` into a gRPC
status with trailing metadata that `RemoteEngine` turns back into the same error. `Exchange` serves the same methods
over one stream (`gateway.engine.exchange`).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import TypeVar, cast

import grpc
from google.protobuf.message import Message

from gateway.call import CallContext, Engine
from gateway.drain import Drain
from gateway.engine.exchange import ExchangeServer
from gateway.engine.methods import Method, failure, methods_of, replies
from gateway.engine.wire import Network, call_context, reply_metadata
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import exchange_pb2 as xpb
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc
from tollgate.gateway.v1 import responses_pb2 as rpb

T = TypeVar("T")
S = TypeVar("S")  # a servicer
R = TypeVar("R")  # a request message


def context_of(context: grpc.aio.ServicerContext[object, object], front_doors: Sequence[Network] = ()) -> CallContext:
    """The call context of a gRPC call: its metadata, its peer and its deadline (the client's address a front door
    passes believed only from `front_doors`, when there are any)."""
    # grpc-stubs types metadata as opaque items; at run time they are (key, value) pairs.
    pairs = cast(tuple[tuple[str, str | bytes], ...], tuple(context.invocation_metadata() or ()))
    return call_context(pairs, context.peer() or "", context.time_remaining(), front_doors)


async def unary_rpc(
    context: grpc.aio.ServicerContext[object, object], ctx: CallContext, method: Method, request: R
) -> T:
    """Run one unary RPC (`ctx` its context from metadata): its error as a status, its upstream time as trailing
    metadata."""
    assert method.unary is not None
    try:
        result = await method.unary(request, ctx)
    except Exception as exc:
        await context.abort(*failure(exc, ctx))
        raise AssertionError("unreachable: abort raises") from None  # pragma: no cover
    context.set_trailing_metadata(reply_metadata(ctx.reply))
    return cast(T, result)


async def _streamed(
    context: grpc.aio.ServicerContext[object, object], ctx: CallContext, method: Method, request: R
) -> AsyncGenerator[T, None]:
    """Run one server-streaming RPC (`ctx` its context from metadata): its reply metadata as initial metadata (see
    `replies`), its error (before or after the first message) as a status."""
    try:
        async with aclosing(replies(method, cast(Message, request), ctx)) as messages:
            async for metadata, message in messages:
                if metadata:
                    await context.send_initial_metadata(metadata)
                yield cast(T, message)
    except Exception as exc:
        await context.abort(*failure(exc, ctx))


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


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    """The engine, served: each RPC runs its `Method` (`methods_of`), as an exchanged call does (`Exchange`)."""

    def __init__(self, engine: Engine, front_doors: Sequence[Network] = (), drain: Drain | None = None) -> None:
        self._engine = engine
        self._front_doors = tuple(front_doors)  # whose `tollgate-client-address` is believed (none: anyone's)
        self._drain = drain  # the calls a front door cuts at its shutdown (`CutCalls`) are ended through it
        self.methods = methods_of(engine)
        self._exchanges = ExchangeServer(self.methods, self._front_doors, drain)

    def _context(self, context: grpc.aio.ServicerContext[object, object]) -> CallContext:
        return context_of(context, self._front_doors)

    async def CreateChatCompletion(  # the gRPC method name is fixed by the proto
        self, request: pb.CreateChatCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CreateChatCompletionResponse:
        return await unary_rpc(context, self._context(context), self.methods["CreateChatCompletion"], request)

    @_streaming
    def StreamChatCompletion(  # the gRPC method name is fixed by the proto
        self, request: pb.StreamChatCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        return _streamed(context, self._context(context), self.methods["StreamChatCompletion"], request)

    @_streaming
    def StreamChatCompletionBatches(  # the gRPC method name is fixed by the proto
        self, request: pb.StreamChatCompletionBatchesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncGenerator[pb.StreamChatCompletionBatchesResponse, None]:
        return _streamed(context, self._context(context), self.methods["StreamChatCompletionBatches"], request)

    async def CreateEmbeddings(  # the gRPC method name is fixed by the proto
        self, request: pb.CreateEmbeddingsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CreateEmbeddingsResponse:
        return await unary_rpc(context, self._context(context), self.methods["CreateEmbeddings"], request)

    async def ListModels(  # the gRPC method name is fixed by the proto
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListModelsResponse:
        return await unary_rpc(context, self._context(context), self.methods["ListModels"], request)

    async def CountTokens(  # the gRPC method name is fixed by the proto
        self, request: pb.CountTokensRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CountTokensResponse:
        return await unary_rpc(context, self._context(context), self.methods["CountTokens"], request)

    async def CreateCompletion(  # the gRPC method name is fixed by the proto
        self, request: ep.CreateCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ep.CreateCompletionResponse:
        return await unary_rpc(context, self._context(context), self.methods["CreateCompletion"], request)

    @_streaming
    def StreamCompletion(  # the gRPC method name is fixed by the proto
        self, request: ep.StreamCompletionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncGenerator[ep.StreamCompletionResponse, None]:
        return _streamed(context, self._context(context), self.methods["StreamCompletion"], request)

    async def CreateImage(  # the gRPC method name is fixed by the proto
        self, request: ep.CreateImageRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ep.CreateImageResponse:
        return await unary_rpc(context, self._context(context), self.methods["CreateImage"], request)

    async def CreateTranscription(  # the gRPC method name is fixed by the proto
        self, request: ep.CreateTranscriptionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ep.CreateTranscriptionResponse:
        return await unary_rpc(context, self._context(context), self.methods["CreateTranscription"], request)

    @_streaming
    def StreamSpeech(  # the gRPC method name is fixed by the proto
        self, request: ep.StreamSpeechRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncGenerator[ep.StreamSpeechResponse, None]:
        return _streamed(context, self._context(context), self.methods["StreamSpeech"], request)

    async def CreateModeration(  # the gRPC method name is fixed by the proto
        self, request: ep.CreateModerationRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ep.CreateModerationResponse:
        return await unary_rpc(context, self._context(context), self.methods["CreateModeration"], request)

    async def Rerank(  # the gRPC method name is fixed by the proto
        self, request: ep.RerankRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ep.RerankResponse:
        return await unary_rpc(context, self._context(context), self.methods["Rerank"], request)

    async def CreateResponse(  # the gRPC method name is fixed by the proto
        self, request: rpb.CreateResponseRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> rpb.CreateResponseResponse:
        return await unary_rpc(context, self._context(context), self.methods["CreateResponse"], request)

    @_streaming
    def StreamResponse(  # the gRPC method name is fixed by the proto
        self, request: rpb.StreamResponseRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncGenerator[rpb.StreamResponseResponse, None]:
        return _streamed(context, self._context(context), self.methods["StreamResponse"], request)

    async def GetResponse(  # the gRPC method name is fixed by the proto
        self, request: rpb.GetResponseRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> rpb.GetResponseResponse:
        return await unary_rpc(context, self._context(context), self.methods["GetResponse"], request)

    async def DeleteResponse(  # the gRPC method name is fixed by the proto
        self, request: rpb.DeleteResponseRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> rpb.DeleteResponseResponse:
        return await unary_rpc(context, self._context(context), self.methods["DeleteResponse"], request)

    async def ListResponseInputItems(  # the gRPC method name is fixed by the proto
        self, request: rpb.ListResponseInputItemsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> rpb.ListResponseInputItemsResponse:
        return await unary_rpc(context, self._context(context), self.methods["ListResponseInputItems"], request)

    async def CutCalls(  # the gRPC method name is fixed by the proto
        self, request: pb.CutCallsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CutCallsResponse:
        # A split front door cutting its calls at its own shutdown deadline: they end as this engine's own cuts do.
        return pb.CutCallsResponse(cut=self._drain.cut_calls(request.calls) if self._drain is not None else 0)

    @_streaming
    def Exchange(  # the gRPC method name is fixed by the proto
        self,
        request_iterator: AsyncIterator[xpb.ExchangeRequest],
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncGenerator[xpb.ExchangeResponse, None]:
        return self._exchanges.serve(request_iterator, context)
