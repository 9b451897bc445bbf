"""`RedisBackend`: the counters in Redis, shared by every replica, each call one atomic Lua script.

One round trip per acquire and one per settle (EVALSHA; redis-py reloads a script Redis has forgotten). The scripts
read the time from Redis (`TIME`), so the replicas' clocks never need to agree. A Redis that is down or slower than
`timeout` raises `LimiterUnavailable`; what to do then is `FailoverLimiter`'s business.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from gateway.ratelimit.backend import Admission, BucketState, Charge, LimiterUnavailable
from gateway.ratelimit.gcra import PERIODS
from gateway.redis_client import connect, redis_errors

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from gateway.redis_client import RedisClient

_SCRIPTS = ("acquire.lua", "settle.lua")
# Scripts run one at a time in Redis, and redis-py's CPU per call (~0.2 ms) is the bottleneck: a few connections keep
# Redis busy, and a burst queues here, in order. Measured: 400 concurrent acquires in one process all answer within
# 0.1 s with 8 connections; with 64, half of them time out (every reply waits behind every other one).
_MAX_CONNECTIONS = 8


class RedisBackend:
    """The limiter's counters in Redis under `namespace`; every call gives up after `timeout` seconds.

    Every key is `{namespace}:…`: the braces make `namespace` the Redis Cluster hash tag, so all of a deployment's
    counters live in one slot and a script that charges a key's, a user's and a global bucket at once touches one
    slot, atomically, as on a single Redis (the price: one primary holds all the counters; see docs/ratelimits.md).
    """

    def __init__(self, url: str, *, namespace: str = "tollgate:rl", timeout: float = 0.1) -> None:
        self._url = url
        self._prefix = key_prefix(namespace)
        self._timeout = timeout
        package = resources.files("gateway.ratelimit")
        common = package.joinpath("common.lua").read_text(encoding="utf-8")
        self._sources = [common + package.joinpath(name).read_text(encoding="utf-8") for name in _SCRIPTS]
        self._link: _Link | None = None

    async def acquire(self, lease_id: str, charges: Sequence[Charge]) -> Admission:
        """Apply every charge, or none if any bucket denies: one EVALSHA."""
        if not charges:
            return Admission(True, (), 0.0, None)
        keys, args = self._encode(lease_id, charges)
        reply = await self._call(0, keys, args)
        allowed, denied, retry_after, *numbers = (float(x) for x in reply)
        states = tuple(BucketState(c.bucket, numbers[2 * i], numbers[2 * i + 1]) for i, c in enumerate(charges))
        if allowed:
            return Admission(True, states, 0.0, None)
        return Admission(False, states, retry_after, charges[int(denied) - 1].bucket)

    async def settle(self, lease_id: str, adjustments: Sequence[Charge]) -> None:
        """Tokens and spend: add the amount; concurrent: release the lease; requests: nothing. One EVALSHA."""
        adjustments = [a for a in adjustments if a.bucket.kind != "requests"]
        if adjustments:
            keys, args = self._encode(lease_id, adjustments)
            # Names this settle (a retry sends the same arguments): applied once however often it is sent.
            digest = hashlib.blake2b("\n".join(map(str, args)).encode(), digest_size=8).hexdigest()
            keys.append(f"{self._prefix}settled:{lease_id}:{digest}")
            await self._call(1, keys, args)

    async def close(self) -> None:
        """Close the connection pool (a later call would open a new one)."""
        link, self._link = self._link, None
        if link is not None:
            await link.client.aclose()

    def _encode(self, lease_id: str, charges: Sequence[Charge]) -> tuple[list[str], list[str | float]]:
        keys = []
        args: list[str | float] = [lease_id]
        for charge in charges:
            bucket = charge.bucket
            if bucket.kind == "spend" and bucket.period not in PERIODS:
                raise ValueError(f"unknown spend period {bucket.period!r}: expected one of {', '.join(PERIODS)}")
            keys.append(self._prefix + bucket.key)
            # One argument a bucket (see acquire.lua): packing a command costs per argument in redis-py.
            limit, window, amount = float(bucket.limit), float(bucket.window), float(charge.amount)
            args.append(f"{bucket.kind} {limit!r} {window!r} {bucket.period or '-'} {amount!r}")
        return keys, args

    async def _call(self, which: int, keys: list[str], args: list[str | float]) -> list[bytes]:
        """Run a script; any failure to get an answer in time becomes `LimiterUnavailable` (the one place)."""
        try:
            async with asyncio.timeout(self._timeout):
                link = self._connect()
                async with link.slots:
                    reply: list[bytes] = await link.scripts[which](keys=keys, args=args, client=link.client)
                    return reply
        except redis_errors() as exc:
            raise LimiterUnavailable(f"redis rate limit store: {type(exc).__name__}: {exc}") from exc

    def _connect(self) -> _Link:
        # Made on first use, inside the running loop the pool's connections will belong to.
        if self._link is None:
            client = connect(self._url, timeout=self._timeout, max_connections=_MAX_CONNECTIONS)
            acquire, settle = (client.register_script(source) for source in self._sources)
            self._link = _Link(client, (acquire, settle), asyncio.Semaphore(_MAX_CONNECTIONS))
        return self._link


def key_prefix(namespace: str) -> str:
    """What every counter's key starts with: `{namespace}:`, the namespace as the hash tag (kept when it has one)."""
    return f"{namespace}:" if "{" in namespace else f"{{{namespace}}}:"


@dataclass(frozen=True, slots=True)
class _Link:
    """The connection pool, the scripts registered on it, and the first-come-first-served queue in front of it."""

    client: RedisClient
    scripts: tuple[AsyncScript, AsyncScript]
    # FIFO, unlike redis-py's BlockingConnectionPool, where newcomers overtake waiters and starve them.
    slots: asyncio.Semaphore
