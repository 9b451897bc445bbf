"""`RemoteEngine`: the `Engine` protocol over a grpc.aio channel, for a front door split from its engine.

Every GatewayService call rides the front door's exchange with the engine (`gateway.engine.exchange_client`: many
calls over one stream, their frames that are ready together in one message); an engine without `Exchange` gets one
RPC per call instead. AdminService, health and `CutCalls` are RPCs of their own.

Metadata carries the call context; an aborted call's status and trailing metadata are rebuilt into the very
`GatewayError` the engine raised, so an HTTP client sees the same error in split mode as in one process. Each
GatewayService call also carries an unguessable name (`gateway.drain.CALL_KEY`): when this process's shutdown grace runs
out, it first asks the engine to cut those calls (`cut_calls`, GatewayService.CutCalls), so that their usage records
say shutdown, and the client still gets the in-band error; cancelled, they would read as clients that went away.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.cache.control import CACHE_REQUEST_HEADERS
from gateway.call import CallContext
from gateway.config import GatewayConfig
from gateway.config.tls import ClientTLS
from gateway.drain import CALL_KEY
from gateway.engine.exchange import METHOD_PREFIX
from gateway.engine.exchange_client import Exchanges, ExchangeUnsupported, wire_opener
from gateway.engine.routes import routing_headers
from gateway.engine.wire import Metadata, adopt, call_metadata
from gateway.errors import GatewayError
from gateway.tls import open_channel
from tollgate.gateway.v1 import admin_pb2, admin_pb2_grpc
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc
from tollgate.gateway.v1 import responses_pb2 as rpb

T = TypeVar("T")
M = TypeVar("M", bound=Message)

_PER_CALL_FOR = 300.0  # after an engine said it has no `Exchange`, seconds of RPCs per call before asking again
_CUT_TIMEOUT = 0.2  # the longest a shutdown's cut waits for the engine to cut our calls first
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


def _remaining(ctx: CallContext) -> float | None:
    """What is left of the call's deadline (None: it has none)."""
    return None if ctx.deadline is None else ctx.deadline - (time.perf_counter() - ctx.started)


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
    """Await a unary RPC: its result, the upstream time it reports, or the engine's error rebuilt."""
    try:
        result = await call
        adopt(ctx.reply, await call.trailing_metadata())
    except grpc.aio.AioRpcError as exc:
        raise _rebuild(exc, ctx) from None
    return result


