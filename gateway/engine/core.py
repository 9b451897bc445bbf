"""The engine's core: a plain async API over `tollgate.gateway.v1` messages, where every policy lives.

The grpc.aio servicer is a thin adapter over it, and the in-process front door calls it directly. It plans the
attempts for the requested model, calls providers, fails over before the first byte, and keeps usage exact (usage is
always asked for upstream and stripped here for callers who did not ask).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import TypeVar

from gateway.auth.authenticator import Authenticator, NoAuth, build_authenticator
from gateway.auth.principal import Principal
from gateway.cache.response_cache import ResponseCache
from gateway.cache.semantic import vector_of
from gateway.config import GatewayConfig
from gateway.engine.contract import CallContext, UpstreamAttempt, new_request_id
from gateway.engine.counting import count_with_first_counter
from gateway.engine.metering import Meter, MeteredCall, UsageSink, estimate_prompt_tokens
from gateway.engine.router import Router
from gateway.errors import GatewayError, InvalidRequestError, NotFoundError, PermissionDeniedError, UpstreamError
from gateway.providers.base import Provider
from gateway.providers.registry import build_providers
from gateway.ratelimit.build import build_limiter
from gateway.ratelimit.limiter import RateLimiter
from gateway.stats.reporter import UsageReporter
from gateway.telemetry.build import Telemetry, build_telemetry
from tollgate.auth.v1 import auth_pb2
from tollgate.gateway.v1 import gateway_pb2 as pb

T = TypeVar("T")
Chunks = AsyncGenerator[pb.StreamChatCompletionResponse, None]

log = logging.getLogger("tollgate.engine")


class EngineCore:
    """The routing engine for one configuration."""

    def __init__(
        self,
        config: GatewayConfig,
        providers: Mapping[str, Provider],
        *,
        auth: Authenticator | NoAuth | None = None,
        usage: UsageSink | None = None,
        limiter: RateLimiter | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._providers = providers
        self._auth = auth or NoAuth()
        self._limiter = limiter
        self.telemetry: Telemetry | None = None
        self._meter = Meter(config, usage, limiter)
        self._router = Router(config, rng)
        self._created = int(time.time())
        # A test may swap in its own (an injected clock).
        self.cache = ResponseCache.from_config(config, self._embed_for_cache)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> EngineCore:
        """Build every provider adapter, the auth client and the usage reporter the configuration names.

        Raises `ConfigError` on a bad backend. Call `start` before serving and `close` after.
        """
        reporter = UsageReporter(config.stats) if config.stats is not None else None
        auth, limiter = build_authenticator(config.auth), build_limiter(config)
        engine = cls(config, build_providers(config), auth=auth, usage=reporter, limiter=limiter)
        engine.observe(build_telemetry(config, auth, reporter, limiter, engine.cache))
        return engine

    def observe(self, telemetry: Telemetry) -> None:
        """Tell `telemetry` about every finished call (metrics, access log, spans)."""
        self.telemetry = telemetry
        self._meter.observer = telemetry

    async def start(self) -> None:
        """Start the usage reporter (which replays what an earlier run spooled)."""
        if self._meter.sink is not None:
            await self._meter.sink.start()

    async def close(self) -> None:
        """Deliver or spool pending usage, then release every connection."""
        if self._meter.sink is not None:
            await self._meter.sink.close()
        await self._auth.close()
        await self.cache.close()
        if self._limiter is not None:
            await self._limiter.close()
        for provider in self._providers.values():
            await provider.close()

    async def ready(self) -> bool:
        """The in-process engine is ready as soon as it exists."""
        return True

    async def list_models(self, ctx: CallContext) -> pb.ListModelsResponse:
        """The configured models the caller may use."""
        principal = await self._authenticate(ctx, "", auth_pb2.OPERATION_MODELS)
        return pb.ListModelsResponse(
            models=[
                pb.Model(id=m.name, created=self._created, owned_by=m.owned_by)
                for m in self._router.models
                if principal.access.permits(m.name)
            ]
        )

    async def create_chat_completion(
        self, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> pb.CreateChatCompletionResponse:
        """One whole completion, from the first target that answers."""
        with self._meter.call(ctx, "chat", params.model) as call:
            call.params = params
            _check_chat(params)
            await self._admit(call, auth_pb2.OPERATION_CHAT, lambda: self._chat_estimate(params))
            result = await self.cache.complete(
                params, ctx, lambda: self._first_success(params.model, ctx, lambda p, model: p.complete(model, params))
            )
            ctx.usage = result.usage
            return result

    async def create_embeddings(
        self, request: pb.CreateEmbeddingsRequest, ctx: CallContext
    ) -> pb.CreateEmbeddingsResponse:
        """Embeddings, from the first target that answers."""
        with self._meter.call(ctx, "embeddings", request.model) as call:
            if not request.input and not request.input_tokens:
                raise InvalidRequestError("input: must not be empty", param="input")
            await self._admit(call, auth_pb2.OPERATION_EMBEDDINGS, lambda: _embeddings_estimate(request))
            result = await self._first_success(
                request.model, ctx, lambda provider, model: provider.embed(model, request)
            )
            ctx.usage = result.usage
            return result

    async def stream_chat_completion(self, params: pb.ChatCompletionParams, ctx: CallContext) -> Chunks:
        """The chunks of the first target that starts answering; later failures reach the caller as errors."""
        with self._meter.call(ctx, "chat", params.model) as call:
            call.params, call.stream = params, True
            _check_chat(params)
            await self._admit(call, auth_pb2.OPERATION_CHAT, lambda: self._chat_estimate(params))
            first, chunks = await self.cache.open_stream(
                params,
                ctx,
                lambda: self._first_success(
                    params.model, ctx, lambda provider, model: _open_stream(provider.stream(model, params))
                ),
            )
            include_usage = params.stream_options.include_usage
            async with aclosing(chunks):
                if _account(first, ctx, include_usage):
                    yield first
                async for chunk in chunks:
                    if _account(chunk, ctx, include_usage):
                        yield chunk
            if not ctx.chunks:
                raise UpstreamError(f"backend '{ctx.backend}' streamed no choices")

    async def _embed_for_cache(self, model: str, text: str) -> list[float]:
        """An embedding for the semantic cache, through this gateway's providers: the gateway's cost, not a caller's."""
        request = pb.CreateEmbeddingsRequest(model=model, input=[text])
        own = CallContext(request_id=new_request_id())
        return vector_of(await self._first_success(model, own, lambda provider, name: provider.embed(name, request)))

    async def count_tokens(self, params: pb.ChatCompletionParams, ctx: CallContext) -> pb.CountTokensResponse:
        """The input tokens of `params`, from the first of its model's targets whose backend can count them."""
        await self._admit_counting(params, ctx)
        return await count_with_first_counter(self._router.plan(params.model), self._providers, params, ctx)

    async def _admit_counting(self, params: pb.ChatCompletionParams, ctx: CallContext) -> None:
        # Counting is free upstream and spends nothing here: auth and model access, no limits.
        _check_chat(params)
        principal = await self._authenticate(ctx, params.model, auth_pb2.OPERATION_CHAT)
        if not principal.access.permits(params.model):
            raise PermissionDeniedError(
                f"This API key may not use the model '{params.model}'", param="model", code="model_not_allowed"
            )
        if not self._router.knows(params.model):
            raise NotFoundError(f"The model '{params.model}' does not exist", param="model")

    async def _authenticate(self, ctx: CallContext, model: str, operation: auth_pb2.Operation.ValueType) -> Principal:
        principal = await self._auth.authenticate(ctx, model, operation)
        ctx.principal = principal
        return principal

    async def _admit(
        self, call: MeteredCall, operation: auth_pb2.Operation.ValueType, estimate: Callable[[], int]
    ) -> None:
        """Authenticate the caller, check that it may use the model, and admit the call against its limits."""
        ctx, model = call.ctx, call.model
        principal = await self._authenticate(ctx, model, operation)
        if not principal.access.permits(model):
            raise PermissionDeniedError(
                f"This API key may not use the model '{model}'", param="model", code="model_not_allowed"
            )
        if self._limiter is None:
            return
        if not self._router.knows(model):  # before limits: an unknown name must not make counters
            raise NotFoundError(f"The model '{model}' does not exist", param="model")
        admitted = await self._limiter.admit(ctx.request_id, principal, model, estimate())
        ctx.limit_headers = admitted.headers
        if admitted.denial is not None:
            raise admitted.denial
        call.lease = admitted.lease

    def _chat_estimate(self, params: pb.ChatCompletionParams) -> int:
        """What a chat call is charged against token limits before its usage is known: the prompt plus its cap."""
        if params.HasField("max_completion_tokens"):
            answer = params.max_completion_tokens
        elif params.HasField("max_tokens"):
            answer = params.max_tokens
        else:
            answer = self.config.limits.output_tokens_estimate
        return estimate_prompt_tokens(params) + answer * max(1, params.n)

    async def _first_success(self, model: str, ctx: CallContext, call: Callable[[Provider, str], Awaitable[T]]) -> T:
        """Try each planned attempt until one succeeds; retryable failures move on, others are raised at once."""
        plan = self._router.plan(model)
        failure: GatewayError | None = None
        for attempt in plan:
            target = attempt.target
            ctx.attempts += 1
            ctx.backend, ctx.provider_model = target.backend, target.model
            tried = UpstreamAttempt(target.backend, target.model)  # telemetry reads ctx.tried after the call
            ctx.tried.append(tried)
            try:
                result = await call(self._providers[target.backend], target.model)
            except GatewayError as exc:
                tried.error = exc
                if not exc.retryable:
                    raise
                log.warning(
                    "attempt failed",
                    extra={"request_id": ctx.request_id, "backend": target.backend, "error": repr(exc)},
                )
                failure = exc
                continue
            finally:
                ctx.upstream_seconds += tried.end()
            ctx.route = f"{attempt.model}>{target.backend}"
            return result
        assert failure is not None  # a plan always has at least one attempt
        raise _exhausted(model, len(plan), failure)


