"""The `cache` and `cache-redis` targets' own parts: every measured request is a cache hit.

Both run `tollgate serve` with the `tollgate` target's configuration plus a response cache on the bench's model, and
every request carries `x-tollgate-cache: force` (the bench's body sets no temperature); the warm-up refreshes the
entry, and every measured answer is a hit: their figures against `tollgate` are what a hit costs and saves against a
call that goes upstream. `cache` hits the in-process tier (L1). `cache-redis` keeps answers in Redis (the `limits-redis`
target's Redis and prefix, cleaned up the same way) and gives L1 a single byte, so that nothing fits in it and every
hit is read from Redis (L2).
"""

from __future__ import annotations

from typing import Any

from bench.limits import BenchRedis

__all__ = ["CACHE_HEADERS", "WARMUP_HEADERS", "cache_config"]

CACHE_HEADERS = {"x-tollgate-cache": "force"}
# The warm-up refreshes the entry (fetches upstream and stores): the stream scenario's hits must replay a stored
# stream of the scenario's chunks, not the completion the plain scenario stored under the same key (the stream flag is
# not part of the key; a completion replays as a single content chunk).
WARMUP_HEADERS = {"Cache-Control": "no-cache"}
_TTL = "1h"  # longer than any run


def cache_config(base: dict[str, Any], model: str, store: BenchRedis | None = None) -> dict[str, Any]:
    """The `tollgate` target's configuration with `model` cached: in process, or (with `store`) in Redis only."""
    models = [
        {**entry, "cache": {"ttl": _TTL, "scope": "global"}} if entry["name"] == model else entry
        for entry in base["models"]
    ]
    if store is None:
        return {**base, "models": models}
    tiers = {"redis": True, "l1_max_bytes": 1, "key_prefix": f"{store.prefix}:cache", "redis_timeout": "1s"}
    return {**base, "models": models, "redis": store.url, "cache": tiers}
