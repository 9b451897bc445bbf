"""The behaviour every limiter backend shares, run against both: memory (manual clock) and Redis (its own clock)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.ratelimit.backend import Bucket, Charge
from gateway.ratelimit.gcra import spend_period
from tests.ratelimit.harness import Harness


def approx(h: Harness, value: float) -> object:
    """Exact on the manual clock; within the test's own run time on Redis's clock."""
    return pytest.approx(value, abs=h.tolerance or 1e-9)


async def test_exactly_limit_admitted_from_idle_then_one_per_interval(harness: Harness) -> None:
    h = harness
    # T = 0.125 s: a binary fraction, so the manual clock steps exactly (epoch floats are 2.4e-7 s apart).
    bucket = Bucket("key:a:requests", "requests", limit=8, window=1.0)
    for i in range(8):
        admission = await h.backend.acquire(f"r{i}", [Charge(bucket, 1)])
        assert admission.allowed
        assert admission.retry_after == 0 and admission.denied_by is None
        (state,) = admission.states
        assert state.remaining == 7 - i
        assert state.reset_after == approx(h, 0.125 * (i + 1))

    denied = await h.backend.acquire("r8", [Charge(bucket, 1)])
    assert not denied.allowed
    assert denied.denied_by == bucket
    assert denied.states[0].remaining == 0
    assert denied.retry_after == approx(h, 0.125)
    assert denied.states[0].reset_after == approx(h, 1.0)

    await h.advance(0.125 + h.tolerance / 2)
    again = await h.backend.acquire("r9", [Charge(bucket, 1)])
    assert again.allowed
    assert again.states[0].remaining == 0
    assert not (await h.backend.acquire("r10", [Charge(bucket, 1)])).allowed


async def test_large_limit_is_exact(harness: Harness) -> None:
    bucket = Bucket("key:a:requests:big", "requests", limit=600, window=3600.0)
    results = [(await harness.backend.acquire(f"r{i}", [Charge(bucket, 1)])).allowed for i in range(605)]
    assert results == [True] * 600 + [False] * 5


async def test_tokens_charge_the_estimate_then_settle_to_the_actual(harness: Harness) -> None:
    h = harness
    bucket = Bucket("key:a:tokens", "tokens", limit=1000, window=60.0)  # T = 0.06 s a token
    first = await h.backend.acquire("r1", [Charge(bucket, 300)])
    assert first.allowed and first.states[0].remaining == 700
    assert first.states[0].reset_after == approx(h, 18.0)

    await h.backend.settle("r1", [Charge(bucket, -100)])  # used 200 of the 300 estimated
    peek = await h.backend.acquire("r2", [Charge(bucket, 0)])
    assert peek.allowed and peek.states[0].remaining == 800

    await h.backend.settle("r2", [Charge(bucket, 400)])  # a stream ran 400 over its estimate
    assert (await h.backend.acquire("r3", [Charge(bucket, 0)])).states[0].remaining == 400


async def test_overshoot_is_charged_to_the_next_requests(harness: Harness) -> None:
    h = harness
    bucket = Bucket("key:a:tokens", "tokens", limit=1000, window=60.0)
    assert (await h.backend.acquire("r1", [Charge(bucket, 900)])).allowed
    await h.backend.settle("r1", [Charge(bucket, 600)])  # 1500 used in all: TAT is now 90 s ahead

    denied = await h.backend.acquire("r2", [Charge(bucket, 1)])
    assert not denied.allowed
    assert denied.states[0].remaining == 0
    assert denied.states[0].reset_after == approx(h, 90.0)
    assert denied.retry_after == approx(h, 30.06)

    await h.backend.settle("r1", [Charge(bucket, -5000)])  # a refund never moves TAT below now
    full = await h.backend.acquire("r3", [Charge(bucket, 0)])
    assert full.states[0].remaining == 1000
    assert full.states[0].reset_after == 0


async def test_charge_bigger_than_the_limit_is_denied_for_a_window(harness: Harness) -> None:
    bucket = Bucket("key:a:tokens", "tokens", limit=1000, window=60.0)
    denied = await harness.backend.acquire("r1", [Charge(bucket, 1001)])
    assert not denied.allowed
    assert denied.denied_by == bucket
    assert denied.retry_after == 60.0
    assert denied.states[0].remaining == 1000
    whole = await harness.backend.acquire("r2", [Charge(bucket, 1000)])
    assert whole.allowed and whole.states[0].remaining == 0


async def test_all_or_nothing_across_buckets(harness: Harness) -> None:
    roomy = Bucket("key:a:requests", "requests", limit=5, window=60.0)
    tight = Bucket("team:t:requests", "requests", limit=1, window=60.0)
    assert (await harness.backend.acquire("r1", [Charge(roomy, 1), Charge(tight, 1)])).allowed

    denied = await harness.backend.acquire("r2", [Charge(roomy, 1), Charge(tight, 1)])
    assert not denied.allowed
    assert denied.denied_by == tight
    assert denied.retry_after == approx(harness, 60.0)
    # States as they stand: the roomy bucket was not charged.
    assert [s.remaining for s in denied.states] == [4, 0]
    assert [s.bucket for s in denied.states] == [roomy, tight]

    alone = await harness.backend.acquire("r3", [Charge(roomy, 1)])
    assert alone.states[0].remaining == 3


async def test_denied_by_is_the_bucket_that_frees_last(harness: Harness) -> None:
    minute = Bucket("key:a:requests:m", "requests", limit=1, window=60.0)
    hour = Bucket("key:a:requests:h", "requests", limit=1, window=3600.0)
    assert (await harness.backend.acquire("r1", [Charge(minute, 1), Charge(hour, 1)])).allowed
    denied = await harness.backend.acquire("r2", [Charge(minute, 1), Charge(hour, 1)])
    assert denied.denied_by == hour
    assert denied.retry_after == approx(harness, 3600.0)


async def test_concurrency_is_never_exceeded(harness: Harness) -> None:
    bucket = Bucket("key:a:concurrent", "concurrent", limit=10, window=30.0)
    admissions = await asyncio.gather(*(harness.backend.acquire(f"r{i}", [Charge(bucket, 1)]) for i in range(200)))
    admitted = [i for i, a in enumerate(admissions) if a.allowed]
    assert len(admitted) == 10
    denied = next(a for a in admissions if not a.allowed)
    assert denied.states[0].remaining == 0
    assert 0 < denied.retry_after <= 30.0

    await harness.backend.settle(f"r{admitted[0]}", [Charge(bucket, 1)])
    after_release = await harness.backend.acquire("late", [Charge(bucket, 1)])
    assert after_release.allowed and after_release.states[0].remaining == 0
    assert not (await harness.backend.acquire("later", [Charge(bucket, 1)])).allowed


async def test_same_lease_id_holds_one_slot(harness: Harness) -> None:
    bucket = Bucket("key:a:concurrent", "concurrent", limit=1, window=30.0)
    assert (await harness.backend.acquire("r1", [Charge(bucket, 1)])).allowed
    assert (await harness.backend.acquire("r1", [Charge(bucket, 1)])).allowed  # a retried acquire
    assert not (await harness.backend.acquire("r2", [Charge(bucket, 1)])).allowed


async def test_expired_leases_are_freed(harness: Harness) -> None:
    bucket = Bucket("key:a:concurrent", "concurrent", limit=2, window=0.2)
    for lease in ("r1", "r2"):
        assert (await harness.backend.acquire(lease, [Charge(bucket, 1)])).allowed
    assert not (await harness.backend.acquire("r3", [Charge(bucket, 1)])).allowed
    await harness.advance(0.25)  # r1 and r2 crashed without settling: their leases expire
    fresh = await harness.backend.acquire("r4", [Charge(bucket, 1)])
    assert fresh.allowed and fresh.states[0].remaining == 1


async def test_spend_is_allowed_under_the_budget_and_denied_at_it(harness: Harness) -> None:
    h = harness
    bucket = Bucket("key:a:spend", "spend", limit=1.0, window=0, period="month")
    first = await h.backend.acquire("r1", [Charge(bucket, 0)])
    assert first.allowed and first.states[0].remaining == 1.0
    await h.backend.settle("r1", [Charge(bucket, 0.6)])

    second = await h.backend.acquire("r2", [Charge(bucket, 0)])
    assert second.allowed  # under the budget: let through, whatever it will cost
    assert second.states[0].remaining == pytest.approx(0.4)
    await h.backend.settle("r2", [Charge(bucket, 0.4)])  # exactly at the budget

    denied = await h.backend.acquire("r3", [Charge(bucket, 0)])
    assert not denied.allowed and denied.denied_by == bucket
    assert denied.states[0].remaining == 0
    # Redis runs on this machine: its TIME is this wall clock, to the second this needs.
    now = h.clock() if h.clock else time.time()
    _, end = spend_period("month", now)
    assert end is not None
    assert denied.retry_after == pytest.approx(end - now, abs=h.tolerance or 1e-9)
    assert denied.states[0].reset_after == pytest.approx(denied.retry_after)


async def test_total_budget_never_resets(harness: Harness) -> None:
    bucket = Bucket("key:a:spend:total", "spend", limit=2.0, window=0, period="total")
    await harness.backend.settle("r1", [Charge(bucket, 2.5)])
    denied = await harness.backend.acquire("r2", [Charge(bucket, 0)])
    assert not denied.allowed
    assert denied.retry_after == 0
    assert denied.states[0].reset_after == 0
    assert denied.states[0].remaining == 0


async def test_requests_settle_is_ignored(harness: Harness) -> None:
    bucket = Bucket("key:a:requests", "requests", limit=2, window=60.0)
    assert (await harness.backend.acquire("r1", [Charge(bucket, 1)])).allowed
    await harness.backend.settle("r1", [Charge(bucket, -1)])
    assert (await harness.backend.acquire("r2", [Charge(bucket, 1)])).states[0].remaining == 0


async def test_unknown_spend_period_is_a_programming_error(harness: Harness) -> None:
    bucket = Bucket("key:a:spend", "spend", limit=1.0, window=0, period="fortnight")
    with pytest.raises(ValueError, match="fortnight"):
        await harness.backend.acquire("r1", [Charge(bucket, 0)])
