"""What only the memory backend has: its clock is injected, and expired counters are swept away."""

from __future__ import annotations

from gateway.ratelimit.backend import Bucket, Charge
from gateway.ratelimit.memory import MemoryBackend
from tests.ratelimit.harness import T0, ManualClock


async def test_spend_rolls_over_at_the_utc_month_end() -> None:
    clock = ManualClock(1_769_903_999.0)  # 2026-01-31T23:59:59Z
    backend = MemoryBackend(clock=clock)
    budget = Bucket("key:k1:spend", "spend", limit=1.0, window=0, period="month")
    await backend.settle("r1", [Charge(budget, 1.5)])
    denied = await backend.acquire("r2", [Charge(budget, 0)])
    assert not denied.allowed and denied.retry_after == 1.0

    clock.advance(1.0)  # February
    fresh = await backend.acquire("r3", [Charge(budget, 0)])
    assert fresh.allowed and fresh.states[0].remaining == 1.0
    assert fresh.states[0].reset_after == 28 * 86400


async def test_expired_counters_are_swept() -> None:
    clock = ManualClock(T0)
    backend = MemoryBackend(clock=clock, sweep_interval=60.0)
    day = Bucket("key:k1:spend", "spend", limit=1.0, window=0, period="day")
    total = Bucket("key:k1:spend:total", "spend", limit=1.0, window=0, period="total")
    for i in range(100):
        rate = Bucket(f"key:k{i}:requests", "requests", limit=10, window=1.0)
        lease = Bucket(f"key:k{i}:concurrent", "concurrent", limit=10, window=30.0)
        await backend.acquire(f"r{i}", [Charge(rate, 1), Charge(lease, 1)])
    await backend.settle("r0", [Charge(day, 0.5), Charge(total, 0.5)])

    clock.advance(61)
    await backend.acquire("late", [])
    assert not backend._rates and not backend._leases  # TATs passed, leases expired
    assert len(backend._spend) == 2  # today's total lives until a day after today; "total" forever

    clock.advance(2 * 86400)
    await backend.acquire("later", [])
    assert list(backend._spend) == ["key:k1:spend:total:total"]
