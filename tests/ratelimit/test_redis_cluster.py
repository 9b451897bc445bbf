"""The limiter on a real Redis Cluster: one slot per script, exact across replicas, and a primary killed under load
(its replica promoted meanwhile) answered by `on_redis_error`, then exact again."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from uuid import uuid4

import pytest
import redis

from gateway.ratelimit.backend import Bucket, Charge, LimiterUnavailable
from gateway.ratelimit.failover import FailoverLimiter
from gateway.ratelimit.memory import MemoryBackend
from gateway.ratelimit.redis_backend import RedisBackend, key_prefix
from gateway.testing.redis_cluster import LocalRedisCluster


def _namespace() -> str:
    return f"tollgate-test:{uuid4().hex}"


async def test_a_scripts_keys_share_one_slot_and_limits_hold_across_replicas(redis_cluster: LocalRedisCluster) -> None:
    namespace = _namespace()
    replicas = [RedisBackend(redis_cluster.url, namespace=namespace, timeout=2.0) for _ in range(3)]
    per_key = Bucket("key:k1:requests", "requests", limit=20, window=60.0)
    everyone = Bucket("global:requests", "requests", limit=1000, window=60.0)
    tokens = Bucket("user:u1:tokens", "tokens", limit=10_000, window=3600.0)
    slots = Bucket("key:k1:concurrent", "concurrent", limit=100, window=30.0)
    try:

        async def call(i: int) -> bool:
            charges = [Charge(per_key, 1), Charge(everyone, 1), Charge(tokens, 100), Charge(slots, 1)]
            admission = await replicas[i % 3].acquire(f"lease-{i}", charges)
            if admission.allowed:
                await replicas[(i + 1) % 3].settle(f"lease-{i}", [Charge(tokens, -50), Charge(slots, 1)])
            return admission.allowed

        admitted = await asyncio.gather(*(call(i) for i in range(50)))
        assert sum(admitted) == 20  # exactly the limit, from three clients at once

        inspect = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port, decode_responses=True)
        try:
            prefix = key_prefix(namespace)
            names = [prefix + b.key for b in (per_key, everyone, tokens, slots)] + [prefix + "settled:x:y"]
            assert len({inspect.keyslot(name) for name in names}) == 1
            # 20 admitted x 100 tokens, 50 refunded each: the token bucket's backlog is 1000 tokens' worth.
            backlog = float(str(inspect.get(prefix + tokens.key)).split()[1])
            assert backlog == pytest.approx(1000 * 3600.0 / 10_000, abs=1.0)  # it drains as time passes
        finally:
            inspect.close()
    finally:
        for replica in replicas:
            await replica.close()


async def test_a_killed_primary_follows_on_redis_error_and_then_limits_are_exact_again(
    redis_cluster: LocalRedisCluster,
) -> None:
    namespace = _namespace()
    limiters = {
        policy: FailoverLimiter(
            RedisBackend(redis_cluster.url, namespace=namespace, timeout=0.3),
            MemoryBackend(),
            fail_open=policy == "open",
            retry_interval=0.2,
        )
        for policy in ("open", "closed")
    }
    roomy = Bucket("key:load:requests", "requests", limit=1_000_000, window=60.0)
    outcomes: dict[str, Counter[str]] = {policy: Counter() for policy in limiters}
    stop = asyncio.Event()

    async def load(policy: str) -> None:
        limiter, seen = limiters[policy], outcomes[policy]
        n = 0
        while not stop.is_set():
            n += 1
            try:
                admission = await limiter.acquire(f"{policy}-{n}", [Charge(roomy, 1)])
                seen["admitted" if admission.allowed else "denied"] += 1
            except LimiterUnavailable:
                seen["unavailable"] += 1  # the engine's 503 under `on_redis_error: closed`
            except Exception as exc:  # anything else would be a 500
                seen[f"error {type(exc).__name__}"] += 1
            await asyncio.sleep(0.005)

    victim = redis_cluster.primary_of(key_prefix(namespace) + roomy.key)
    workers = [asyncio.create_task(load(policy)) for policy in limiters]
    try:
        await asyncio.sleep(0.3)
        redis_cluster.kill(victim)
        killed_at = time.monotonic()
        await asyncio.to_thread(redis_cluster.wait_healthy)
        failover_seconds = time.monotonic() - killed_at
        await _until_shared_again(limiters["open"], limiters["closed"])
        stop.set()
        await asyncio.gather(*workers)

        assert outcomes["open"]["error"] == 0 and set(outcomes["open"]) == {"admitted"}, outcomes
        assert set(outcomes["closed"]) <= {"admitted", "unavailable"}, outcomes
        assert outcomes["closed"]["unavailable"] > 0, (outcomes, failover_seconds)  # the outage was seen
        assert limiters["open"].fallback_acquires > 0

        # Exact again, on the promoted replica: a fresh key admits exactly its limit, from both clients.
        exact = Bucket("key:after:requests", "requests", limit=10, window=60.0)
        answers = [await limiters[p].acquire(f"after-{i}-{p}", [Charge(exact, 1)]) for i in range(8) for p in limiters]
        assert sum(a.allowed for a in answers) == 10
        assert not limiters["open"].down and not limiters["closed"].down
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        for limiter in limiters.values():
            await limiter.close()
        await asyncio.to_thread(redis_cluster.revive, victim)


async def _until_shared_again(*limiters: FailoverLimiter) -> None:
    """Until each limiter answers from Redis again (the client has learned the new primary)."""
    probe = Bucket("key:probe:requests", "requests", limit=1_000_000, window=60.0)
    deadline = time.monotonic() + 15.0
    for limiter in limiters:
        while True:
            before = limiter.fallback_acquires
            try:
                await limiter.acquire(uuid4().hex, [Charge(probe, 1)])
                if not limiter.down and limiter.fallback_acquires == before:
                    break
            except LimiterUnavailable:
                pass
            assert time.monotonic() < deadline, "the limiter never reached the promoted replica"
            await asyncio.sleep(0.1)
