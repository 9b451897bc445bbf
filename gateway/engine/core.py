"""The engine's core: a plain async API over `tollgate.gateway.v1` messages, where every policy lives.

The grpc.aio servicer is a thin adapter over it, and the in-process front door calls it directly. It plans the
attempts for the requested model, calls providers, fails over before the first byte, and keeps usage exact (usage is
always asked for upstream and stripped here for callers who did not ask).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import TypeVar, cast

from gateway.auth.authenticator import Authenticator, NoAuth
from gateway.auth.principal import Principal
from gateway.cache.control import CACHE_STATUS_HEADER
from gateway.cache.embedding import vectors_of
from gateway.cache.response_cache import HIT, NO_CACHE, CacheLookup, ResponseCache, replay
from gateway.call import CallContext, new_request_id
from gateway.config import GatewayConfig
from gateway.engine.admin import backends_report, check_admin, health_snapshot
from gateway.engine.counting import count_with_first_counter
from gateway.engine.endpoints import Endpoints
from gateway.engine.health import HealthBoard, TargetSnapshot
from gateway.engine.metering import Meter, UsageSink, estimate_prompt_tokens
from gateway.engine.probes import ActiveChecker
from gateway.engine.record import CallObserver, CallRecord, Spent, UpstreamAttempt
from gateway.engine.responses import ResponsesFlow
from gateway.engine.resume import Transcript
from gateway.engine.retry import Failover, Outcome, Verdict, open_stream, unanswered
from gateway.engine.router import Attempt, Plan, Router
from gateway.engine.routes import Caller
from gateway.errors import (
    DeadlineExceededError,
    GatewayError,
    NotFoundError,
    UpstreamError,
    model_not_allowed,
)
from gateway.providers.base import Continuer, Provider, can_continue, with_prefix
from gateway.providers.wake import MORE_ATTEMPTS
from gateway.ratelimit.limiter import RateLimiter
from gateway.response_store import MemoryResponseStore, ResponseStore
from gateway.routing.decision import DecisionObserver
from gateway.validation import validate_chat, validate_embeddings
from tollgate.auth.v1 import auth_pb2
from tollgate.gateway.v1 import admin_pb2
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import responses_pb2 as rpb

T = TypeVar("T")
Chunk = pb.StreamChatCompletionResponse
Chunks = AsyncGenerator[Chunk, None]

log = logging.getLogger("tollgate.engine")


@dataclass(frozen=True, slots=True)
class EngineParts:
    """What an engine is built from (the composition root, `gateway.assemble`, makes them from a config)."""

    providers: Mapping[str, Provider]
    auth: Authenticator | NoAuth = field(default_factory=NoAuth)
    usage: UsageSink | None = None
    limiter: RateLimiter | None = None
    cache: ResponseCache | None = None  # None: nothing is cached
    observer: CallObserver | None = None  # told about every finished call (telemetry)
    decisions: DecisionObserver | None = None  # told about route rules' decisions from the prompt (metrics)
    health: HealthBoard | None = None  # None: a fresh one (a reload hands over the unchanged targets' health)
    responses: ResponseStore | None = None  # stored responses; None: this process's memory


class EngineCore:
    """The routing engine for one configuration: it receives its parts, owns their lifecycle, and emits every
    finished call to its observer."""

    def __init__(self, config: GatewayConfig, parts: EngineParts, *, rng: random.Random | None = None) -> None:
        self.config = config
        self._providers = parts.providers
        self._auth = parts.auth
        self._limiter = parts.limiter
        self._meter = Meter(config, parts.usage, parts.limiter, parts.observer)
        health = parts.health or HealthBoard(config.routing.health, time.monotonic)
        self._router = Router(config, rng, health)
        # Semantic route rules embed through our own providers.
        self._router.routes.connect(self._embed_texts, parts.decisions)
        self._failover = Failover(config.routing.retry, health, clock=time.monotonic, rng=rng)
        active = config.routing.health.active
        self._checker = ActiveChecker(active, parts.providers, health) if active is not None else None
        self._created = int(time.time())
        self._wakes = any(b.wake is not None for b in config.backends)
        self._cache = parts.cache
        self._endpoints = Endpoints(self)
        self._response_store = parts.responses or MemoryResponseStore(config.responses)
        self._responses = ResponsesFlow(self, self._response_store)
        self._stream_failover = {m.name for m in config.models if m.stream_failover}

    async def start(self) -> None:
        """Start the usage reporter (which replays what an earlier run spooled) and the active health checks."""
        if self._meter.sink is not None:
            await self._meter.sink.start()
        if self._checker is not None:
            self._checker.start()
        await self._router.routes.prepare()  # embeds semantic rules' examples

    async def close(self, keep: Collection[object] = ()) -> None:
        """Deliver or spool pending usage, then release every connection; the parts in `keep` (which the engine of
        a reloaded config took over) are left running."""
        kept = {id(part) for part in keep}
        if self._checker is not None:
            await self._checker.close()
        for part in (
            self._meter.sink,
            self._auth,
            self._router.routes,
            self._cache,
            self._limiter,
            self._response_store,
        ):
            if part is not None and id(part) not in kept:
                await part.close()
        for provider in self._providers.values():
            if id(provider) not in kept:
                await provider.close()

    async def ready(self) -> bool:
        """The in-process engine is ready as soon as it exists."""
        return True

    async def list_models(self, ctx: CallContext) -> pb.ListModelsResponse:
        """The configured models and aliases the caller may be served under (an alias of a model it may not use is
        not one)."""
        principal = (await self._auth.check(ctx, "", auth_pb2.OPERATION_MODELS)).principal
        routes = self._router.routes
        return pb.ListModelsResponse(
            models=[
                pb.Model(id=name, created=self._created, owned_by=m.owned_by)
                for m in self._router.models
                for name in (m.name, *m.aliases)
                if routes.serves(principal, name)
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
        self, params: pb.ChatCompletionParams, ctx: CallContext, *, operation: str = "chat"
    ) -> pb.CreateChatCompletionResponse:
        """One whole completion: from the cache, or from the first target that answers (`operation`: what the call
        is metered as; the Responses API's translated calls are "responses")."""
        validate_chat(params)
        with self._meter.call(ctx, operation, params.model) as call:
            call.params = params
            await self._admit(call, auth_pb2.OPERATION_CHAT, lambda: self._chat_estimate(params))
            # Routed first: the cache files answers under the model and experiment arm that serve the request.
            # Rules that read the prompt may await (semantic, classifier): only then is it read.
            plan = self._route(call, await self._decide(call, params) if self._router.routes.reads_prompts else None)
            found = await self._look_up(call, plan)
            try:
                if found.answer is not None:
                    result = await found.answer.as_completion()
                else:
                    result = await self._first_success(plan, call, lambda p, model: p.complete(model, params))
                    found.store(result, call.served_by)
            finally:
                found.release()
            call.usage = result.usage
            return result

    async def create_embeddings(
        self, request: pb.CreateEmbeddingsRequest, ctx: CallContext
    ) -> pb.CreateEmbeddingsResponse:
        """Embeddings, from the first target that answers."""
        validate_embeddings(request)
        with self._meter.call(ctx, "embeddings", request.model) as call:
            await self._admit(call, auth_pb2.OPERATION_EMBEDDINGS, lambda: _embeddings_estimate(request))
            plan = self._route(call)
            result = await self._first_success(plan, call, lambda p, model: p.embed(model, request))
            call.usage = result.usage
            return result

    async def stream_chat_completion(
        self, params: pb.ChatCompletionParams, ctx: CallContext, *, operation: str = "chat"
    ) -> Chunks:
        """The chunks of the first target that starts answering; later failures reach the caller as errors, and
        the target's health as its attempt's outcome."""
        validate_chat(params)
        with self._meter.call(ctx, operation, params.model) as call:
            call.params, call.stream = params, True
            await self._admit(call, auth_pb2.OPERATION_CHAT, lambda: self._chat_estimate(params))
            plan = self._route(call, await self._decide(call, params) if self._router.routes.reads_prompts else None)
            first, chunks, verdict = await self._open(plan, call, params)
            include_usage = params.stream_options.include_usage
            # With mid-stream failover, what the caller has of the answer, for another target to continue it.
            said = Transcript(params) if plan.model in self._stream_failover else None
            while True:
                failure: BaseException | None = None
                try:
                    async with aclosing(chunks):
                        if (said is None or said.take(first)) and _account(first, call, include_usage):
                            yield first
                        async for chunk in chunks:
                            if (said is None or said.take(chunk)) and _account(chunk, call, include_usage):
                                yield chunk
                except (GeneratorExit, asyncio.CancelledError):
                    raise  # the caller went away from a target that was answering
                except BaseException as exc:  # a failure after the first byte: the target's, unless it is a bug
                    failure = exc
                finally:
                    if verdict is not None:
                        verdict.settle(failure)
                if failure is None:
                    break
                if call.tried and call.tried[-1].error is None:
                    call.tried[-1].error = failure
                resumed = await self._resume(plan, call, said, failure) if said is not None else None
                if resumed is None:
                    raise failure
                first, chunks, verdict = resumed
            if not call.chunks:
                raise UpstreamError(f"backend '{call.backend}' streamed no choices")

    async def _open(
        self, plan: Plan, call: CallRecord, params: pb.ChatCompletionParams
    ) -> tuple[Chunk, Chunks, Verdict | None]:
        """The first chunk, the rest, and the open health verdict of the attempt that answered (None: the cache)."""
        found = await self._look_up(call, plan)
        if found.answer is not None:
            stored = found.answer.as_chunks()
            return stored[0], replay(stored[1:]), None
        outcome = Outcome(model=plan.model, hold=True)
        try:
            first, rest = await self._first_success(
                plan, call, lambda p, model: open_stream(p.stream(model, params)), outcome
            )
        except BaseException:
            found.release()
            raise
        return first, found.record(first, rest, call.served_by), outcome.open

    async def _resume(
        self, plan: Plan, call: CallRecord, said: Transcript, failure: BaseException
    ) -> tuple[Chunk, Chunks, Verdict | None] | None:
        """Another target's continuation of an answer whose target failed after its first byte (mid-stream
        failover), or None when there is none: the caller then gets `failure` in-band, as without failover."""
        if not isinstance(failure, GatewayError) or not failure.retryable or not call.tried:
            return None  # a bug, or an answer the upstream refused to give (another target would refuse it too)
        cut = call.tried[-1]
        said.cut.append((cut.backend, cut.model))
        if said.blocked:
            call.resumes.append("not_continuable")
            return None
        prefix = said.prefix
        # With nothing said yet, any target can start the answer afresh; after that, only one that can continue it.
        attempts = [
            a
            for a in plan.attempts
            if (a.target.backend, a.target.model) not in said.cut
            and (not prefix or can_continue(self._providers[a.target.backend]))
        ]
        if not attempts:
            call.resumes.append("no_target")
            return None
        assert call.params is not None
        self._carry(call, call.params)
        params = said.params
        continued = with_prefix(params, prefix) if prefix else params
        outcome = Outcome(model=plan.model, hold=True, resume=True)
        try:
            first, rest = await self._first_success(
                replace(plan, attempts=attempts),
                call,
                lambda p, model: open_stream(
                    cast(Continuer, p).continue_stream(model, params, prefix) if prefix else p.stream(model, params)
                ),
                outcome,
            )
        except GatewayError as exc:
            log.warning("stream not continued", extra={"request_id": call.ctx.request_id, "error": repr(exc)})
            call.resumes.append("unanswered")
            return None
        call.resumes.append("resumed")
        call.params = continued  # what the continuing target was asked: its prompt, should it be cut too
        said.continuing()
        return first, rest, outcome.open

    @staticmethod
    def _carry(call: CallRecord, params: pb.ChatCompletionParams) -> None:
        """Bill the cut attempt on the call: its prompt and what it streamed, estimated (it never said its usage)."""
        carried = call.carried or Spent(estimated=True)
        carried.input_tokens += estimate_prompt_tokens(params)
        carried.output_tokens += call.chunks - call.carried_chunks
        call.carried, call.carried_chunks = carried, call.chunks

    async def _look_up(self, call: CallRecord, plan: Plan) -> CacheLookup:
        """The cache's hit or claim for this call; the semantic step gets its embedding from the engine's own
        providers here (the gateway's cost, not a caller's)."""
        assert call.params is not None
        if self._cache is None:
            return NO_CACHE
        found = await self._cache.lookup(
            call.params, call.ctx.headers, call.principal, served_by=plan.model, arm=plan.arm
        )
        if found.wants is not None:
            try:
                vector = await self._embedding(*found.wants)
            except asyncio.CancelledError:
                found.release()
                raise
            await found.similar(vector)
        if found.status:
            call.cache_status = found.status
            call.ctx.reply.headers[CACHE_STATUS_HEADER] = found.status
            if found.status == HIT:
                call.route = "cache"
        return found

    async def _embedding(self, model: str, text: str) -> list[float] | None:
        """An embedding for the semantic cache; None when it failed (a miss, never a failed request)."""
        try:
            return (await self._embed_texts(model, [text]))[0]
        except Exception as exc:
            log.warning("semantic cache: embedding failed, treated as a miss: %r", exc)
            return None

    async def _embed_texts(self, model: str, texts: list[str]) -> list[list[float]]:
        """Embeddings for semantic route rules, through this gateway's providers like the semantic cache's."""
        request = pb.CreateEmbeddingsRequest(model=model, input=texts)
        own = CallRecord(CallContext(request_id=new_request_id()), "embeddings", model)
        plan = self._router.route(model)
        return vectors_of(await self._first_success(plan, own, lambda p, name: p.embed(name, request)))

    async def count_tokens(self, params: pb.ChatCompletionParams, ctx: CallContext) -> pb.CountTokensResponse:
        """The input tokens of `params`, from the first of its model's targets whose backend can count them."""
        call = CallRecord(ctx, "count_tokens", params.model)
        try:
            await self._admit_counting(params, call)
            plan = self._router.plan(params.model, Caller(ctx.headers, call.principal))
            return await count_with_first_counter(plan, self._providers, params, call)
        finally:
            ctx.reply.upstream_seconds = call.upstream_seconds

    async def _admit_counting(self, params: pb.ChatCompletionParams, call: CallRecord) -> None:
        # Counting is free upstream and spends nothing here: auth and model access, no limits.
        validate_chat(params)
        principal = await self._authenticate(call, params.model, auth_pb2.OPERATION_CHAT)
        if not principal.access.permits(params.model):
            raise model_not_allowed(params.model)
        if not self._router.knows(params.model):
            raise NotFoundError(f"The model '{params.model}' does not exist", param="model")

    async def _authenticate(self, call: CallRecord, model: str, operation: auth_pb2.Operation.ValueType) -> Principal:
        checked = await self._auth.check(call.ctx, model, operation)
        call.principal, call.auth_check = checked.principal, checked.check
        return checked.principal

    async def _admit(
        self, call: CallRecord, operation: auth_pb2.Operation.ValueType, estimate: Callable[[], int]
    ) -> None:
        """Authenticate the caller, check that it may use the name it asked for (what the name leads to is checked
        by routing), and admit the call against its limits."""
        ctx, model = call.ctx, call.model
        principal = await self._authenticate(call, model, operation)
        if not principal.access.permits(model):
            raise model_not_allowed(model)
        if self._limiter is None:
            return
        if not self._router.knows(model):  # before limits: an unknown name must not make counters
            raise NotFoundError(f"The model '{model}' does not exist", param="model")
        admitted = await self._limiter.admit(ctx.request_id, principal, model, estimate())
        ctx.reply.headers.update(admitted.headers)
        if admitted.denial is not None:
            raise admitted.denial
        call.lease = admitted.lease

    def _route(self, call: CallRecord, decided: tuple[str, str] | None = None) -> Plan:
        """The plan for the call's model (as the route table `decided` from the prompt, if it did), and how it was
        chosen on the record."""
        plan = self._router.route(call.model, Caller(call.ctx.headers, call.principal), decided)
        call.route_rule, call.experiment, call.arm = plan.rule, plan.experiment, plan.arm
        return plan

    async def _decide(self, call: CallRecord, params: pb.ChatCompletionParams) -> tuple[str, str]:
        """The route rules that read the prompt (gateway.routing), run only when some rule does."""
        caller = Caller(call.ctx.headers, call.principal)
        return await self._router.routes.decide(params, caller, call.ctx.request_id)

    def _chat_estimate(self, params: pb.ChatCompletionParams) -> int:
        """What a chat call is charged against token limits before its usage is known: the prompt plus its cap."""
        if params.HasField("max_completion_tokens"):
            answer = params.max_completion_tokens
        elif params.HasField("max_tokens"):
            answer = params.max_tokens
        else:
            answer = self.config.limits.output_tokens_estimate
        return estimate_prompt_tokens(params) + answer * max(1, params.n)

    async def _first_success(
        self,
        plan: Plan,
        call: CallRecord,
        run: Callable[[Provider, str], Awaitable[T]],
        outcome: Outcome | None = None,
    ) -> T:
        """Try the planned attempts (gateway.engine.retry) until one succeeds; a failure no other attempt could fix
        is raised at once."""
        ctx = call.ctx

        async def attempt(attempt: Attempt) -> T:
            target = attempt.target
            call.attempts += 1
            call.backend, call.provider_model = target.backend, target.model
            tried = UpstreamAttempt(target.backend, target.model)  # telemetry reads the record's tried after the call
            call.tried.append(tried)
            if self._wakes:  # a sleeping backend holds the last attempt, and defers others (gateway.providers.wake)
                MORE_ATTEMPTS.set(attempt is not plan.attempts[-1])
            try:
                result = await run(self._providers[target.backend], target.model)
            except GatewayError as exc:
                tried.error = exc
                if exc.retryable:
                    log.warning(
                        "attempt failed",
                        extra={"request_id": ctx.request_id, "backend": target.backend, "error": repr(exc)},
                    )
                raise
            finally:
                call.upstream_seconds += tried.end()
                ctx.reply.upstream_seconds = call.upstream_seconds
            call.route, call.served_by = f"{attempt.model}>{target.backend}", attempt.serves
            return result

        def bigger(failed: Attempt) -> list[Attempt]:  # after a context-length error: what the caller may use
            return self._router.context_plan(failed.model, plan.access)

        outcome = outcome or Outcome(model=plan.model)
        if ctx.deadline is not None:  # a gRPC caller's own deadline
            outcome.caller_left = ctx.deadline - (time.perf_counter() - ctx.started)
            if outcome.caller_left <= 0:
                raise DeadlineExceededError()
        result = await self._failover.run(plan.attempts, attempt, bigger, outcome)
        if result is None:
            raise unanswered(plan.requested, outcome, self._router.soonest(plan))
        return result

    # Legacy completions, images, audio, moderations, rerank: their own module, over the steps above.
    async def create_completion(self, params: ep.CompletionParams, ctx: CallContext) -> ep.CreateCompletionResponse:
        """A whole legacy text completion (gateway.engine.endpoints)."""
        return await self._endpoints.create_completion(params, ctx)

    def stream_completion(
        self, params: ep.CompletionParams, ctx: CallContext
    ) -> AsyncGenerator[ep.StreamCompletionResponse, None]:
        """A streamed legacy text completion."""
        return self._endpoints.stream_completion(params, ctx)

    async def create_image(self, request: ep.CreateImageRequest, ctx: CallContext) -> ep.CreateImageResponse:
        """Generated images."""
        return await self._endpoints.create_image(request, ctx)

    async def create_transcription(
        self, request: ep.CreateTranscriptionRequest, ctx: CallContext
    ) -> ep.CreateTranscriptionResponse:
        """The text of an audio file."""
        return await self._endpoints.create_transcription(request, ctx)

    def stream_speech(
        self, request: ep.StreamSpeechRequest, ctx: CallContext
    ) -> AsyncGenerator[ep.StreamSpeechResponse, None]:
        """Spoken audio, streamed."""
        return self._endpoints.stream_speech(request, ctx)

    async def create_moderation(
        self, request: ep.CreateModerationRequest, ctx: CallContext
    ) -> ep.CreateModerationResponse:
        """Moderation results."""
        return await self._endpoints.create_moderation(request, ctx)

    async def rerank(self, request: ep.RerankRequest, ctx: CallContext) -> ep.RerankResponse:
        """Documents ordered by relevance."""
        return await self._endpoints.rerank(request, ctx)

    # The Responses API (gateway.engine.responses).

    async def create_response(self, params: rpb.ResponseParams, ctx: CallContext) -> rpb.Response:
        """A whole response."""
        return await self._responses.create(params, ctx)

    def stream_response(
        self, params: rpb.ResponseParams, ctx: CallContext
    ) -> AsyncGenerator[rpb.StreamResponseResponse, None]:
        """A response's stream events."""
        return self._responses.stream(params, ctx)

    async def get_response(self, response_id: str, ctx: CallContext) -> rpb.Response:
        """A stored response of the caller's."""
        return await self._responses.get(response_id, ctx)

    async def delete_response(self, response_id: str, ctx: CallContext) -> rpb.DeleteResponseResponse:
        """Forget a stored response of the caller's."""
        return await self._responses.delete(response_id, ctx)

    async def list_response_input_items(
        self, request: rpb.ListResponseInputItemsRequest, ctx: CallContext
    ) -> rpb.ListResponseInputItemsResponse:
        """A page of a stored response's input items."""
        return await self._responses.input_items(request, ctx)


def _account(chunk: pb.StreamChatCompletionResponse, call: CallRecord, include_usage: bool) -> bool:
    """Record the usage a chunk carries; whether the caller gets the chunk (a usage-only one only if it asked)."""
    has_choices = len(chunk.choices) > 0
    if has_choices:
        if not call.chunks:
            call.first_chunk_at = time.perf_counter()
        call.chunks += 1
    if chunk.HasField("usage"):
        if call.carried is not None:  # a continued stream: what its cut attempts used counts too
            _add_usage(chunk.usage, call.carried)
        call.usage = chunk.usage
        if include_usage:
            return True
        chunk.ClearField("usage")
    return has_choices


def _add_usage(usage: pb.Usage, spent: Spent) -> None:
    usage.prompt_tokens += spent.input_tokens
    usage.completion_tokens += spent.output_tokens
    usage.total_tokens += spent.input_tokens + spent.output_tokens


def _embeddings_estimate(request: pb.CreateEmbeddingsRequest) -> int:
    return sum(len(text) for text in request.input) // 4 + sum(len(ids.ids) for ids in request.input_tokens) + 1
