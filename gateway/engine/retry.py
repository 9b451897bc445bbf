"""Running one request's attempts: per-attempt timeouts inside an overall deadline, a retry budget, backoff.

The plan (gateway.engine.router) lists healthy targets, the model's own first, then its fallbacks'. Each is tried
once, in order, moving on at a retryable failure (connection error, timeout, 429, 5xx) before the first byte. With
`attempts_per_target` above 1, a second round then tries again the targets that failed retryably, each after a
jittered exponential backoff, or after its Retry-After when it sent one that fits `retry_after_max` and the
deadline. A context-length error switches to the model's `context_fallback` models. Every attempt after a request's
first is a retry and must fit the model's retry budget (one per model and process), so a failing provider cannot
multiply its own load, and one model's outage cannot spend the retries another model needs.

A stream's attempt is not over at its first chunk: with `Outcome.hold` the answering attempt's `Verdict` is handed
back open and the engine settles it when the stream ends, so a reset, a stall or an error event after the first byte
counts against the target's health like any other failure. Continuing such a stream on another target
(`Outcome.resume`, mid-stream failover) spends the retry budget on every attempt. A caller's own deadline
(`Outcome.caller_left`, a gRPC deadline) bounds the attempts too, but its expiry is the caller's, not the target's:
the attempt it cuts is abandoned, and the caller gets `DeadlineExceededError`.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.config import TargetConfig
from gateway.config.routing import RetryConfig
from gateway.engine.health import HealthBoard, Slot
from gateway.engine.router import Attempt
from gateway.engine.window import WindowCounts
from gateway.errors import (
    DeadlineExceededError,
    GatewayError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)

T = TypeVar("T")
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's documented error code, which vLLM also uses


class RetryBudget:
    """Retries allowed at most `budget_min` + `budget_ratio` * requests within each `budget_window`."""

    def __init__(self, config: RetryConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._counts = WindowCounts(config.budget_window, clock)  # (requests, retries)

    def request(self) -> None:
        """Count a new request."""
        self._counts.add(first=1)

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        requests, retries = self._counts.totals()
        if retries >= self._config.budget_min + self._config.budget_ratio * requests:
            return False
        self._counts.add(second=1)
        return True


class Verdict:
    """The health report of an attempt whose answer is still going (a stream): given once, when it ends."""

    __slots__ = ("_clock", "_health", "_latency", "_slot", "_started", "_target")

    def __init__(
        self, health: HealthBoard, target: TargetConfig, slot: Slot, started: float, clock: Callable[[], float]
    ) -> None:
        self._health, self._target, self._slot = health, target, slot
        self._started, self._clock = started, clock
        self._latency: float | None = clock() - started  # to the first byte: what balancing compares

    def settle(self, failure: BaseException | None) -> None:
        """The answer ended: completed or left by its caller (None), failed (a `GatewayError`), or broken by a bug
        (anything else: no verdict). A second call does nothing."""
        latency, self._latency = self._latency, None
        if latency is None:
            return
        if failure is None:
            self._health.succeeded(self._target, latency, self._slot)
        elif isinstance(failure, GatewayError):
            self._health.failed(self._target, failure, self._clock() - self._started, self._slot)
        else:
            self._health.abandoned(self._target, self._slot)


@dataclass(slots=True)
class Outcome:
    """What the attempts of one request came to, for the caller's error and records."""

    model: str = ""  # whose retry budget the request spends
    hold: bool = False  # the answer is a stream: its attempt's health verdict waits for its end (`open`)
    tried: int = 0
    last: GatewayError | None = None
    budget_exhausted: bool = False
    failures: dict[Attempt, int] = field(default_factory=dict)  # retryable failures per attempt
    open: Verdict | None = None  # with `hold`, the verdict of the attempt that answered, for the caller to settle
    resume: bool = False  # continuing a stream cut mid-way: not a new request, and every attempt is a retry
    # Seconds the caller's own deadline (a gRPC deadline) leaves, None: none. No attempt starts or waits past it,
    # and an attempt it cuts is abandoned, not the target's failure: the caller gets a `DeadlineExceededError`.
    caller_left: float | None = None


