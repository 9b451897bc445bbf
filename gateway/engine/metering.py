"""One usage record per request, built from what the engine learned about the call, for the stats reporter.

Every request that got past authentication is recorded: completed, failed (before or after the first chunk) and
cancelled by the client. A stream cut short carries no usage from the provider, so its tokens are estimated from what
was sent and streamed, and the record says so (`usage_estimated`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.call import CallContext
from gateway.config import GatewayConfig
from gateway.config.digest import config_hash
from gateway.drain import as_shutdown
from gateway.engine.record import CallObserver, CallRecord, Spent, http_status
from gateway.errors import DeadlineExceededError, GatewayError
from gateway.ratelimit.limiter import RateLimiter
from gateway.stats.pricing import cost_usd, price_for
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.stats.v1 import stats_pb2

log = logging.getLogger("tollgate.engine")

_CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text with OpenAI's tokenizers


class UsageSink(Protocol):
    """Where usage records go (the `UsageReporter`); `submit` must never block or raise."""

    async def start(self) -> None:
        """Begin delivering."""
        ...

    def submit(self, record: stats_pb2.UsageRecord) -> None:
        """Take one record."""
        ...

    async def close(self) -> None:
        """Deliver or keep what is pending, then stop."""
        ...


class MeteredCall:
    """A context manager around one engine call: its `CallRecord` inside, and its usage record submitted however
    the call ends."""

    __slots__ = ("meter", "record")

    def __init__(self, meter: Meter, record: CallRecord) -> None:
        self.meter = meter
        self.record = record

    def __enter__(self) -> CallRecord:
        return self.record

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        exc = as_shutdown(exc)  # cut when the shutdown grace ran out: a shutdown status, not a client cancel
        exc = _past_deadline(self.record, exc)  # cut by the caller's own deadline: not a cancel either
        meter, call = self.meter, self.record
        lease = call.lease
        # Unauthenticated requests are nobody's usage; they are counted by metrics, not billed.
        billed = (meter.sink is not None or lease is not None) and call.principal is not None
        if not billed and meter.observer is None:
            return
        try:
            spent = meter.spent(call)
            if billed and lease is not None and meter.limiter is not None:
                meter.limiter.settle_soon(lease, spent.input_tokens + spent.output_tokens, spent.cost_usd)
            if billed and meter.sink is not None:
                meter.sink.submit(meter.record(call, exc, spent))
            if meter.observer is not None:
                meter.observer.finished(call, exc, spent)
        except Exception:  # metering must never turn an answered request into a failed one
            log.exception("could not record usage", extra={"request_id": call.ctx.request_id})


class Meter:
    """Builds usage records for one configuration, hands them to the sink (none: nothing is recorded), and settles
    the call's limits with its true usage and cost."""

    def __init__(
        self,
        config: GatewayConfig,
        sink: UsageSink | None,
        limiter: RateLimiter | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self.sink = sink
        self.limiter = limiter
        self.config_hash = config_hash(config)  # on every record: which config the call ran on
        self.observer = observer
        self._providers: Mapping[str, str] = {b.name: b.provider for b in config.backends}
        self._prices = config.prices

    def call(self, ctx: CallContext, operation: str, model: str) -> MeteredCall:
        """Meter one call of `operation` on `model`: `with meter.call(...) as record:` gives its `CallRecord`."""
        ctx.reply.metered = True
        return MeteredCall(self, CallRecord(ctx, operation, model))

    def spent(self, call: CallRecord) -> Spent:
        """The tokens a finished call used (reported, or estimated for a stream cut short) and what they cost."""
        params, usage = call.params, call.usage
        if call.cache_status == "hit":
            spent = Spent()  # served from the cache: no provider tokens, and the limits count a request only
        elif usage is not None:
            # A provider's negative count is nonsense, and a stats server may refuse the batch holding it.
            spent = Spent(
                max(0, usage.prompt_tokens),
                max(0, usage.completion_tokens),
                max(0, usage.cached_tokens),
                max(0, usage.reasoning_tokens),
            )
        elif call.chunks > call.carried_chunks and (params is not None or call.prompt_estimate):
            # A stream cut short: the provider bills the prompt and what it generated, but never said how much.
            # A streamed delta is about one token.
            prompt = estimate_prompt_tokens(params) if params is not None else call.prompt_estimate
            spent = Spent(prompt, call.chunks - call.carried_chunks, estimated=True)
        else:
            spent = Spent()
        spent.images = 0 if call.cache_status == "hit" else call.images
        carried = call.carried
        if carried is not None:  # attempts cut mid-stream and continued by another target: billed too
            if usage is None:  # else the engine added them to the usage the caller was shown
                spent.input_tokens += carried.input_tokens
                spent.output_tokens += carried.output_tokens
            spent.estimated = True
        price = price_for(self._prices, call.provider_model, call.model)
        spent.cost_usd = cost_usd(price, spent.input_tokens, spent.output_tokens, spent.cached_tokens, spent.images)
        return spent

    def record(
        self, call: CallRecord, failure: BaseException | None, spent: Spent | None = None
    ) -> stats_pb2.UsageRecord:
        """The record of a finished call; `failure` is what ended it early, None when it completed."""
        now = time.perf_counter()
        ctx = call.ctx
        record = stats_pb2.UsageRecord(
            request_id=ctx.request_id,
            operation=call.operation,
            requested_model=call.model,
            backend=call.backend,
            provider=self._providers.get(call.backend, ""),
            provider_model=call.provider_model,
            stream=call.stream,
            attempts=call.attempts,
            resumed=call.resumed,
            route=call.route,
            cache_hit=call.cache_status == "hit",
            config_hash=self.config_hash,
        )
        principal = call.principal
        if principal is not None:
            record.key_id, record.user, record.team = principal.key_id, principal.user, principal.team
            record.labels.update(principal.labels)
        if ctx.client_request_id:
            record.labels["client_request_id"] = ctx.client_request_id
        _routing_labels(record, call)
        _timing(record, call, now)
        _outcome(record, call, failure)
        spent = spent or self.spent(call)
        record.input_tokens, record.output_tokens = spent.input_tokens, spent.output_tokens
        record.cached_tokens, record.reasoning_tokens = spent.cached_tokens, spent.reasoning_tokens
        record.usage_estimated, record.cost_usd = spent.estimated, spent.cost_usd
        return record


# The deadline a gRPC call brings is counted from when grpc read the call, which a busy process does late; the
# caller's own clock runs out first, and the cancel it sends then can arrive before our count does (up to 2 ms
# before, seen under load). A cancel that close to the deadline is the deadline's.
DEADLINE_SLACK = 0.02


def _past_deadline(call: CallRecord, exc: BaseException | None) -> BaseException | None:
    """`exc`, or the `DeadlineExceededError` it stands for when it is the cancellation of a call whose caller's
    deadline (a gRPC deadline: grpc cancels the call then) has passed, or comes within `DEADLINE_SLACK` of it."""
    deadline = call.ctx.deadline
    if deadline is None or not isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return exc
    return DeadlineExceededError() if time.perf_counter() - call.ctx.started >= deadline - DEADLINE_SLACK else exc


def _routing_labels(record: stats_pb2.UsageRecord, call: CallRecord) -> None:
    """How routing chose: the route rule (a label), and the experiment and arm."""
    if call.route_rule:
        record.labels["tollgate.route_rule"] = call.route_rule
    record.experiment, record.experiment_arm = call.experiment, call.arm


def _timing(record: stats_pb2.UsageRecord, call: CallRecord, now: float) -> None:
    elapsed = now - call.ctx.started
    start = Timestamp()
    start.FromNanoseconds(int((time.time() - elapsed) * 1e9))
    record.start_time.CopyFrom(start)
    record.latency.CopyFrom(_duration(elapsed))
    if call.first_chunk_at:
        record.time_to_first_token.CopyFrom(_duration(call.first_chunk_at - call.ctx.started))


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def _outcome(record: stats_pb2.UsageRecord, call: CallRecord, failure: BaseException | None) -> None:
    record.http_status = http_status(call, failure)
    if failure is None:
        record.outcome = stats_pb2.OUTCOME_COMPLETED
    elif isinstance(failure, asyncio.CancelledError | GeneratorExit):
        record.outcome = stats_pb2.OUTCOME_CANCELLED
        record.grpc_status = grpc.StatusCode.CANCELLED.value[0]
    else:
        error = failure if isinstance(failure, GatewayError) else None
        record.outcome = stats_pb2.OUTCOME_FAILED
        record.grpc_status = (error.grpc_code if error else grpc.StatusCode.INTERNAL).value[0]
        record.error_type = error.code if error else "internal_error"


def estimate_prompt_tokens(params: pb.ChatCompletionParams) -> int:
    """A rough count of the prompt's tokens from its text, for records whose provider never reported usage."""
    chars = 0
    for message in params.messages:
        chars += len(message.content) + len(message.name)
        for part in message.content_parts:
            chars += len(part.text)
        for call in message.tool_calls:
            chars += len(call.function.name) + len(call.function.arguments)
    return max(1, chars // _CHARS_PER_TOKEN)
