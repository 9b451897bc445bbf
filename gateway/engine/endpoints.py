"""The endpoints beside chat and embeddings, through the engine's own steps: legacy text completions (whole and
streamed), images, audio transcription and speech (streamed), moderations and rerank.

Each call takes the path an embeddings call takes: validated by `gateway.endpoint_rules`, metered as one
`CallRecord` (usage record with cost, metrics, spans), authenticated with model access and admitted against the
caller's limits (`EngineCore._admit`), routed (`_route`), and answered by the first planned target that succeeds
(`_first_success`: health, timeouts, retries, fallbacks). The only step of their own: a plan keeps the targets whose
provider serves the endpoint (`gateway.providers.capabilities`), and a model none of whose targets does is a 400
naming the model. Streams hold their attempt's health verdict until they end, as chat streams do. Nothing is cached.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from google.protobuf.message import Message

from gateway.call import CallContext
from gateway.endpoint_rules import (
    validate_completion,
    validate_image,
    validate_moderation,
    validate_rerank,
    validate_speech,
    validate_transcription,
)
from gateway.engine.record import CallRecord
from gateway.engine.retry import Outcome, Verdict, open_stream
from gateway.engine.router import Plan
from gateway.errors import InvalidRequestError, UpstreamError
from gateway.providers import capabilities as cap
from gateway.providers.base import Provider
from gateway.providers.capabilities import EndpointServer, serves
from tollgate.auth.v1 import auth_pb2
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    from gateway.engine.core import EngineCore

R = TypeVar("R")
C = TypeVar("C")
_CHARS_PER_TOKEN = 4


class _HasUsage(Protocol):
    """An answer that may report its usage (moderations report none)."""

    @property
    def usage(self) -> ep.TokenUsage: ...


class Endpoints:
    """The endpoints of `endpoints.proto` for one engine, over its shared steps."""

    def __init__(self, core: EngineCore) -> None:
        self._core = core

    async def create_completion(self, params: ep.CompletionParams, ctx: CallContext) -> ep.CreateCompletionResponse:
        """A whole legacy completion."""
        validate_completion(params)
        return await self._unary(
            ctx,
            cap.COMPLETIONS,
            params.model,
            auth_pb2.OPERATION_COMPLETIONS,
            lambda: self._completion_estimate(params),
            lambda p, model: p.complete_text(model, params),
        )

    async def stream_completion(
        self, params: ep.CompletionParams, ctx: CallContext
    ) -> AsyncGenerator[ep.StreamCompletionResponse, None]:
        """A streamed legacy completion; the usage chunk only for callers who asked for it (it is always asked
        upstream, so usage is exact)."""
        validate_completion(params)
        with self._core._meter.call(ctx, cap.COMPLETIONS, params.model) as call:
            call.stream = True
            call.prompt_estimate = _prompt_tokens(params)  # what a stream cut short is billed for its prompt
            first, rest, verdict = await self._open(
                call,
                auth_pb2.OPERATION_COMPLETIONS,
                lambda: self._completion_estimate(params),
                lambda p, model: p.stream_text(model, params),
            )
            async with aclosing(_settled(first, rest, verdict)) as chunks:
                async for chunk in chunks:
                    if _account_text(chunk, call, params.include_usage):
                        yield chunk
            if not call.chunks:
                raise UpstreamError(f"backend '{call.backend}' streamed no choices")

    async def create_image(self, request: ep.CreateImageRequest, ctx: CallContext) -> ep.CreateImageResponse:
        """Generated images; each is counted for its price."""
        validate_image(request)
        with self._core._meter.call(ctx, cap.IMAGES, request.model) as call:
            result = await self._answer(
                call, auth_pb2.OPERATION_IMAGES, lambda: 1, lambda p, model: p.generate_images(model, request)
            )
            call.images = len(result.data)
            _account(call, result)  # gpt-image-1 reports tokens too
            return result

    async def create_transcription(
        self, request: ep.CreateTranscriptionRequest, ctx: CallContext
    ) -> ep.CreateTranscriptionResponse:
        """The text of an audio file."""
        validate_transcription(request, self._core.config.server.max_audio_bytes)
        return await self._unary(
            ctx,
            cap.TRANSCRIPTIONS,
            request.model,
            auth_pb2.OPERATION_AUDIO,
            lambda: 1 + len(request.prompt) // _CHARS_PER_TOKEN,
            lambda p, model: p.transcribe(model, request),
        )

    async def stream_speech(
        self, request: ep.StreamSpeechRequest, ctx: CallContext
    ) -> AsyncGenerator[ep.StreamSpeechResponse, None]:
        """Spoken audio, each piece passed on as it comes."""
        validate_speech(request)
        with self._core._meter.call(ctx, cap.SPEECH, request.model) as call:
            call.stream = True
            first, rest, verdict = await self._open(
                call,
                auth_pb2.OPERATION_AUDIO,
                lambda: 1 + len(request.input) // _CHARS_PER_TOKEN,
                lambda p, model: p.speak(model, request),
            )
            async with aclosing(_settled(first, rest, verdict)) as pieces:
                async for piece in pieces:
                    if not call.chunks:
                        call.first_chunk_at = time.perf_counter()
                    call.chunks += 1
                    yield piece

    async def create_moderation(
        self, request: ep.CreateModerationRequest, ctx: CallContext
    ) -> ep.CreateModerationResponse:
        """Moderation results, one per input."""
        validate_moderation(request)
        chars = sum(map(len, request.input)) + len(request.input_parts_json)
        return await self._unary(
            ctx,
            cap.MODERATIONS,
            request.model,
            auth_pb2.OPERATION_MODERATIONS,
            lambda: 1 + chars // _CHARS_PER_TOKEN,
            lambda p, model: p.moderate(model, request),
        )

    async def rerank(self, request: ep.RerankRequest, ctx: CallContext) -> ep.RerankResponse:
        """Documents ordered by relevance to the query."""
        validate_rerank(request)
        chars = len(request.query) + sum(map(len, request.documents))
        return await self._unary(
            ctx,
            cap.RERANK,
            request.model,
            auth_pb2.OPERATION_RERANK,
            lambda: 1 + chars // _CHARS_PER_TOKEN,
            lambda p, model: p.rerank(model, request),
        )

    # -------------------------------------------------------------------------------------------- the shared path

    async def _unary(
        self,
        ctx: CallContext,
        endpoint: str,
        model: str,
        operation: auth_pb2.Operation.ValueType,
        estimate: Callable[[], int],
        run: Callable[[EndpointServer, str], Awaitable[R]],
    ) -> R:
        """One metered call whose answer carries its usage."""
        with self._core._meter.call(ctx, endpoint, model) as call:
            result = await self._answer(call, operation, estimate, run)
            _account(call, cast(_HasUsage, result))
            return result

    async def _answer(
        self,
        call: CallRecord,
        operation: auth_pb2.Operation.ValueType,
        estimate: Callable[[], int],
        run: Callable[[EndpointServer, str], Awaitable[R]],
        outcome: Outcome | None = None,
    ) -> R:
        """Admit the call, plan it among the targets that serve its endpoint, and run the attempts."""
        core = self._core
        await core._admit(call, operation, estimate)
        plan = self._plan(call)
        if outcome is not None:
            outcome.model = plan.model  # whose retry budget the attempts spend
        endpoint = call.operation

        async def attempt(provider: Provider, model: str) -> R:
            # A plan's targets serve the endpoint; a context-length fallback's may not (it is planned mid-way).
            if not serves(provider, endpoint):
                raise InvalidRequestError(
                    f"The prompt is too long for '{call.model}', and its context fallback on backend "
                    f"'{provider.backend.name}' does not serve {endpoint}",
                    code="unsupported_endpoint",
                    param="model",
                )
            return await run(cast(EndpointServer, provider), model)

        return await core._first_success(plan, call, attempt, outcome)

    async def _open(
        self,
        call: CallRecord,
        operation: auth_pb2.Operation.ValueType,
        estimate: Callable[[], int],
        stream: Callable[[EndpointServer, str], AsyncGenerator[C, None]],
    ) -> tuple[C, AsyncGenerator[C, None], Verdict | None]:
        """The first piece of the first target that starts answering, the rest, and its open health verdict."""
        outcome = Outcome(hold=True)
        first, rest = await self._answer(
            call, operation, estimate, lambda p, model: open_stream(stream(p, model)), outcome
        )
        return first, rest, outcome.open

    def _plan(self, call: CallRecord) -> Plan:
        """The route's plan, kept to the targets whose provider serves the call's endpoint."""
        core = self._core
        plan = core._route(call)
        serving = [a for a in plan.attempts if serves(core._providers[a.target.backend], call.operation)]
        if plan.attempts and not serving:
            raise _unserved(call)
        return dataclasses.replace(plan, attempts=serving)

    def _completion_estimate(self, params: ep.CompletionParams) -> int:
        """Charged against token limits before the usage is known: the prompts plus their cap, per choice."""
        cap_tokens = params.max_tokens if params.HasField("max_tokens") else 16  # OpenAI's default for completions
        return _prompt_tokens(params) + cap_tokens * max(1, params.n, params.best_of)


def _unserved(call: CallRecord) -> InvalidRequestError:
    return InvalidRequestError(
        f"The model '{call.model}' does not serve {call.operation} (none of its backends offers the endpoint)",
        code="unsupported_endpoint",
        param="model",
    )


def _prompt_tokens(params: ep.CompletionParams) -> int:
    """A rough count of the prompts' tokens: their text, or their token ids."""
    text = sum(map(len, params.prompt)) // _CHARS_PER_TOKEN
    return max(1, text + sum(len(t.ids) for t in params.prompt_tokens))


