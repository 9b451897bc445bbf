"""`RemoteEngine`: the `Engine` protocol over a grpc.aio channel, for a front door split from its engine.

Metadata carries the call context; an aborted call's status and trailing metadata are rebuilt into the very
`GatewayError` the engine raised, so an HTTP client sees the same error in split mode as in one process.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.cache.control import CACHE_REQUEST_HEADERS
from gateway.call import CallContext
from gateway.config import GatewayConfig
from gateway.config.tls import ClientTLS
from gateway.engine.routes import routing_headers
from gateway.engine.wire import Metadata, adopt, call_metadata
from gateway.errors import GatewayError
from gateway.tls import open_channel
from tollgate.gateway.v1 import admin_pb2, admin_pb2_grpc
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

T = TypeVar("T")

_ERROR_CLASS = "tollgate-error-class"  # trailing metadata of every error the engine chose to send

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 0),
]


def _unimplemented(exc: grpc.aio.AioRpcError) -> bool:
    """Whether the engine does not know the method (an older engine), rather than an error it chose to send."""
    metadata = cast(tuple[tuple[str, str | bytes], ...], tuple(exc.trailing_metadata() or ()))
    return exc.code() == grpc.StatusCode.UNIMPLEMENTED and not any(k == _ERROR_CLASS for k, _ in metadata)


def _rebuild(exc: grpc.aio.AioRpcError, ctx: CallContext) -> GatewayError:
    # grpc-stubs types metadata as opaque items; at run time they are (key, value) pairs.
    metadata = cast(tuple[tuple[str, str | bytes], ...], tuple(exc.trailing_metadata() or ()))
    adopt(ctx.reply, metadata)
    details = exc.details() or ""
    if not any(k == _ERROR_CLASS for k, _ in metadata):
        # Not an error the engine chose to send: its text may be grpc's description of a crash; never pass it on.
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            details = "The routing engine is unavailable"
        elif exc.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
            details = "Internal error in the routing engine"
    return GatewayError.from_metadata(exc.code(), details, metadata)


async def _unary(call: grpc.aio.UnaryUnaryCall[Any, T], ctx: CallContext) -> T:
    """Await a unary call: its result, the upstream time it reports, or the engine's error rebuilt."""
    try:
        result = await call
        adopt(ctx.reply, await call.trailing_metadata())
    except grpc.aio.AioRpcError as exc:
        raise _rebuild(exc, ctx) from None
    return result


class RemoteEngine:
    """The routing engine in another process."""

    def __init__(self, target: str, forward_headers: Sequence[str] = (), tls: ClientTLS | None = None) -> None:
        # The HTTP headers the engine's auth forwards (`auth.headers`) and the cache's controls: only those cross.
        self._forward_headers = (*forward_headers, *CACHE_REQUEST_HEADERS)
        self._channel = open_channel(target, tls, _CHANNEL_OPTIONS)
        self._stub = pb_grpc.GatewayServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._batches = True  # until the engine says it cannot stream in batches

    @classmethod
    def for_config(cls, target: str, config: GatewayConfig) -> RemoteEngine:
        """The engine at `target`, sent the HTTP headers the configuration's auth and routing read."""
        auth_headers = config.auth.headers if config.auth else ()
        headers = (*auth_headers, *(h for h in routing_headers(config) if h not in auth_headers))
        return cls(target, headers, config.tls.engine)

    def _metadata(self, ctx: CallContext) -> tuple[tuple[str, str], ...]:
        return call_metadata(ctx, self._forward_headers)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(None)

    async def ready(self) -> bool:
        """Whether the engine answers its health check as SERVING."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def create_chat_completion(
        self, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> pb.CreateChatCompletionResponse:
        """One whole completion."""
        request = pb.CreateChatCompletionRequest(params=params)
        return await _unary(self._stub.CreateChatCompletion(request, metadata=self._metadata(ctx)), ctx)

    async def stream_chat_completion(
        self, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The engine's chunks; closing this generator cancels the call, and so the upstream request.

        Asked for in batches (the chunks that were ready together come in one message); an engine from before
        batching answers UNIMPLEMENTED, and is then asked chunk by chunk from then on.
        """
        metadata = self._metadata(ctx)
        if self._batches:
            call = self._stub.StreamChatCompletionBatches(
                pb.StreamChatCompletionBatchesRequest(params=params), metadata=metadata
            )
            try:
                first = True
                async for message in call:
                    if first:
                        adopt(ctx.reply, message.reply_metadata.items())
                        first = False
                    for chunk in message.chunks:
                        yield chunk
                return
            except grpc.aio.AioRpcError as exc:
                if not (first and _unimplemented(exc)):
                    raise _rebuild(exc, ctx) from None
                self._batches = False
            finally:
                call.cancel()
        async for chunk in self._chunk_by_chunk(params, ctx, metadata):
            yield chunk

    async def _chunk_by_chunk(
        self, params: pb.ChatCompletionParams, ctx: CallContext, metadata: Metadata
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        call = self._stub.StreamChatCompletion(pb.StreamChatCompletionRequest(params=params), metadata=metadata)
        try:
            first = True
            async for chunk in call:
                if first:
                    adopt(ctx.reply, await call.initial_metadata())
                    first = False
                yield chunk
        except grpc.aio.AioRpcError as exc:
            raise _rebuild(exc, ctx) from None
        finally:
            call.cancel()

    async def create_embeddings(
        self, request: pb.CreateEmbeddingsRequest, ctx: CallContext
    ) -> pb.CreateEmbeddingsResponse:
        """Embeddings."""
        return await _unary(self._stub.CreateEmbeddings(request, metadata=self._metadata(ctx)), ctx)

    async def list_backends(self, ctx: CallContext) -> admin_pb2.ListBackendsResponse:
        """The engine's health report (the engine checks the admin token)."""
        request = admin_pb2.ListBackendsRequest()
        return await _unary(self._admin.ListBackends(request, metadata=self._metadata(ctx)), ctx)

    async def list_models(self, ctx: CallContext) -> pb.ListModelsResponse:
        """The models."""
        return await _unary(self._stub.ListModels(pb.ListModelsRequest(), metadata=self._metadata(ctx)), ctx)

    async def count_tokens(self, params: pb.ChatCompletionParams, ctx: CallContext) -> pb.CountTokensResponse:
        """The backend's count of the request's input tokens."""
        request = pb.CountTokensRequest(params=params)
        return await _unary(self._stub.CountTokens(request, metadata=self._metadata(ctx)), ctx)
