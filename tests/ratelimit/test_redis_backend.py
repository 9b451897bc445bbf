"""What only the Redis backend has: replicas sharing limits, key layout and expiry, one round trip, failing fast."""

from __future__ import annotations

import asyncio
import calendar
import time
from collections.abc import AsyncIterator, Iterator
from importlib import resources

import pytest
import redis

from gateway.ratelimit.backend import Bucket, Charge, LimiterUnavailable
from gateway.ratelimit.gcra import SPEND_GRACE, spend_period
from gateway.ratelimit.redis_backend import RedisBackend
from tests.redis_support import RedisServer, free_port, start_redis_server


@pytest.fixture
def inspect(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client to look at the keys a test's backend wrote."""
    client = redis.Redis.from_url(redis_url, socket_timeout=2, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
async def backend(redis_url: str, redis_namespace: str) -> AsyncIterator[RedisBackend]:
    """A backend on the shared test Redis, in the test's own namespace."""
    limiter = RedisBackend(redis_url, namespace=redis_namespace, timeout=2.0)
    yield limiter
    await limiter.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to count its commands."""
    server = start_redis_server()
    yield server
    server.stop()


async def test_replicas_together_admit_exactly_the_limit(redis_url: str, redis_namespace: str) -> None:
    replicas = [RedisBackend(redis_url, namespace=redis_namespace, timeout=2.0) for _ in range(4)]
    rate = Bucket("global:*:requests", "requests", limit=50, window=3600.0)
    slots = Bucket("global:*:concurrent", "concurrent", limit=7, window=60.0)
    try:
        admissions = await asyncio.gather(
            *(replicas[i % 4].acquire(f"r{i}", [Charge(rate, 1)]) for i in range(400)),
            *(replicas[i % 4].acquire(f"c{i}", [Charge(slots, 1)]) for i in range(100)),
        )
    finally:
        for replica in replicas:
            await replica.close()
    assert sum(a.allowed for a in admissions[:400]) == 50
    assert sum(a.allowed for a in admissions[400:]) == 7


async def test_a_burst_is_answered_within_the_default_timeout(redis_url: str, redis_namespace: str) -> None:
    # Local queueing counts against the deadline: the pool must not let a burst time itself out.
    replicas = [RedisBackend(redis_url, namespace=redis_namespace) for _ in range(2)]
    rate = Bucket("global:*:requests", "requests", limit=50, window=3600.0)
    try:
        admissions = await asyncio.gather(*(replicas[i % 2].acquire(f"r{i}", [Charge(rate, 1)]) for i in range(200)))
    finally:
        for replica in replicas:
            await replica.close()
    assert sum(a.allowed for a in admissions) == 50


async def test_sustained_load_is_served_first_come_first_served(redis_url: str, redis_namespace: str) -> None:
    # 50 callers back to back: none may be overtaken by newcomers until its deadline passes.
    backend = RedisBackend(redis_url, namespace=redis_namespace)
    rate = Bucket("global:*:requests", "requests", limit=1e9, window=60.0)

    async def caller(k: int) -> None:
        for i in range(20):
            await backend.acquire(f"r{k}-{i}", [Charge(rate, 1)])

    try:
        await asyncio.gather(*(caller(k) for k in range(50)))
    finally:
        await backend.close()


async def test_keys_carry_the_namespace_and_expire(
    backend: RedisBackend, redis_namespace: str, inspect: redis.Redis
) -> None:
    rate = Bucket("key:k1:requests", "requests", limit=10, window=60.0)
    slots = Bucket("key:k1:concurrent", "concurrent", limit=5, window=30.0)
    await backend.acquire("r1", [Charge(rate, 1), Charge(slots, 1)])

    assert inspect.pttl(f"{{{redis_namespace}}}:key:k1:requests") == pytest.approx(6000, abs=100)  # TAT - now
    assert inspect.zrange(f"{{{redis_namespace}}}:key:k1:concurrent", 0, -1) == ["r1"]
    assert inspect.pttl(f"{{{redis_namespace}}}:key:k1:concurrent") == pytest.approx(30_000, abs=100)

    await backend.settle("r1", [Charge(slots, 1)])
    assert inspect.exists(f"{{{redis_namespace}}}:key:k1:concurrent") == 0  # the last lease gone, the set goes too


async def test_a_rate_key_disappears_when_its_tat_has_passed(
    backend: RedisBackend, redis_namespace: str, inspect: redis.Redis
) -> None:
    rate = Bucket("key:k1:requests", "requests", limit=10, window=1.0)
    await backend.acquire("r1", [Charge(rate, 1)])
    assert 0 < inspect.pttl(f"{{{redis_namespace}}}:key:k1:requests") <= 100
    await asyncio.sleep(0.15)
    assert inspect.exists(f"{{{redis_namespace}}}:key:k1:requests") == 0


async def test_spend_keys_carry_the_period_and_expire_a_day_after_it(
    backend: RedisBackend, redis_namespace: str, inspect: redis.Redis
) -> None:
    for period in ("day", "week", "month"):
        bucket = Bucket(f"key:k1:spend:{period}", "spend", limit=5.0, window=0, period=period)
        await backend.settle("r1", [Charge(bucket, 0.25)])
        label, end = spend_period(period, time.time())
        assert end is not None
        key = f"{{{redis_namespace}}}:key:k1:spend:{period}:{label}"
        assert float(inspect.get(key) or 0) == 0.25
        assert inspect.ttl(key) == pytest.approx(end + SPEND_GRACE - time.time(), abs=2)

    total = Bucket("key:k1:spend:total", "spend", limit=5.0, window=0, period="total")
    await backend.settle("r1", [Charge(total, 0.5)])
    await backend.settle("r2", [Charge(total, 0.25)])
    assert float(inspect.get(f"{{{redis_namespace}}}:key:k1:spend:total:total") or 0) == 0.75
    assert inspect.ttl(f"{{{redis_namespace}}}:key:k1:spend:total:total") == -1  # never expires


async def test_a_settle_sent_again_is_applied_once(
    backend: RedisBackend, redis_namespace: str, inspect: redis.Redis
) -> None:
    """A settle whose answer was lost is retried with the same arguments: tokens and spend must not count twice."""
    spend = Bucket("key:k1:spend:total", "spend", limit=5.0, window=0, period="total")
    for _ in range(3):
        await backend.settle("r1", [Charge(spend, 0.5)])
    await backend.settle("r2", [Charge(spend, 0.5)])  # another request's settle still counts
    assert float(inspect.get(f"{{{redis_namespace}}}:key:k1:spend:total:total") or 0) == 1.0


async def test_each_acquire_and_settle_is_one_round_trip(own_redis: RedisServer) -> None:
    backend = RedisBackend(own_redis.url, timeout=2.0)
    charges = [
        Charge(Bucket("key:k1:requests", "requests", 100, 60.0), 1),
        Charge(Bucket("key:k1:tokens", "tokens", 10_000, 60.0), 500),
        Charge(Bucket("key:k1:concurrent", "concurrent", 10, 30.0), 1),
        Charge(Bucket("key:k1:spend", "spend", 10.0, 0, "month"), 0),
    ]
    settles = [Charge(charges[1].bucket, -100), Charge(charges[2].bucket, 1), Charge(charges[3].bucket, 0.01)]
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    try:
        await backend.acquire("warm", charges)  # loads the scripts, opens the connection
        await backend.settle("warm", settles)
        before = client.info("commandstats")
        for i in range(10):
            await backend.acquire(f"r{i}", charges)
            await backend.settle(f"r{i}", settles)
        after = client.info("commandstats")
    finally:
        client.close()
        await backend.close()
    assert after["cmdstat_evalsha"]["calls"] - before["cmdstat_evalsha"]["calls"] == 20
    assert after.get("cmdstat_script") == before.get("cmdstat_script")  # no reloads


async def test_an_unreachable_redis_is_unavailable_at_once() -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.1)  # nothing listens there
    started = time.monotonic()
    with pytest.raises(LimiterUnavailable):
        await backend.acquire("r1", [Charge(Bucket("k", "requests", 1, 1.0), 1)])
    assert time.monotonic() - started < 0.3
    await backend.close()


async def test_a_redis_that_never_answers_is_unavailable_after_the_timeout() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, reads, never answers: a stuck Redis
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0", timeout=0.1)
    try:
        for _ in range(2):  # and again: no retry behind the scenes doubles the wait
            started = time.monotonic()
            with pytest.raises(LimiterUnavailable):
                await backend.settle("r1", [Charge(Bucket("k", "tokens", 1, 1.0), 1)])
            assert 0.09 <= time.monotonic() - started < 0.4
    finally:
        await backend.close()
        server.close()
        await server.wait_closed()


async def test_lua_calendar_matches_python(redis_url: str) -> None:
    stamps = [0.0, 86399.999, 951_782_400.0, 1_709_164_800.5]  # the epoch, 1970's first midnight, leap days
    for year in range(2019, 2032):
        for month in (1, 2, 3, 12):
            start = calendar.timegm((year, month, 1, 0, 0, 0))
            stamps += [start - 0.5, start, start + 0.5]
    stamps += [1_600_000_000 + i * 604_799.3 for i in range(300)]  # every weekday of ~6 years
    package = resources.files("gateway.ratelimit")
    probe = package.joinpath("common.lua").read_text(encoding="utf-8") + (
        "local out = {}\n"
        "for i = 2, #ARGV do\n"
        "  local label, ends = spend_period(ARGV[1], tonumber(ARGV[i]))\n"
        "  out[#out + 1] = label .. ' ' .. fmt(ends)\n"
        "end\n"
        "return out\n"
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for period in ("day", "week", "month"):
            lua = client.eval(probe, 0, period, *(repr(s) for s in stamps))
            python = [f"{label} {end:.0f}" for label, end in (spend_period(period, s) for s in stamps)]
            assert lua == python, period
    finally:
        client.close()
