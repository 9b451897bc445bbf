"""GatewayService's methods as the engine runs them, one `Method` each (`methods_of`), whichever way they are called:
as their own RPC (`gateway.engine.servicer`) or on an exchange (`gateway.engine.exchange`). What a call's failure
ends it with (`failure`) and when its reply metadata goes (`replies`) are decided here, once for both.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from gateway.batching import ready_batches
from gateway.call import CallContext, Engine
from gateway.engine.wire import Metadata, reply_metadata
from gateway.errors import GatewayError, InternalError
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import responses_pb2 as rpb

log = logging.getLogger("tollgate.engine")


def _internal(ctx: CallContext) -> InternalError:
    """A bug: logged here with its traceback, and never described to the caller (grpc.aio would send its text)."""
    log.exception("unhandled error", extra={"request_id": ctx.request_id})
    return InternalError(f"Internal error (request {ctx.request_id})")


# How a call ended: its status code, details and trailing metadata.
Status = tuple[grpc.StatusCode, str, Metadata]


def failure(exc: Exception, ctx: CallContext) -> Status:
    """The status a call that raised `exc` ends with: a `GatewayError` as itself (`RemoteEngine` rebuilds it from the
    trailing metadata), anything else as an internal error that says nothing of the bug."""
    error = exc if isinstance(exc, GatewayError) else _internal(ctx)
    return error.grpc_code, error.message, (*error.to_metadata(), *reply_metadata(ctx.reply, upstream=False))


@dataclass(frozen=True, slots=True)
class Method:
    """One GatewayService method as the engine runs it, whether called as its own RPC or on an exchange: its request
    type, and its call of the engine, unary (`unary`) or server-streaming (`stream`, with `carry` to put the reply
    metadata inside the first message rather than in initial metadata)."""

    request: type[Message]
    unary: Callable[[Any, CallContext], Awaitable[Message]] | None = None
    stream: Callable[[Any, CallContext], AsyncGenerator[Message, None]] | None = None
    carry: Callable[[Any, Metadata], None] | None = None


async def replies(method: Method, request: Message, ctx: CallContext) -> AsyncGenerator[tuple[Metadata, Message], None]:
    """A streaming method's messages, each with the reply metadata to send before it: the engine's (its time to the
    first message upstream, for the front door's overhead figure) with the first message, unless `carry` put it
    inside that message (which spares the stream a write of its own); none after."""
    assert method.stream is not None
    async with aclosing(method.stream(request, ctx)) as messages:
        first = True
        async for message in messages:
            if first:
                first = False
                if method.carry is None:
                    yield reply_metadata(ctx.reply), message
                    continue
                method.carry(message, reply_metadata(ctx.reply))
            yield (), message


def _carry(message: pb.StreamChatCompletionBatchesResponse, metadata: Metadata) -> None:
    message.reply_metadata.update(metadata)


async def _batched(
    chunks: AsyncGenerator[pb.StreamChatCompletionResponse, None],
) -> AsyncGenerator[pb.StreamChatCompletionBatchesResponse, None]:
    """The chunks that are ready together, one message each batch (`gateway.batching`)."""
    async with aclosing(chunks), aclosing(ready_batches(chunks)) as batches:
        async for batch in batches:
            yield pb.StreamChatCompletionBatchesResponse(chunks=batch)


async def _response(engine: Engine, request: rpb.CreateResponseRequest, ctx: CallContext) -> rpb.CreateResponseResponse:
    return rpb.CreateResponseResponse(response=await engine.create_response(request.params, ctx))


async def _stored(engine: Engine, request: rpb.GetResponseRequest, ctx: CallContext) -> rpb.GetResponseResponse:
    return rpb.GetResponseResponse(response=await engine.get_response(request.response_id, ctx))


def methods_of(e: Engine) -> dict[str, Method]:
    """GatewayService's methods (but CutCalls and Exchange, which are no calls of the engine), by name."""
    return {
        "CreateChatCompletion": Method(
            pb.CreateChatCompletionRequest, unary=lambda r, ctx: e.create_chat_completion(r.params, ctx)
        ),
        "StreamChatCompletion": Method(
            pb.StreamChatCompletionRequest, stream=lambda r, ctx: e.stream_chat_completion(r.params, ctx)
        ),
        "StreamChatCompletionBatches": Method(
            pb.StreamChatCompletionBatchesRequest,
            stream=lambda r, ctx: _batched(e.stream_chat_completion(r.params, ctx)),
            carry=_carry,
        ),
        "CreateEmbeddings": Method(pb.CreateEmbeddingsRequest, unary=e.create_embeddings),
        "ListModels": Method(pb.ListModelsRequest, unary=lambda _, ctx: e.list_models(ctx)),
        "CountTokens": Method(pb.CountTokensRequest, unary=lambda r, ctx: e.count_tokens(r.params, ctx)),
        # Legacy completions, images, audio, moderations, rerank (endpoints.proto).
        "CreateCompletion": Method(ep.CreateCompletionRequest, unary=lambda r, ctx: e.create_completion(r.params, ctx)),
        "StreamCompletion": Method(
            ep.StreamCompletionRequest, stream=lambda r, ctx: e.stream_completion(r.params, ctx)
        ),
        "CreateImage": Method(ep.CreateImageRequest, unary=e.create_image),
        "CreateTranscription": Method(ep.CreateTranscriptionRequest, unary=e.create_transcription),
        "StreamSpeech": Method(ep.StreamSpeechRequest, stream=e.stream_speech),
        "CreateModeration": Method(ep.CreateModerationRequest, unary=e.create_moderation),
        "Rerank": Method(ep.RerankRequest, unary=e.rerank),
        # The Responses API (responses.proto).
        "CreateResponse": Method(rpb.CreateResponseRequest, unary=lambda r, ctx: _response(e, r, ctx)),
        "StreamResponse": Method(rpb.StreamResponseRequest, stream=lambda r, ctx: e.stream_response(r.params, ctx)),
        "GetResponse": Method(rpb.GetResponseRequest, unary=lambda r, ctx: _stored(e, r, ctx)),
        "DeleteResponse": Method(rpb.DeleteResponseRequest, unary=lambda r, ctx: e.delete_response(r.response_id, ctx)),
        "ListResponseInputItems": Method(rpb.ListResponseInputItemsRequest, unary=e.list_response_input_items),
    }