class RemoteEngine:
    """The routing engine in another process."""

    def __init__(
        self,
        target: str,
        forward_headers: Sequence[str] = (),
        tls: ClientTLS | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The HTTP headers the engine's auth forwards (`auth.headers`) and the cache's controls: only those cross.
        self._forward_headers = (*forward_headers, *CACHE_REQUEST_HEADERS)
        self._channel = open_channel(target, tls, _CHANNEL_OPTIONS)
        self._stub = pb_grpc.GatewayServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._calls: set[str] = set()  # the names of the metered calls in flight
        self._prefix, self._serial = secrets.token_urlsafe(12) + ".", itertools.count()
        self._batches = True  # until the engine says it cannot stream in batches
        # Every GatewayService call rides these (`exchange_client`), on a connection of their own (`exchange_wire`).
        self.exchanges = Exchanges(wire_opener(target, tls) or self._channel)
        # When the engine said it has no `Exchange` (a release before it), each call is its own RPC until then
        # (then it asks again: the engine may have been upgraded since).
        self._per_call_until = -float("inf")
        self._clock = clock

    @classmethod
    def for_config(cls, target: str, config: GatewayConfig) -> RemoteEngine:
        """The engine at `target`, sent the HTTP headers the configuration's auth and routing read."""
        auth_headers = config.auth.headers if config.auth else ()
        headers = (*auth_headers, *(h for h in routing_headers(config) if h not in auth_headers))
        return cls(target, headers, config.tls.engine)

    def _metadata(self, ctx: CallContext) -> tuple[tuple[str, str], ...]:
        return call_metadata(ctx, self._forward_headers)

    @contextmanager
    def _named(self, ctx: CallContext) -> Iterator[Metadata]:
        """The metadata of a call named for `cut_calls` while the block runs: unguessable (a random prefix per front
        door), cheap (a counter)."""
        name = f"{self._prefix}{next(self._serial)}"
        self._calls.add(name)
        try:
            yield (*self._metadata(ctx), (CALL_KEY, name))
        finally:
            self._calls.discard(name)

    async def _call(self, name: str, request: Message, response: type[M], ctx: CallContext) -> M:
        """A unary GatewayService call `name`, named (see `cut_calls`): over the exchange, or (an engine without it)
        as its own RPC."""
        with self._named(ctx) as metadata:
            return await self._unary(name, request, response, metadata, ctx)

    async def _unary(self, name: str, request: Message, response: type[M], metadata: Metadata, ctx: CallContext) -> M:
        if self._clock() >= self._per_call_until:
            path = METHOD_PREFIX + name
            try:
                answer, _, trailing = await self.exchanges.unary(path, request, metadata, _remaining(ctx))
            except ExchangeUnsupported:
                self._per_call_until = self._clock() + _PER_CALL_FOR
            except grpc.aio.AioRpcError as exc:
                raise _rebuild(exc, ctx) from None
            else:
                adopt(ctx.reply, trailing)
                return response.FromString(answer)
        return cast(M, await _unary(getattr(self._stub, name)(request, metadata=metadata), ctx))

    async def _messages(
        self, name: str, request: Message, response: type[M], metadata: Metadata, ctx: CallContext
    ) -> AsyncGenerator[tuple[Metadata, M], None]:
        """A server stream `name`'s messages, each with the initial metadata that came before it, over the exchange
        or as its own RPC (see `_call`); its error raised as grpc's."""
        if self._clock() >= self._per_call_until:
            path = METHOD_PREFIX + name
            try:
                async with aclosing(self.exchanges.stream(path, request, metadata, _remaining(ctx))) as payloads:
                    async for reply, payload in payloads:
                        yield reply, response.FromString(payload)
                return
            except ExchangeUnsupported:  # raised before any message
                self._per_call_until = self._clock() + _PER_CALL_FOR
        call: grpc.aio.UnaryStreamCall[Any, M] = getattr(self._stub, name)(request, metadata=metadata)
        try:
            first = True
            async for message in call:
                initial: Metadata = ()
                if first:
                    initial, first = cast(Metadata, tuple(await call.initial_metadata())), False
                yield initial, message
        finally:
            call.cancel()

    async def _streamed(
        self, name: str, request: Message, response: type[M], ctx: CallContext
    ) -> AsyncGenerator[M, None]:
        """A server stream's messages, its metadata adopted at the first; the call, named (see `cut_calls`), is made
        at the first `anext` (so a generator closed unstarted makes none), and closing the generator cancels it, and
        so the upstream request."""
        with self._named(ctx) as metadata:
            try:
                async with aclosing(self._messages(name, request, response, metadata, ctx)) as messages:
                    async for initial, message in messages:
                        if initial:
                            adopt(ctx.reply, initial)
                        yield message
            except grpc.aio.AioRpcError as exc:
                raise _rebuild(exc, ctx) from None

    async def cut_calls(self) -> int:
        """Our shutdown grace is over: ask the engine to cut our calls in flight itself, as a shutdown (cancelling
        them would read as clients that went away), before we cut what is left. How many it cut."""
        if not self._calls:
            return 0
        request = pb.CutCallsRequest(calls=sorted(self._calls))
        try:
            return (await self._stub.CutCalls(request, timeout=_CUT_TIMEOUT)).cut
        except grpc.aio.AioRpcError:
            return 0  # the engine is gone or too slow: the cancels that follow are all it will see

    async def close(self) -> None:
        """Close the exchanges and the channel."""
        await self.exchanges.close()
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
        return await self._call("CreateChatCompletion", request, pb.CreateChatCompletionResponse, ctx)

    def stream_chat_completion(
        self, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The engine's chunks; closing this generator cancels the call, and so the upstream request.

        Asked for in batches (the chunks that were ready together come in one message); an engine from before
        batching answers UNIMPLEMENTED, and is then asked chunk by chunk from then on.
        """
        if self._batches:
            return self._in_batches(params, ctx)
        return self._chunk_by_chunk(params, ctx)

    def _chunk_by_chunk(
        self, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        request = pb.StreamChatCompletionRequest(params=params)
        return self._streamed("StreamChatCompletion", request, pb.StreamChatCompletionResponse, ctx)

    async def _in_batches(
        self, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        request = pb.StreamChatCompletionBatchesRequest(params=params)
        first = True
        with self._named(ctx) as metadata:
            try:
                batches = self._messages(
                    "StreamChatCompletionBatches", request, pb.StreamChatCompletionBatchesResponse, metadata, ctx
                )
                async with aclosing(batches):
                    async for _, message in batches:
                        if first:  # the reply rides in the first message (see the proto)
                            adopt(ctx.reply, message.reply_metadata.items())
                            first = False
                        for chunk in message.chunks:
                            yield chunk
                return
            except grpc.aio.AioRpcError as exc:
                if not (first and _unimplemented(exc)):
                    raise _rebuild(exc, ctx) from None
                self._batches = False
        async with aclosing(self._chunk_by_chunk(params, ctx)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def create_embeddings(
        self, request: pb.CreateEmbeddingsRequest, ctx: CallContext
    ) -> pb.CreateEmbeddingsResponse:
        """Embeddings."""
        return await self._call("CreateEmbeddings", request, pb.CreateEmbeddingsResponse, ctx)

    async def list_backends(self, ctx: CallContext) -> admin_pb2.ListBackendsResponse:
        """The engine's health report (the engine checks the admin token)."""
        request = admin_pb2.ListBackendsRequest()
        return await _unary(self._admin.ListBackends(request, metadata=self._metadata(ctx)), ctx)

    async def reload(self, ctx: CallContext) -> admin_pb2.ReloadResponse:
        """Have the engine reload its configuration (the engine checks the admin token)."""
        return await _unary(self._admin.Reload(admin_pb2.ReloadRequest(), metadata=self._metadata(ctx)), ctx)

    def config_hash(self) -> str:
        """Unknown here: the engine's own `/readyz` (or its `tollgate_config_info`) says."""
        return ""

    async def list_models(self, ctx: CallContext) -> pb.ListModelsResponse:
        """The models."""
        return await self._call("ListModels", pb.ListModelsRequest(), pb.ListModelsResponse, ctx)

    async def count_tokens(self, params: pb.ChatCompletionParams, ctx: CallContext) -> pb.CountTokensResponse:
        """The backend's count of the request's input tokens."""
        request = pb.CountTokensRequest(params=params)
        return await self._call("CountTokens", request, pb.CountTokensResponse, ctx)

    # Legacy completions, images, audio, moderations, rerank (endpoints.proto).
    async def create_completion(self, params: ep.CompletionParams, ctx: CallContext) -> ep.CreateCompletionResponse:
        """A whole legacy text completion."""
        request = ep.CreateCompletionRequest(params=params)
        return await self._call("CreateCompletion", request, ep.CreateCompletionResponse, ctx)

    def stream_completion(
        self, params: ep.CompletionParams, ctx: CallContext
    ) -> AsyncGenerator[ep.StreamCompletionResponse, None]:
        """The engine's text completion chunks."""
        request = ep.StreamCompletionRequest(params=params)
        return self._streamed("StreamCompletion", request, ep.StreamCompletionResponse, ctx)

    async def create_image(self, request: ep.CreateImageRequest, ctx: CallContext) -> ep.CreateImageResponse:
        """Generated images."""
        return await self._call("CreateImage", request, ep.CreateImageResponse, ctx)

    async def create_transcription(
        self, request: ep.CreateTranscriptionRequest, ctx: CallContext
    ) -> ep.CreateTranscriptionResponse:
        """The text of an audio file."""
        return await self._call("CreateTranscription", request, ep.CreateTranscriptionResponse, ctx)

    def stream_speech(
        self, request: ep.StreamSpeechRequest, ctx: CallContext
    ) -> AsyncGenerator[ep.StreamSpeechResponse, None]:
        """The engine's audio pieces."""
        return self._streamed("StreamSpeech", request, ep.StreamSpeechResponse, ctx)

    async def create_moderation(
        self, request: ep.CreateModerationRequest, ctx: CallContext
    ) -> ep.CreateModerationResponse:
        """Moderation results."""
        return await self._call("CreateModeration", request, ep.CreateModerationResponse, ctx)

    async def rerank(self, request: ep.RerankRequest, ctx: CallContext) -> ep.RerankResponse:
        """Documents ordered by relevance."""
        return await self._call("Rerank", request, ep.RerankResponse, ctx)

    # The Responses API.

    async def create_response(self, params: rpb.ResponseParams, ctx: CallContext) -> rpb.Response:
        """A whole response."""
        request = rpb.CreateResponseRequest(params=params)
        return (await self._call("CreateResponse", request, rpb.CreateResponseResponse, ctx)).response

    def stream_response(
        self, params: rpb.ResponseParams, ctx: CallContext
    ) -> AsyncGenerator[rpb.StreamResponseResponse, None]:
        """The engine's events; closing this generator cancels the call, and so the upstream request."""
        request = rpb.StreamResponseRequest(params=params)
        return self._streamed("StreamResponse", request, rpb.StreamResponseResponse, ctx)

    async def get_response(self, response_id: str, ctx: CallContext) -> rpb.Response:
        """A stored response of the caller's."""
        request = rpb.GetResponseRequest(response_id=response_id)
        return (await self._call("GetResponse", request, rpb.GetResponseResponse, ctx)).response

    async def delete_response(self, response_id: str, ctx: CallContext) -> rpb.DeleteResponseResponse:
        """Forget a stored response of the caller's."""
        request = rpb.DeleteResponseRequest(response_id=response_id)
        return await self._call("DeleteResponse", request, rpb.DeleteResponseResponse, ctx)

    async def list_response_input_items(
        self, request: rpb.ListResponseInputItemsRequest, ctx: CallContext
    ) -> rpb.ListResponseInputItemsResponse:
        """A page of a stored response's input items."""
        return await self._call("ListResponseInputItems", request, rpb.ListResponseInputItemsResponse, ctx)
