"""The engine's own record of one call, and the observer it tells when a call is over.

What the engine's steps decide (the principal, the lease, the cache status, the route, every attempt, the usage,
the timings) goes here, written by the engine from its policies' return values; the policies never see it. When
the call ends, metering turns it into a usage record and hands it to the `CallObserver` (telemetry implements it:
metrics, the access log, spans). So nothing outside the engine writes it, and the engine imports no telemetry.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.call import CallContext
from gateway.errors import GatewayError
from tollgate.gateway.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    from gateway.auth.principal import Principal
    from gateway.ratelimit.limiter import Lease

CLIENT_CLOSED = 499  # nginx's status for a client that went away before the answer was complete


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
class CallRecord:
    """One call as the engine saw it: the door's context, and what the engine's steps decided."""

    ctx: CallContext
    operation: str
    model: str  # the model the client asked for
    stream: bool = False
    params: pb.ChatCompletionParams | None = None
    principal: Principal | None = None  # who the caller is, once authenticated
    lease: Lease | None = None  # the limits this call holds, settled when it ends
    auth_check: tuple[float, float] | None = None  # when this call's auth Check call started and ended (perf_counter)
    route_rule: str = ""  # the route rule that chose the model, if one did
    experiment: str = ""  # the experiment the model runs, if any…
    arm: str = ""  # …and this request's arm in it: "control" or "treatment"
    cache_status: str = ""  # "hit", "miss" or "bypass" when the model caches; empty when it does not
    backend: str = ""  # the backend that answered, or the last one tried
    provider_model: str = ""
    route: str = ""  # the model and backend that answered, e.g. "gpt-4o-mini>openai"; "cache" for a hit
    served_by: tuple[str, ...] = ()  # the model names the answering attempt was allowed on (router.Attempt.serves)
    attempts: int = 0
    tried: list[UpstreamAttempt] = field(default_factory=list)  # every upstream attempt, for metrics and traces
    upstream_seconds: float = 0.0  # time spent waiting on providers, for the overhead figure
    usage: pb.Usage | None = None
    first_chunk_at: float = 0.0  # perf_counter seconds when the first chunk went out; 0 when none did
    chunks: int = 0  # chunks with choices that went out
    images: int = 0  # images generated (priced per image)
    # The prompt's tokens as estimated from its text, for a stream cut short whose request is not chat's (`params`).
    prompt_estimate: int = 0
    # Mid-stream failover: each time a stream's target failed after its first byte, what became of it ("resumed",
    # "unanswered", "no_target", "not_continuable"; see gateway.engine.resume), for the usage record and metrics.
    resumes: list[str] = field(default_factory=list)
    carried: Spent | None = None  # the estimated usage of the attempts that were cut and continued by another
    carried_chunks: int = 0  # the chunks those attempts sent (the last attempt's own estimate counts the rest)

    @property
    def resumed(self) -> int:
        """Times the answer was continued by another target after its own failed mid-stream."""
        return self.resumes.count("resumed")


@dataclass(slots=True)
class Spent:
    """What a call used: tokens by kind, whether they are the gateway's estimate, and their cost in US dollars."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    cost_usd: float = 0.0
    images: int = 0


class CallObserver(Protocol):
    """Told about every finished call, authenticated or not (telemetry: metrics, access log, spans)."""

    def finished(self, call: CallRecord, failure: BaseException | None, spent: Spent) -> None:
        """`call` is over; `failure` ended it early (None: completed); it used `spent`. Must not raise."""
        ...


def http_status(call: CallRecord, failure: BaseException | None) -> int:
    """The HTTP status a client saw for a call that ended with `failure` (None: completed)."""
    if failure is None:
        return 200
    if isinstance(failure, asyncio.CancelledError | GeneratorExit):
        return CLIENT_CLOSED
    # After the first chunk the client had its 200 already; the error went in-band.
    if call.first_chunk_at:
        return 200
    return failure.http_status if isinstance(failure, GatewayError) else 500
