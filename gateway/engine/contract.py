"""What the front door needs from the engine: the `Engine` protocol and the per-call context.

Two implementations: `EngineCore` in the same process (a plain method call, no serialization) and `RemoteEngine`
over a grpc.aio channel. Both take and return `tollgate.gateway.v1` messages, and both raise `GatewayError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.config import Secret
from gateway.credentials import mask_credentials
from tollgate.gateway.v1 import admin_pb2
from tollgate.gateway.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    from gateway.auth.principal import Principal


def new_request_id() -> str:
    """A fresh request id: 24 hex characters, unique enough to correlate logs and usage records."""
    return "req_" + os.urandom(12).hex()


# The cache's status on every answer of a model that caches (hit, miss or bypass), and the request headers that
# control the cache, which a split front door must pass on to the engine.
CACHE_STATUS_HEADER = "x-tollgate-cache"
CACHE_REQUEST_HEADERS = ("cache-control", CACHE_STATUS_HEADER)
# The W3C traceparent of the front door's span while tracing is on ("" otherwise): `RemoteEngine` sends it as
# gRPC metadata, so the engine's spans join the front door's trace across the hop.
TRACE_PARENT: ContextVar[str] = ContextVar("tollgate_trace_parent", default="")
# Set when an engine took the call (in this process, or across the hop): the front door's own access-log line is
# then left to the engine's, which knows the usage.
ENGINE_TOOK_CALL: ContextVar[bool] = ContextVar("tollgate_engine_took_call", default=False)

_CLIENT_ID_MAX = 128
_BEARER = "bearer "


def printable(value: str) -> bool:
    """Printable ASCII: what a gRPC text metadata value may hold, and all that a key or a forwarded header may be
    (aiohttp passes invalid UTF-8 through as surrogates)."""
    return value.isascii() and value.isprintable()


def client_request_id(value: str | None) -> str:
    """A caller's own `x-request-id`, kept for correlation: at most 128 printable ASCII characters, else nothing;
    a credential in it (a key pasted into the wrong header) is masked before it reaches a usage record or a log."""
    if not value or len(value) > _CLIENT_ID_MAX or not printable(value):
        return ""
    return mask_credentials(value)


def api_key(headers: Mapping[str, str]) -> Secret | None:
    """The key from `authorization: Bearer …`, else `x-api-key` (HTTP headers or gRPC metadata), kept secret."""
    auth = headers.get("authorization", "")
    key = auth[len(_BEARER) :] if auth[: len(_BEARER)].lower() == _BEARER else headers.get("x-api-key", "")
    return Secret(key) if key else None


@dataclass(slots=True)
class UpstreamAttempt:
    """One call to a provider: which backend, when, and the error that ended it (None: it answered)."""

    backend: str
    model: str
    started: float = field(default_factory=time.perf_counter)
    ended: float = 0.0
    error: BaseException | None = None

    def end(self) -> float:
        """Mark the attempt over; the seconds it took."""
        self.ended = time.perf_counter()
        return self.ended - self.started


@dataclass(slots=True)
class CallContext:
    """One call's credentials and identity in, and what the engine learned about it out."""

    # The gateway's own id, unique per request: what usage records are deduplicated on, so never the caller's.
    request_id: str
    api_key: Secret | None = None
    client_request_id: str = ""  # the caller's own `x-request-id`, for correlation only
    peer: str = ""  # the client's address
    # The request's headers (HTTP headers, or gRPC metadata); the engine forwards the configured few to auth.
    headers: Mapping[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)  # when the call arrived (perf_counter seconds)
    # Filled in by the engine.
    principal: Principal | None = None  # who the caller is, once authenticated
    upstream_seconds: float = 0.0  # time spent waiting on providers, for the overhead figure
    backend: str = ""  # the backend that answered, or the last one tried
    provider_model: str = ""
    route: str = ""  # the model and backend that answered, e.g. "gpt-4o-mini>openai"
    route_rule: str = ""  # the route rule that chose the model, if one did
    experiment: str = ""  # the experiment the model runs, if any…
    arm: str = ""  # …and this request's arm in it: "control" or "treatment"
    attempts: int = 0
    usage: pb.Usage | None = None
    limit_headers: Mapping[str, str] = field(default_factory=dict)  # `x-ratelimit-*`, for every answer
    first_chunk_at: float = 0.0  # perf_counter seconds when the first chunk went out; 0 when none did
    chunks: int = 0  # chunks with choices that went out
    cache_status: str = ""  # "hit", "miss" or "bypass" when the model caches; empty when it does not
    tried: list[UpstreamAttempt] = field(default_factory=list)  # every upstream attempt, for metrics and traces
    trace_parent: str = ""  # a W3C traceparent from the front door across the gRPC hop (split mode)
    auth_check: tuple[float, float] | None = None  # when this call's auth Check call started and ended (perf_counter)


class Engine(Protocol):
    """The routing engine as the front door sees it."""

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
