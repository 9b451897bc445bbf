"""The failover loop: order of attempts, second rounds with backoff and Retry-After, the deadline, the attempt
timeout, the retry budget, context-window fallback, and the error the client gets when nothing answered."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable

import pytest

from gateway.config import TargetConfig
from gateway.config.routing import HealthConfig, RetryConfig
from gateway.engine.health import HealthBoard
from gateway.engine.retry import Failover, Outcome, RetryBudget, unanswered
from gateway.engine.router import Attempt
from gateway.errors import (
    GatewayError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRequestError,
    UpstreamTimeoutError,
)

A = Attempt("m", TargetConfig(backend="a", model="m"))
B = Attempt("m", TargetConfig(backend="b", model="m"))
BIG = Attempt("big", TargetConfig(backend="a", model="m-128k"))


class Clock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


Script = dict[Attempt, list[GatewayError | str]]


def scripted(script: Script, log: list[Attempt]) -> Callable[[Attempt], Awaitable[str]]:
    """Each attempt pops its next scripted outcome: an error to raise, or the answer."""

    async def call(attempt: Attempt) -> str:
        log.append(attempt)
        outcome = script[attempt].pop(0)
        if isinstance(outcome, GatewayError):
            raise outcome
        return outcome

    return call


def failover(clock: Clock, **retry: object) -> Failover:
    config = dataclasses.replace(RetryConfig(backoff_base=0.1, backoff_max=1.0), **retry)  # type: ignore[arg-type]
    health = HealthBoard(HealthConfig(consecutive_failures=100), clock)
    return Failover(config, health, clock=clock, sleep=clock.sleep, rng=random.Random(1))


def no_context(attempt: Attempt) -> list[Attempt]:
    return []


async def test_moves_on_at_a_retryable_failure_without_waiting() -> None:
    clock, log = Clock(), []
    run = failover(clock)
    outcome = Outcome()
    answer = await run.run([A, B], scripted({A: [UpstreamError("x")], B: ["from b"]}, log), no_context, outcome)
    assert answer == "from b"
    assert log == [A, B] and clock.sleeps == [] and outcome.tried == 2


async def test_a_failure_no_other_target_could_fix_is_raised_at_once() -> None:
    clock, log = Clock(), []
    with pytest.raises(UpstreamRequestError):
        await failover(clock).run([A, B], scripted({A: [UpstreamRequestError("bad")]}, log), no_context, Outcome())
    assert log == [A]


async def test_a_second_round_backs_off_with_jitter() -> None:
    clock, log = Clock(), []
    run = failover(clock, attempts_per_target=3)
    script: Script = {A: [UpstreamError("1"), UpstreamError("2"), "third time"], B: [UpstreamError("b")] * 3}
    assert await run.run([A, B], scripted(script, log), no_context, Outcome()) == "third time"
    assert log == [A, B, A, B, A]
    # Full jitter: each wait is within [0, min(backoff_max, base * 2^(n-1))].
    caps = [0.1, 0.1, 0.2]
    assert len(clock.sleeps) == 3
    assert all(0 <= s <= cap for s, cap in zip(clock.sleeps, caps, strict=True))


async def test_retry_after_is_honoured_on_the_same_target() -> None:
    clock, log = Clock(), []
    run = failover(clock, attempts_per_target=2)
    script: Script = {A: [RateLimitError("slow down", retry_after=2.0), "ok"]}
    assert await run.run([A], scripted(script, log), no_context, Outcome()) == "ok"
    assert clock.sleeps[0] >= 2.0


async def test_a_retry_after_longer_than_allowed_is_not_waited_for() -> None:
    clock, log = Clock(), []
    run = failover(clock, attempts_per_target=2, retry_after_max=5.0)
    outcome = Outcome()
    script: Script = {A: [RateLimitError("slow down", retry_after=30.0)]}
    assert await run.run([A], scripted(script, log), no_context, outcome) is None
    assert log == [A] and clock.sleeps == []
    assert isinstance(outcome.last, RateLimitError)


async def test_nothing_is_tried_past_the_deadline() -> None:
    clock, log = Clock(), []
    run = failover(clock, attempts_per_target=5, deadline=3.0)
    script: Script = {A: [RateLimitError("wait", retry_after=2.0)] * 5}
    assert await run.run([A], scripted(script, log), no_context, Outcome()) is None
    assert len(log) == 2, "the first at 0 s, the second at 2 s; a third at 4 s would be past the 3 s deadline"


async def test_an_attempt_that_does_not_start_in_time_times_out() -> None:
    health = HealthBoard(HealthConfig(), time.monotonic)
    config = RetryConfig(attempt_timeout=0.05)
    run = Failover(config, health, clock=time.monotonic, rng=random.Random(2))
    calls: list[Attempt] = []

    async def call(attempt: Attempt) -> str:
        calls.append(attempt)
        if attempt is A:
            await asyncio.sleep(10)
        return "b answered"

    outcome = Outcome()
    started = time.monotonic()
    assert await run.run([A, B], call, no_context, outcome) == "b answered"
    assert time.monotonic() - started < 1.0
    assert calls == [A, B]
    assert health.snapshot([A.target])[0].last_error.startswith("upstream_timeout")
    assert health.outstanding(A.target) == 0


async def test_the_retry_budget_stops_retries_when_spent() -> None:
    clock = Clock()
    run = failover(clock, budget_min=3, budget_ratio=0.5, budget_window=10.0)
    answered = 0
    for _ in range(10):  # every request: a fails, b answers, which is one retry each
        log: list[Attempt] = []
        outcome = Outcome()
        result = await run.run([A, B], scripted({A: [UpstreamError("a")], B: ["b"]}, log), no_context, outcome)
        answered += result == "b"
        assert result == "b" or outcome.budget_exhausted
    # After n requests, retries ≤ 3 + 0.5 n: 8 of 10 can be retried.
    assert answered == 8
    other = Outcome(model="another")
    log = []
    assert await run.run([A, B], scripted({A: [UpstreamError("a")], B: ["b"]}, log), no_context, other) == "b", (
        "each model has its own budget"
    )
    clock.now += 11  # a new window
    log = []
    assert await run.run([A, B], scripted({A: [UpstreamError("a")], B: ["b"]}, log), no_context, Outcome()) == "b"


def test_budget_counts_within_its_window() -> None:
    clock = Clock()
    budget = RetryBudget(RetryConfig(budget_min=0, budget_ratio=0.2, budget_window=10.0), clock)
    for _ in range(10):
        budget.request()
    assert [budget.try_retry() for _ in range(3)] == [True, True, False]
    clock.now += 11
    assert not budget.try_retry(), "requests left the window too"


async def test_a_context_length_error_switches_to_the_larger_model() -> None:
    clock, log = Clock(), []
    too_long = UpstreamRequestError("too long", code="context_length_exceeded")
    script: Script = {A: [too_long], BIG: ["from the big one"]}

    def bigger(attempt: Attempt) -> list[Attempt]:
        return [BIG] if attempt.model == "m" else []

    assert await failover(clock).run([A, B], scripted(script, log), bigger, Outcome()) == "from the big one"
    assert log == [A, BIG], "the same-sized target b would fail the same way"


async def test_a_context_length_error_without_a_larger_model_is_the_clients() -> None:
    clock, log = Clock(), []
    too_long = UpstreamRequestError("too long", code="context_length_exceeded")
    with pytest.raises(UpstreamRequestError):
        await failover(clock).run([A, B], scripted({A: [too_long]}, log), no_context, Outcome())


def test_unanswered_when_nothing_could_be_tried_is_a_503_naming_the_model() -> None:
    error = unanswered("gpt-4o", Outcome(), 4.2)
    assert isinstance(error, ServiceUnavailableError)
    assert error.http_status == 503 and "'gpt-4o'" in error.message and error.retry_after == 4.2
    assert error.code == "no_healthy_target"


def test_unanswered_after_several_attempts_is_a_503_naming_them() -> None:
    outcome = Outcome(tried=3, last=UpstreamTimeoutError("slow"))
    error = unanswered("m", outcome, 7.0)
    assert isinstance(error, ServiceUnavailableError) and error.http_status == 503
    assert error.message.startswith("All 3 attempts for model 'm' failed; the last: slow")
    assert error.retry_after == 7.0 and error.code == "upstream_timeout"


def test_unanswered_when_every_target_rate_limited_is_a_429() -> None:
    error = unanswered("m", Outcome(tried=2, last=RateLimitError("slow down", retry_after=3.0)), None)
    assert isinstance(error, RateLimitError) and error.retry_after == 3.0


def test_a_single_attempt_keeps_its_own_error() -> None:
    last = UpstreamTimeoutError("slow")
    assert unanswered("m", Outcome(tried=1, last=last), 2.0) is last
    assert last.retry_after == 2.0


def test_unanswered_says_when_the_budget_stopped_it() -> None:
    error = unanswered("m", Outcome(tried=1, last=UpstreamError("x"), budget_exhausted=True), None)
    assert "retry budget is spent" in error.message


async def test_a_second_round_skips_a_target_ejected_meanwhile() -> None:
    clock, log = Clock(), []
    config = RetryConfig(attempts_per_target=3)
    health = HealthBoard(HealthConfig(consecutive_failures=1, ejection_base=1.0), clock)
    run = Failover(config, health, clock=clock, sleep=clock.sleep, rng=random.Random(3))
    outcome = Outcome()
    assert await run.run([A], scripted({A: [UpstreamError("down")] * 3}, log), no_context, outcome) is None
    assert log == [A] and clock.sleeps == [], "its circuit, not this request, decides when it is probed"
    assert health.ejected(A.target)


async def test_the_deadline_alone_also_bounds_an_attempt() -> None:
    health = HealthBoard(HealthConfig(), time.monotonic)
    run = Failover(RetryConfig(deadline=0.1), health, clock=time.monotonic, rng=random.Random(4))

    async def slow(attempt: Attempt) -> str:
        await asyncio.sleep(10)
        return "never"

    outcome = Outcome()
    started = time.monotonic()
    assert await run.run([A, B], slow, no_context, outcome) is None
    assert time.monotonic() - started < 1.0
    assert outcome.tried == 1 and isinstance(outcome.last, UpstreamTimeoutError), "no time was left for b"
