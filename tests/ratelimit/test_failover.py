"""FailoverLimiter: fail open onto a local backend or fail closed, probe a dead primary once per interval, recover."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import pytest

from gateway.ratelimit.backend import Admission, Bucket, Charge, LimiterUnavailable
from gateway.ratelimit.failover import FailoverLimiter
from gateway.ratelimit.memory import MemoryBackend
from gateway.ratelimit.redis_backend import RedisBackend
from tests.ratelimit.harness import ManualClock
from tests.redis_support import start_redis_server

RATE = Bucket("key:k1:requests", "requests", limit=100, window=60.0)
SLOT = Bucket("key:k1:concurrent", "concurrent", limit=1, window=600.0)


class SwitchableBackend:
    """A memory backend that can be made unavailable, counting the calls that reach it."""

    def __init__(self, clock: ManualClock) -> None:
        self.inner = MemoryBackend(clock=clock)
        self.up = True
        self.acquires = 0
        self.settled: list[str] = []
        self.closed = False

    async def acquire(self, lease_id: str, charges: Sequence[Charge]) -> Admission:
        self.acquires += 1
        if not self.up:
            raise LimiterUnavailable("switched off")
        return await self.inner.acquire(lease_id, charges)

    async def settle(self, lease_id: str, adjustments: Sequence[Charge]) -> None:
        if not self.up:
            raise LimiterUnavailable("switched off")
        self.settled.append(lease_id)
        await self.inner.settle(lease_id, adjustments)

    async def close(self) -> None:
        self.closed = True


def build(*, fail_open: bool) -> tuple[FailoverLimiter, SwitchableBackend, SwitchableBackend, ManualClock]:
    clock = ManualClock(1000.0)
    primary, fallback = SwitchableBackend(clock), SwitchableBackend(clock)
    # Down at the first failure, so that each test below can count attempts one by one.
    limiter = FailoverLimiter(primary, fallback, fail_open=fail_open, retry_interval=1.0, trip_after=1, clock=clock)
    return limiter, primary, fallback, clock


async def test_fail_open_answers_from_the_fallback_and_probes_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter, primary, fallback, clock = build(fail_open=True)
    assert (await limiter.acquire("r0", [Charge(RATE, 1)])).allowed
    assert not limiter.down and fallback.acquires == 0

    primary.up = False
    caplog.set_level(logging.INFO, logger="tollgate.limits")
    for i in range(50):
        assert (await limiter.acquire(f"r{i + 1}", [Charge(RATE, 1)])).allowed
    assert limiter.down
    assert primary.acquires == 2  # r0, then the one failed attempt
    assert limiter.primary_failures == 1
    assert limiter.fallback_acquires == 50 == fallback.acquires

    clock.advance(1.0)
    await limiter.acquire("r51", [Charge(RATE, 1)])
    assert primary.acquires == 3 and limiter.primary_failures == 2  # one probe per interval

    primary.up = True
    clock.advance(1.0)
    assert (await limiter.acquire("r52", [Charge(RATE, 1)])).allowed
    assert not limiter.down
    assert primary.acquires == 4 and limiter.fallback_acquires == 51
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # once down, once back
    assert "unavailable" in messages[0] and "open" in messages[0]
    assert "again" in messages[1]


async def test_a_lease_taken_on_the_fallback_is_settled_there() -> None:
    limiter, primary, fallback, clock = build(fail_open=True)
    primary.up = False
    assert (await limiter.acquire("r1", [Charge(SLOT, 1)])).allowed
    primary.up = True
    clock.advance(1.0)
    assert (await limiter.acquire("r2", [Charge(SLOT, 1)])).allowed  # on the primary again
    assert not limiter.down

    await limiter.settle("r1", [Charge(SLOT, 1)])
    await limiter.settle("r2", [Charge(SLOT, 1)])
    assert fallback.settled == ["r1"] and primary.settled == ["r2"]
    assert (await fallback.inner.acquire("r3", [Charge(SLOT, 1)])).allowed  # r1's slot was freed


async def test_fail_closed_raises_and_does_not_hammer_the_primary() -> None:
    limiter, primary, fallback, clock = build(fail_open=False)
    primary.up = False
    for i in range(20):
        with pytest.raises(LimiterUnavailable):
            await limiter.acquire(f"r{i}", [Charge(RATE, 1)])
    assert primary.acquires == 1 and fallback.acquires == 0
    assert limiter.down and limiter.fallback_acquires == 0

    primary.up = True
    clock.advance(1.0)
    assert (await limiter.acquire("r20", [Charge(RATE, 1)])).allowed
    assert not limiter.down


async def test_a_settle_while_down_fails_fast_and_a_settle_that_works_brings_it_back() -> None:
    limiter, primary, _, clock = build(fail_open=True)
    assert (await limiter.acquire("r1", [Charge(SLOT, 1)])).allowed
    primary.up = False
    with pytest.raises(LimiterUnavailable):
        await limiter.settle("r1", [Charge(SLOT, 1)])
    assert limiter.down
    primary.up = True
    with pytest.raises(LimiterUnavailable):  # within the interval: not even tried
        await limiter.settle("r1", [Charge(SLOT, 1)])
    clock.advance(1.0)
    await limiter.settle("r1", [Charge(SLOT, 1)])
    assert not limiter.down and primary.settled == ["r1"]


async def test_denials_are_answers_not_failures() -> None:
    limiter, _, fallback, _ = build(fail_open=True)
    assert (await limiter.acquire("r1", [Charge(SLOT, 1)])).allowed
    assert not (await limiter.acquire("r2", [Charge(SLOT, 1)])).allowed
    assert not limiter.down and fallback.acquires == 0 and limiter.primary_failures == 0


async def test_unsettled_fallback_leases_are_forgotten_in_time() -> None:
    limiter, primary, _, clock = build(fail_open=True)
    primary.up = False
    for i in range(100):
        await limiter.acquire(f"r{i}", [Charge(RATE, 1)])  # no adjustment to make: never settled
    clock.advance(60 + 3600 + 1)
    await limiter.acquire("late", [Charge(RATE, 1)])
    assert limiter._on_fallback.keys() == {"late"}  # the memory of fallback leases stays bounded


async def test_close_closes_both() -> None:
    limiter, primary, fallback, _ = build(fail_open=True)
    await limiter.close()
    assert primary.closed and fallback.closed


@pytest.mark.parametrize("fail_open", [True, False])
async def test_a_real_redis_that_dies_and_comes_back(fail_open: bool) -> None:
    server = start_redis_server()  # our own: the shared test Redis is never stopped
    clock = ManualClock(0.0)
    redis_backend = RedisBackend(server.url, timeout=0.2)
    limiter = FailoverLimiter(redis_backend, MemoryBackend(), fail_open=fail_open, trip_after=1, clock=clock)
    try:
        first = await limiter.acquire("r1", [Charge(RATE, 1)])
        assert first.allowed and first.states[0].remaining == 99

        server.stop()
        started = time.monotonic()
        if fail_open:
            on_fallback = await limiter.acquire("r2", [Charge(RATE, 1)])
            assert on_fallback.allowed and on_fallback.states[0].remaining == 99  # the fallback's own count
        else:
            with pytest.raises(LimiterUnavailable):
                await limiter.acquire("r2", [Charge(RATE, 1)])
        assert time.monotonic() - started < 0.5
        assert limiter.down and limiter.primary_failures == 1

        server.start()  # same port, empty, and without our scripts: EVALSHA's NOSCRIPT reloads them
        clock.advance(1.0)
        back = await limiter.acquire("r3", [Charge(RATE, 1)])
        assert back.allowed and back.states[0].remaining == 99  # a fresh Redis: its counters started over
        assert not limiter.down
    finally:
        await limiter.close()
        server.stop()


async def test_one_slow_answer_is_not_an_outage() -> None:
    """Under load a single check can miss its deadline; only failures in a row mark the store down."""
    clock = ManualClock(1000.0)
    primary, fallback = SwitchableBackend(clock), SwitchableBackend(clock)
    limiter = FailoverLimiter(primary, fallback, fail_open=False, trip_after=3, clock=clock)
    for _ in range(2):
        primary.up = False
        with pytest.raises(LimiterUnavailable):
            await limiter.acquire("r", [Charge(RATE, 1)])
        assert not limiter.down  # that call failed; the next ones still go to the store
        primary.up = True
        assert (await limiter.acquire("r", [Charge(RATE, 1)])).allowed
    primary.up = False
    for _ in range(3):
        with pytest.raises(LimiterUnavailable):
            await limiter.acquire("r", [Charge(RATE, 1)])
    assert limiter.down
    assert primary.acquires == 7  # and from now on it is only probed once per interval
    with pytest.raises(LimiterUnavailable):
        await limiter.acquire("r", [Charge(RATE, 1)])
    assert primary.acquires == 7
