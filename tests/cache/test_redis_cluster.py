"""The response cache's shared tier and the semantic cache's shared streams on a real Redis Cluster: values spread
over the primaries, one replica's answers and vectors reach another, and a killed primary costs misses, never an
error."""

from __future__ import annotations

import asyncio
from uuid import uuid4

from gateway.cache.memory import MemoryStore
from gateway.cache.redis_store import RedisStore
from gateway.cache.semantic import Probe, SemanticCache
from gateway.cache.tiered import TieredStore
from gateway.config import ModelCacheConfig, SemanticCacheConfig
from gateway.redis_client import connect
from gateway.testing.redis_cluster import LocalRedisCluster

SEMANTIC = ModelCacheConfig(semantic=SemanticCacheConfig(embedding_model="embed", threshold=0.9))


def _store(url: str, prefix: str) -> TieredStore:
    return TieredStore(MemoryStore(1 << 20), RedisStore(url, prefix=prefix, timeout=1.0, compress_over=1024))


async def test_answers_spread_over_the_primaries_and_reach_every_replica(redis_cluster: LocalRedisCluster) -> None:
    prefix = f"tollgate-test:{uuid4().hex}"
    writer, reader = _store(redis_cluster.url, prefix), _store(redis_cluster.url, prefix)
    values = {f"key-{i}": (b"answer %d " % i) * (1 + 300 * (i % 2)) for i in range(30)}  # half of them compressed
    try:
        for key, value in values.items():
            writer.put(key, value, 60)
        await writer.drain()
        assert writer.counters.l2_errors == 0
        assert {key: await reader.get(key) for key in values} == values
        assert reader.counters.l2_hits == len(values)
        owners = {redis_cluster.primary_of(f"{prefix}:{key}") for key in values}
        assert len(owners) == 3  # no hash tag: the cache uses every primary
    finally:
        await writer.close()
        await reader.close()


async def test_a_replicas_vectors_reach_the_others_through_the_cluster(redis_cluster: LocalRedisCluster) -> None:
    prefix = f"tollgate-test:{uuid4().hex}"
    one, other = (
        SemanticCache(
            {"m": SEMANTIC},
            redis=connect(redis_cluster.url, timeout=1.0, max_connections=4),
            prefix=prefix,
            sync_interval=0.0,
        )
        for _ in range(2)
    )
    try:
        one.add(Probe("m", "part", [1.0, 0.0, 0.0]), "exact-key-1")
        await one.drain()
        assert await other.nearest(Probe("m", "part", [0.99, 0.05, 0.0])) == "exact-key-1"
        assert other.counters.synced == 1 and other.counters.errors == 0
    finally:
        await one.close()
        await other.close()


async def test_a_killed_primary_costs_misses_never_an_error(redis_cluster: LocalRedisCluster) -> None:
    prefix = f"tollgate-test:{uuid4().hex}"
    keys = [f"key-{i}" for i in range(30)]
    victim = redis_cluster.primary_of(f"{prefix}:{keys[0]}")
    # One replica's store, its client connected before the kill: it must follow the promotion by itself. Its L1
    # holds nothing, so every lookup asks Redis.
    l2 = RedisStore(redis_cluster.url, prefix=prefix, timeout=1.0, compress_over=1024)
    store = TieredStore(MemoryStore(0), l2, retry_interval=0.1)
    try:
        assert await store.get("warm-up") is None
        redis_cluster.kill(victim)
        for key in keys:
            assert await store.get(key) is None  # a miss, whichever primary the key lives on
        assert store.counters.l2_errors > 0
        await asyncio.to_thread(redis_cluster.wait_healthy)
        for _ in range(100):  # the client learns the new slot map on its next refresh (at most once a second)
            store.put("after", b"back", 60)
            await store.drain()
            if await store.get("after") == b"back":
                break
            await asyncio.sleep(0.1)
        assert store.counters.l2_hits == 1 and not store.counters.l2_down
    finally:
        await store.close()
        await asyncio.to_thread(redis_cluster.revive, victim)