async def _open_stream(chunks: Chunks) -> tuple[pb.StreamChatCompletionResponse, Chunks]:
    """Wait for the first chunk, so that a failure before it can still move on to another target."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        raise UpstreamError("the backend ended the stream without sending anything") from None
    except BaseException:
        await chunks.aclose()
        raise
    return first, chunks


def _account(chunk: pb.StreamChatCompletionResponse, ctx: CallContext, include_usage: bool) -> bool:
    """Record the usage a chunk carries; whether the caller gets the chunk (a usage-only one only if it asked)."""
    if chunk.choices:
        if not ctx.chunks:
            ctx.first_chunk_at = time.perf_counter()
        ctx.chunks += 1
    if chunk.HasField("usage"):
        ctx.usage = chunk.usage
        if include_usage:
            return True
        chunk.ClearField("usage")
    return len(chunk.choices) > 0


def _embeddings_estimate(request: pb.CreateEmbeddingsRequest) -> int:
    return sum(len(text) for text in request.input) // 4 + sum(len(ids.ids) for ids in request.input_tokens) + 1


def _check_chat(params: pb.ChatCompletionParams) -> None:
    # The front door validates fully; these are the invariants a direct gRPC caller could still break.
    if not params.model:
        raise InvalidRequestError("model: required; name the model to use", param="model", code="missing_model")
    if not params.messages:
        raise InvalidRequestError("messages: must not be empty", param="messages")


def _exhausted(model: str, attempts: int, last: GatewayError) -> GatewayError:
    """The error for a model none of whose attempts succeeded: the last failure, of the same kind, with context."""
    if attempts == 1:
        return last
    message = f"All {attempts} attempts for model '{model}' failed; the last: {last.message}"
    return type(last)(message, code=last.code, param=last.param, retry_after=last.retry_after, status=last.http_status)
