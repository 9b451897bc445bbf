"""The tiers against a real Redis: L2 shared and expiring, large values compressed, and a Redis outage degrading to
L1 alone (logged, visible in the counters) without a failed call, then recovering."""

from __future__ import annotations

import asyncio
import logging
import zlib

import pytest
import redis

from gateway.cache.memory import MemoryStore
from gateway.cache.redis_store import CacheUnavailable, RedisStore
from gateway.cache.tiered import TieredStore
from tests.redis_support import start_redis_server


def tiers(url: str, namespace: str, **kwargs: float) -> TieredStore:
    l2 = RedisStore(url, prefix=namespace, timeout=1.0, compress_over=1024)
    return TieredStore(MemoryStore(1 << 20), l2, **kwargs)


async def test_another_replica_finds_an_answer_in_redis(redis_url: str, redis_namespace: str) -> None:
    one, two = tiers(redis_url, redis_namespace), tiers(redis_url, redis_namespace)
    try:
        one.put("k", b"answer", 60)
        await one.drain()
        assert await two.get("k") == b"answer"
        assert two.counters.l2_hits == 1
        assert await two.get("k") == b"answer"  # now from its own L1
        assert two.counters.l1_hits == 1
        assert await two.get("other") is None and two.counters.misses == 1
    finally:
        await one.close()
        await two.close()


async def test_redis_entries_expire(redis_url: str, redis_namespace: str) -> None:
    store = RedisStore(redis_url, prefix=redis_namespace, timeout=1.0, compress_over=1024)
    try:
        await store.set("k", b"answer", 0.2)
        found = await store.get("k")
        assert found is not None and found[0] == b"answer" and 0 < found[1] <= 0.2
        await asyncio.sleep(0.3)
        assert await store.get("k") is None
    finally:
        await store.close()


async def test_an_l2_hit_lives_in_l1_only_as_long_as_it_has_left(redis_url: str, redis_namespace: str) -> None:
    now = [100.0]
    writer = RedisStore(redis_url, prefix=redis_namespace, timeout=1.0, compress_over=1024)
    reader = TieredStore(MemoryStore(1 << 20, clock=lambda: now[0]), writer)
    try:
        await writer.set("k", b"answer", 5.0)
        assert await reader.get("k") == b"answer"
        found = reader.l1.get("k")
        assert found is not None and 4.0 < found[1] <= 5.0
        now[0] += 5.0
        assert reader.l1.get("k") is None
    finally:
        await reader.close()


async def test_large_values_are_compressed_in_redis(redis_url: str, redis_namespace: str) -> None:
    store = RedisStore(redis_url, prefix=redis_namespace, timeout=1.0, compress_over=1024)
    big, small = b"the same words again " * 500, b"short"
    try:
        await store.set("big", big, 60)
        await store.set("small", small, 60)
        raw = redis.Redis.from_url(redis_url)
        stored_big, stored_small = raw.get(f"{redis_namespace}:big"), raw.get(f"{redis_namespace}:small")
        raw.close()
        assert stored_big is not None and stored_big[:1] == b"\x01" and len(stored_big) < len(big) // 10
        assert zlib.decompress(stored_big[1:]) == big
        assert stored_small == b"\x00" + small
        assert (await store.get("big") or (b"",))[0] == big
    finally:
        await store.close()


async def test_redis_down_serves_from_l1_and_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    server = start_redis_server()
    now = [0.0]
    l2 = RedisStore(server.url, prefix="tollgate-test:outage", timeout=0.2, compress_over=1024)
    store = TieredStore(MemoryStore(1 << 20), l2, retry_interval=1.0, trip_after=2, clock=lambda: now[0])
    try:
        store.put("before", b"kept in L1", 60)
        await store.drain()
        server.stop()
        with caplog.at_level(logging.WARNING, logger="tollgate.cache"):
            assert await store.get("before") == b"kept in L1"  # L1 answers; Redis is not asked
            assert await store.get("missing") is None  # a miss, not an error
            store.put("during", b"while down", 60)
            await store.drain()
        assert store.counters.l2_down and store.counters.l2_errors == 2
        assert "serving from the in-process tier only" in caplog.text
        assert await store.get("during") == b"while down"
        assert await store.get("missing") is None
        assert store.counters.l2_skipped == 1  # down: not even tried until the retry interval passes
        server.start()
        now[0] += 1.0
        assert await store.get("missing") is None  # the probe: Redis answers again
        assert not store.counters.l2_down
    finally:
        await store.close()
        server.stop()


async def test_an_unreachable_redis_is_unavailable_not_an_exception_of_its_own() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", prefix="x", timeout=0.2, compress_over=1024)
    with pytest.raises(CacheUnavailable):
        await store.get("k")
    await store.close()
