"""Single-flight: one leader per key; waiters look again when it lands, and the next one leads if it failed."""

from __future__ import annotations

import asyncio

from gateway.cache.flight import Flights


async def test_waiters_wait_for_the_leader_and_the_next_leads_after_a_failure() -> None:
    flights = Flights()
    leader = await flights.claim("k")
    assert leader is not None
    waiters = [asyncio.ensure_future(flights.claim("k")) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    leader.land()  # say it failed: nothing was stored
    assert await asyncio.gather(*waiters) == [None, None, None]
    assert flights.waits == 3
    # They look the cache up again, miss, and claim again: the first of them leads, the others wait for it.
    second = await flights.claim("k")
    assert second is not None and second is not leader
    follower = asyncio.ensure_future(flights.claim("k"))
    await asyncio.sleep(0)
    second.land()
    second.land()  # a second landing changes nothing
    assert await follower is None
    assert flights.leaders == {}


async def test_a_cancelled_waiter_leaves_the_leader_alone() -> None:
    flights = Flights()
    leader = await flights.claim("k")
    assert leader is not None
    waiter = asyncio.ensure_future(flights.claim("k"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert flights.leaders["k"] is leader and not leader.done.is_set()
    leader.land()


async def test_keys_fly_apart() -> None:
    flights = Flights()
    assert await flights.claim("a") is not None
    assert await flights.claim("b") is not None