class Failover:
    """Runs attempts for requests. Clock, sleep and random source are injected so tests are exact."""

    def __init__(
        self,
        config: RetryConfig,
        health: HealthBoard,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._health = health
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._budgets: dict[str, RetryBudget] = {}

    def budget(self, model: str) -> RetryBudget:
        """The retry budget of `model` (made on first use)."""
        budget = self._budgets.get(model)
        if budget is None:
            budget = self._budgets[model] = RetryBudget(self._config, self._clock)
        return budget

    async def run(
        self,
        attempts: list[Attempt],
        call: Callable[[Attempt], Awaitable[T]],
        context_plan: Callable[[Attempt], list[Attempt]],
        outcome: Outcome,
    ) -> T | None:
        """The first success among `attempts`, else None with `outcome` saying why; a failure that no other attempt
        could fix is raised at once. `context_plan(attempt)` lists what to try after a context-length error."""
        now = self._clock()
        deadline = now + self._config.deadline if self._config.deadline else math.inf
        until = now + outcome.caller_left if outcome.caller_left is not None else math.inf
        budget = self.budget(outcome.model)
        if not outcome.resume:
            budget.request()
        queue = deque(attempts)
        retries: deque[Attempt] = deque()
        while queue or retries:
            attempt = queue.popleft() if queue else retries.popleft()
            wait = self._wait(attempt, outcome)
            if wait is None or (deadline < math.inf and self._clock() + wait >= deadline):
                continue
            if until < math.inf and self._clock() + wait >= until:
                break  # the caller would be gone before it answers: the failures so far are the answer
            if wait:
                await self._sleep(wait)
            slot = self._health.acquire(attempt.target)
            if slot is None:
                continue  # ejected meanwhile, or another request is probing it
            if (outcome.tried or outcome.resume) and not budget.try_retry():
                self._health.abandoned(attempt.target, slot)
                outcome.budget_exhausted = True
                return None
            outcome.tried += 1
            try:
                return await self._one(attempt, slot, call, (deadline, until), outcome)
            except GatewayError as exc:
                if exc.code == CONTEXT_LENGTH_EXCEEDED and (bigger := context_plan(attempt)):
                    queue, retries = deque(bigger), deque()
                    outcome.last = exc
                    continue
                if not exc.retryable:
                    raise
                outcome.last = exc
                outcome.failures[attempt] = outcome.failures.get(attempt, 0) + 1
                if outcome.failures[attempt] < self._config.attempts_per_target:
                    retries.append(attempt)
        return None

    async def _one(
        self,
        attempt: Attempt,
        slot: Slot,
        call: Callable[[Attempt], Awaitable[T]],
        deadlines: tuple[float, float],
        outcome: Outcome,
    ) -> T:
        """One attempt, bounded by the attempt timeout, the deadline and the caller's own deadline (`deadlines`: the
        second two, clock times), reported to the health board (an answer that is still going, a stream, through the
        open verdict it leaves on `outcome`)."""
        target = attempt.target
        started = self._clock()
        deadline, until = deadlines
        limit = min(deadline - started, self._config.attempt_timeout or math.inf)
        callers = until - started <= limit  # the caller's deadline is the nearest: its expiry is not the target's
        limit = min(limit, until - started)
        try:
            if limit == math.inf:  # unbounded but for the backend's own timeouts: no timer to pay for
                result = await call(attempt)
            else:
                async with asyncio.timeout(limit):
                    result = await call(attempt)
        except TimeoutError:
            if callers:
                self._health.abandoned(target, slot)
                raise DeadlineExceededError() from None
            error = UpstreamTimeoutError(f"backend '{target.backend}' did not start answering within {limit:.3g}s")
            self._health.failed(target, error, self._clock() - started, slot)
            raise error from None
        except GatewayError as exc:
            self._health.failed(target, exc, self._clock() - started, slot)
            raise
        except BaseException:
            self._health.abandoned(target, slot)
            raise
        if outcome.hold:
            outcome.open = Verdict(self._health, target, slot, started, self._clock)
        else:
            self._health.succeeded(target, self._clock() - started, slot)
        return result

    def _wait(self, attempt: Attempt, outcome: Outcome) -> float | None:
        """How long to wait before this attempt; None to skip it (it would wait too long)."""
        failures = outcome.failures.get(attempt, 0) if outcome.failures else 0
        if not failures:
            return 0.0
        if self._health.ejected(attempt.target):
            return None  # its circuit decides when it is tried again, and other requests will probe it
        cap = min(self._config.backoff_max, self._config.backoff_base * 2 ** (failures - 1))
        rest = self._health.retry_in(attempt.target)  # a Retry-After
        if rest > self._config.retry_after_max:
            return None
        return max(rest, self._rng.uniform(0, cap))


def unanswered(model: str, outcome: Outcome, soonest: float | None) -> GatewayError:
    """The error for a request none of whose attempts succeeded. `soonest` is when a target of the model may be
    tried again (seconds), when that is known."""
    last = outcome.last
    if last is None:  # nothing was tried: every target is ejected, resting, or down
        return ServiceUnavailableError(
            f"No healthy target for model '{model}': every target is ejected or resting",
            code="no_healthy_target",
            retry_after=soonest,
        )
    retry_after = last.retry_after if last.retry_after is not None else soonest
    if outcome.tried == 1 and not outcome.budget_exhausted:
        if retry_after is not None and last.retry_after is None:
            last.retry_after = retry_after
        return last
    budget = "; the retry budget is spent" if outcome.budget_exhausted else ""
    message = f"All {outcome.tried} attempts for model '{model}' failed{budget}; the last: {last.message}"
    if isinstance(last, RateLimitError):  # every target is rate-limited: the client should slow down, so a 429
        return RateLimitError(message, code=last.code, retry_after=retry_after)
    # Several targets failed: nothing can answer right now, whatever the last one's failure was.
    return ServiceUnavailableError(message, code=last.code, retry_after=retry_after)


S = TypeVar("S")


async def open_stream(stream: AsyncGenerator[S, None]) -> tuple[S, AsyncGenerator[S, None]]:
    """Wait for a stream's first item, so that a failure before it can still move on to another target."""
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        raise UpstreamError("the backend ended the stream without sending anything") from None
    except BaseException:
        await stream.aclose()
        raise
    return first, stream
