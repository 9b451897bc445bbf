"""The one call contract between a door and the engine: the `Engine` protocol, request ids, and the call context.

A door (the HTTP front door, the gRPC servicer) reads a request into an immutable `CallContext`: who calls
(credentials, peer, headers), the ids, the deadline and the trace parent. The engine answers with messages, and
tells the door what it must show beside them (the request id, the time spent upstream, the answer headers) on the
context's `CallReply`, which only an engine writes. What the engine's policies decide along the way (principal,
lease, cache status, attempts, usage) stays in the engine's own per-call record.

Two implementations: `EngineCore` in the same process (a plain method call, no serialization) and `RemoteEngine`
over a grpc.aio channel. Both take and return `tollgate.gateway.v1` messages, and both raise `GatewayError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.config import Secret
from tollgate.gateway.v1 import admin_pb2
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import responses_pb2 as rpb


def new_request_id() -> str:
    """A fresh request id: 24 hex characters, unique enough to correlate logs and usage records."""
    return "req_" + os.urandom(12).hex()


@dataclass(slots=True)
class CallReply:
    """What the engine tells the door beside the answer; written by an engine only, read by the door."""

    request_id: str = ""  # the id the client is shown: the engine's (a split front door adopts it)
    upstream_seconds: float = 0.0  # time spent waiting on providers, for the overhead figure
    # Headers for the client's answer: `x-ratelimit-*` and the cache status, for every answer, error or not.
    headers: dict[str, str] = field(default_factory=dict)
    # The engine metered the call: its usage record and access-log line are the engine's. A call refused before
    # (bad parameters, `ListModels`) is not, so its door writes the line, in one process or split.
    metered: bool = False


@dataclass(frozen=True, slots=True)
class CallContext:
    """One call as its door read it: credentials, identity, deadline; immutable."""

    # The gateway's own id, unique per request: what usage records are deduplicated on, so never the caller's.
    request_id: str
    api_key: Secret | None = None
    client_request_id: str = ""  # the caller's own `x-request-id`, for correlation only
    peer: str = ""  # the client's address
    # The request's headers (HTTP headers, or gRPC metadata); the engine forwards the configured few to auth.
    headers: Mapping[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)  # when the call arrived (perf_counter seconds)
    # Seconds the caller gives the whole call (a gRPC deadline), None: no limit. The engine's attempts stop at it
    # without blaming a target (gateway.engine.retry), and a call it cuts is recorded as `deadline_exceeded`.
    deadline: float | None = None
    trace_parent: str = ""  # a W3C traceparent from the front door across the gRPC hop (split mode)
    reply: CallReply = field(default_factory=CallReply)

    def __post_init__(self) -> None:
        if not self.reply.request_id:
            self.reply.request_id = self.request_id


class Engine(Protocol):
    """The routing engine as a door sees it."""

    async def create_chat_completion(
        self, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> pb.CreateChatCompletionResponse:
        """One whole completion."""
        ...

    def stream_chat_completion(
        self, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """An async generator of chunks; errors before the first chunk are raised from the first `anext`."""
        ...

    async def create_embeddings(
        self, request: pb.CreateEmbeddingsRequest, ctx: CallContext
    ) -> pb.CreateEmbeddingsResponse:
        """Embeddings of every input, in order."""
        ...

    async def list_models(self, ctx: CallContext) -> pb.ListModelsResponse:
        """The models the caller may use."""
        ...

    async def count_tokens(self, params: pb.ChatCompletionParams, ctx: CallContext) -> pb.CountTokensResponse:
        """The input tokens of a chat request, counted by a backend of its model that can count them."""
        ...

    async def ready(self) -> bool:
        """Whether the engine can take traffic now."""
        ...

    async def list_backends(self, ctx: CallContext) -> admin_pb2.ListBackendsResponse:
        """The health of every target (admin only: the call must carry the admin token)."""
        ...

    # Legacy completions, images, audio, moderations, rerank (endpoints.proto).
    async def create_completion(self, params: ep.CompletionParams, ctx: CallContext) -> ep.CreateCompletionResponse:
        """A whole legacy text completion."""
        ...

    def stream_completion(
        self, params: ep.CompletionParams, ctx: CallContext
    ) -> AsyncGenerator[ep.StreamCompletionResponse, None]:
        """An async generator of text completion chunks; errors before the first are raised from the first `anext`."""
        ...

    async def create_image(self, request: ep.CreateImageRequest, ctx: CallContext) -> ep.CreateImageResponse:
        """Generated images."""
        ...

    async def create_transcription(
        self, request: ep.CreateTranscriptionRequest, ctx: CallContext
    ) -> ep.CreateTranscriptionResponse:
        """The text of an audio file."""
        ...

    def stream_speech(
        self, request: ep.StreamSpeechRequest, ctx: CallContext
    ) -> AsyncGenerator[ep.StreamSpeechResponse, None]:
        """Spoken audio, in pieces; the first names its media type. Errors before it are raised from the first
        `anext`."""
        ...

    async def create_moderation(
        self, request: ep.CreateModerationRequest, ctx: CallContext
    ) -> ep.CreateModerationResponse:
        """Moderation results, one per input."""
        ...

    async def rerank(self, request: ep.RerankRequest, ctx: CallContext) -> ep.RerankResponse:
        """Documents ordered by relevance to the query."""
        ...

    # The Responses API.

    async def create_response(self, params: rpb.ResponseParams, ctx: CallContext) -> rpb.Response:
        """A whole response (kept for later unless `store` is false)."""
        ...

    def stream_response(
        self, params: rpb.ResponseParams, ctx: CallContext
    ) -> AsyncGenerator[rpb.StreamResponseResponse, None]:
        """An async generator of a response's events; errors before the first are raised from the first `anext`."""
        ...

    async def get_response(self, response_id: str, ctx: CallContext) -> rpb.Response:
        """A stored response of the caller's (another key's is a `NotFoundError`)."""
        ...

    async def delete_response(self, response_id: str, ctx: CallContext) -> rpb.DeleteResponseResponse:
        """Forget a stored response of the caller's."""
        ...

    async def list_response_input_items(
        self, request: rpb.ListResponseInputItemsRequest, ctx: CallContext
    ) -> rpb.ListResponseInputItemsResponse:
        """A page of the input items of a stored response of the caller's."""
        ...


class ConfigControl(Protocol):
    """The running configuration as the doors see it: its hash, and the admin reload (`gateway.reload`)."""

    def config_hash(self) -> str:
        """The running configuration's hash; empty when this process cannot know it (a split front door)."""
        ...

    async def reload(self, ctx: CallContext) -> admin_pb2.ReloadResponse:
        """Read the configuration again and serve it if valid (admin only); a bad one raises `InvalidRequestError`
        with the path of the bad field, and the running one serves on."""
        ...