def _account(call: CallRecord, result: _HasUsage) -> None:
    """The usage an answer reports, as the record's (none reported: none recorded, never guessed)."""
    message = cast(Message, result)
    if "usage" in message.DESCRIPTOR.fields_by_name and message.HasField("usage"):
        usage = result.usage
        call.usage = pb.Usage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )


def _account_text(chunk: ep.StreamCompletionResponse, call: CallRecord, include_usage: bool) -> bool:
    """Record a chunk's usage; whether the caller gets the chunk (a usage-only one only if it asked)."""
    if chunk.choices:
        if not call.chunks:
            call.first_chunk_at = time.perf_counter()
        call.chunks += 1
    if chunk.HasField("usage"):
        _account(call, chunk)
        if include_usage:
            return True
        chunk.ClearField("usage")
    return len(chunk.choices) > 0


async def _settled(first: C, rest: AsyncGenerator[C, None], verdict: Verdict | None) -> AsyncGenerator[C, None]:
    """`first`, then the rest; the attempt's health verdict is given when the stream ends: a failure after the first
    piece is the target's, a caller that leaves is not."""
    failure: BaseException | None = None
    try:
        async with aclosing(rest):
            yield first
            async for piece in rest:
                yield piece
    except (GeneratorExit, asyncio.CancelledError):
        raise
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if verdict is not None:
            verdict.settle(failure)
