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
from gateway.cache.embedding import vector_of
from gateway.cache.response_cache import ResponseCache
from gateway.config import GatewayConfig
from gateway.engine.admin import backends_report, check_admin, health_snapshot
from gateway.engine.contract import CallContext, UpstreamAttempt, new_request_id
from gateway.engine.counting import count_with_first_counter
from gateway.engine.health import HealthBoard, TargetSnapshot
from gateway.engine.metering import Meter, MeteredCall, UsageSink, estimate_prompt_tokens
from gateway.engine.probes import ActiveChecker
from gateway.engine.retry import Failover, Outcome, unanswered
from gateway.engine.router import Attempt, Plan, Router
from gateway.errors import GatewayError, NotFoundError, PermissionDeniedError, UpstreamError
from gateway.providers.base import Provider
from gateway.providers.registry import build_providers
from gateway.ratelimit.build import build_limiter
from gateway.ratelimit.limiter import RateLimiter
from gateway.stats.reporter import UsageReporter
from gateway.telemetry.build import Telemetry, build_telemetry
from gateway.telemetry.engine_sources import watch_cache, watch_health
from gateway.validation import validate_chat, validate_embeddings
from tollgate.auth.v1 import auth_pb2
from tollgate.gateway.v1 import admin_pb2
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
        health = HealthBoard(config.routing.health, time.monotonic)
        self._router = Router(config, rng, health)
        self._failover = Failover(config.routing.retry, health, clock=time.monotonic, rng=rng)
        active = config.routing.health.active
        self._checker = ActiveChecker(active, providers, health) if active is not None else None
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
        engine.observe(build_telemetry(config, auth, reporter, limiter))
        return engine

    def observe(self, telemetry: Telemetry) -> None:
        """Tell `telemetry` about every finished call (metrics, access log, spans)."""
        self.telemetry = telemetry
        self._meter.observer = telemetry
        if telemetry.metrics is not None:  # the engine's own parts, read when Prometheus scrapes
            watch_cache(telemetry.metrics.sources, self.cache)
            watch_health(telemetry.metrics.sources, self.health_snapshot)

    async def start(self) -> None:
        """Start the usage reporter (which replays what an earlier run spooled) and the active health checks."""
        if self._meter.sink is not None:
            await self._meter.sink.start()
        if self._checker is not None:
            self._checker.start()

    async def close(self) -> None:
        """Deliver or spool pending usage, then release every connection."""
        if self._checker is not None:
            await self._checker.close()
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
                pb.Model(id=name, created=self._created, owned_by=m.owned_by)
                for m in self._router.models
                for name in (m.name, *m.aliases)
                if principal.access.permits(name)
            ]
        )

    def health_snapshot(self) -> list[TargetSnapshot]:
        """Every target's health as plain data, for metrics (in process: no admin token needed)."""
        return health_snapshot(self._router)

    async def list_backends(self, ctx: CallContext) -> admin_pb2.ListBackendsResponse:
        """The health of every target; only for callers with the admin token (gateway.engine.admin)."""
        check_admin(ctx, self.config.routing.admin)
        return backends_report(self._router)

    async def create_chat_completion(
        self, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> pb.CreateChatCompletionResponse:
        """One whole completion, from the first target that answers."""
        validate_chat(params)
        with self._meter.call(ctx, "chat", params.model) as call:
            call.params = params
            await self._admit(call, auth_pb2.OPERATION_CHAT, lambda: self._chat_estimate(params))
            # Routed first: the cache files answers under the model and experiment arm that serve the request.
            plan = self._router.route(params.model, ctx)
            result = await self.cache.complete(
                params,
                ctx,
                lambda: self._first_success(plan, ctx, lambda provider, model: provider.complete(model, params)),
                served_by=plan.model,
                arm=plan.arm,
            )
            ctx.usage = result.usage
            return result

    async def create_embeddings(
        self, request: pb.CreateEmbeddingsRequest, ctx: CallContext
    ) -> pb.CreateEmbeddingsResponse:
        """Embeddings, from the first target that answers."""
        validate_embeddings(request)
        with self._meter.call(ctx, "embeddings", request.model) as call:
            await self._admit(call, auth_pb2.OPERATION_EMBEDDINGS, lambda: _embeddings_estimate(request))
            plan = self._router.route(request.model, ctx)
            result = await self._first_success(plan, ctx, lambda provider, model: provider.embed(model, request))
            ctx.usage = result.usage
            return result

    async def stream_chat_completion(self, params: pb.ChatCompletionParams, ctx: CallContext) -> Chunks:
        """The chunks of the first target that starts answering; later failures reach the caller as errors."""
        validate_chat(params)
        with self._meter.call(ctx, "chat", params.model) as call:
            call.params, call.stream = params, True
            await self._admit(call, auth_pb2.OPERATION_CHAT, lambda: self._chat_estimate(params))
            plan = self._router.route(params.model, ctx)
            first, chunks = await self.cache.open_stream(
                params,
                ctx,
                lambda: self._first_success(
                    plan, ctx, lambda provider, model: _open_stream(provider.stream(model, params))
                ),
                served_by=plan.model,
                arm=plan.arm,
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
        plan = self._router.route(model, own)
        return vector_of(await self._first_success(plan, own, lambda provider, name: provider.embed(name, request)))

    async def count_tokens(self, params: pb.ChatCompletionParams, ctx: CallContext) -> pb.CountTokensResponse:
        """The input tokens of `params`, from the first of its model's targets whose backend can count them."""
        validate_chat(params)
        await self._admit_counting(params, ctx)
        return await count_with_first_counter(self._router.plan(params.model), self._providers, params, ctx)

    async def _admit_counting(self, params: pb.ChatCompletionParams, ctx: CallContext) -> None:
        # Counting is free upstream and spends nothing here: auth and model access, no limits.
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

    async def _first_success(self, plan: Plan, ctx: CallContext, call: Callable[[Provider, str], Awaitable[T]]) -> T:
        """Try the planned attempts (gateway.engine.retry) until one succeeds; a failure no other attempt could fix
        is raised at once."""
        model = plan.requested
        ctx.route_rule, ctx.experiment, ctx.arm = plan.rule, plan.experiment, plan.arm

        async def attempt(attempt: Attempt) -> T:
            target = attempt.target
            ctx.attempts += 1
            ctx.backend, ctx.provider_model = target.backend, target.model
            tried = UpstreamAttempt(target.backend, target.model)  # telemetry reads ctx.tried after the call
            ctx.tried.append(tried)
            try:
                result = await call(self._providers[target.backend], target.model)
            except GatewayError as exc:
                tried.error = exc
                if exc.retryable:
                    log.warning(
                        "attempt failed",
                        extra={"request_id": ctx.request_id, "backend": target.backend, "error": repr(exc)},
                    )
                raise
            finally:
                ctx.upstream_seconds += tried.end()
            ctx.route = f"{attempt.model}>{target.backend}"
            return result

        outcome = Outcome(model=plan.model)
        result = await self._failover.run(plan.attempts, attempt, self._context_plan, outcome)
        if result is None:
            raise unanswered(model, outcome, self._router.soonest(plan))
        return result

    def _context_plan(self, failed: Attempt) -> list[Attempt]:
        return self._router.context_plan(failed.model)


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
