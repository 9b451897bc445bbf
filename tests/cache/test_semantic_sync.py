"""The semantic cache's sharing through a real Redis stream: rows another replica (or another version) wrote that
cannot be read are skipped and counted, never a failed request, and the good rows around them still arrive."""

from __future__ import annotations

import numpy as np
import redis
import redis.asyncio as aioredis

from gateway.cache.semantic import Probe, SemanticCache
from gateway.config import ModelCacheConfig, SemanticCacheConfig

SETTINGS = ModelCacheConfig(semantic=SemanticCacheConfig(embedding_model="embed", threshold=0.9))


async def test_unreadable_shared_rows_are_skipped(redis_url: str, redis_namespace: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    cache = SemanticCache({"m": SETTINGS}, redis=client, prefix=redis_namespace)
    stream = cache._stream("m")  # the stream name is the replicas' contract; written here by hand
    writer = redis.Redis.from_url(redis_url)
    try:
        vector = np.asarray([1.0, 0.0], dtype="<f4").tobytes()
        writer.xadd(stream, {"p": "part", "k": "no-vector"})  # a field missing
        writer.xadd(stream, {"p": "part", "k": "odd-size", "v": b"\x00\x01\x02"})  # not float32s
        writer.xadd(stream, {"p": b"\xff", "k": "not-utf8", "v": vector})
        writer.xadd(stream, {"p": "part", "k": "good", "v": vector})
        assert await cache.nearest(Probe("m", "part", [1.0, 0.0])) == "good"
        assert cache.counters.errors == 3 and cache.counters.synced == 1
    finally:
        await cache.close()
        writer.close()
