"""`TieredStore`: the in-process LRU (L1) in front of Redis (L2), and what happens when Redis cannot answer.

A lookup tries L1, then L2 (an L2 hit is copied into L1 for the time it has left). A store goes to L1 at once and to
L2 in the background, so no answer waits for Redis. When Redis fails `trip_after` times in a row the L2 counts as
down: it is logged once, `l2_down` says so, and L2 is tried again at most once per `retry_interval`; meanwhile the
cache runs on L1 alone. A Redis problem never fails a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.cache.memory import MemoryStore
from gateway.cache.redis_store import CacheUnavailable, RedisStore

log = logging.getLogger("tollgate.cache")


@dataclass(slots=True)
class TierCounters:
    """What the tiers did, for metrics: plain counters that only grow, and the L2 state."""

    l1_hits: int = 0
    l2_hits: int = 0
    misses: int = 0
    l2_errors: int = 0  # Redis calls that failed or timed out
    l2_skipped: int = 0  # lookups and stores not sent to Redis because it was down
    l2_down: bool = False


class TieredStore:
    """L1 always; L2 when configured and answering."""

    def __init__(
        self,
        l1: MemoryStore,
        l2: RedisStore | None = None,
        *,
        retry_interval: float = 1.0,
        trip_after: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self.counters = TierCounters()
        self._retry_interval = retry_interval
        self._trip_after = trip_after
        self._clock = clock
        self._failures_in_a_row = 0
        self._probe_at = 0.0
        self._writes: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> bytes | None:
        """The stored value, from the nearest tier that has it."""
        found = self.l1.get(key)
        if found is not None:
            self.counters.l1_hits += 1
            return found[0]
        if self.l2 is not None and self._l2_open():
            try:
                found = await self.l2.get(key)
            except CacheUnavailable as exc:
                self._failed(exc)
            else:
                self._answered()
                if found is not None:
                    self.counters.l2_hits += 1
                    value, left = found
                    self.l1.set(key, value, left)
                    return value
        self.counters.misses += 1
        return None

    def put(self, key: str, value: bytes, ttl: float) -> None:
        """Keep `value` for `ttl` seconds: in L1 now, in L2 in the background."""
        self.l1.set(key, value, ttl)
        if self.l2 is not None and self._l2_open():
            task = asyncio.ensure_future(self._write(self.l2, key, value, ttl))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def drain(self) -> None:
        """Wait for the background writes to Redis (tests, and shutdown)."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def close(self) -> None:
        """Finish the pending writes, then close the Redis connections."""
        await self.drain()
        if self.l2 is not None:
            await self.l2.close()

    async def _write(self, l2: RedisStore, key: str, value: bytes, ttl: float) -> None:
        try:
            await l2.set(key, value, ttl)
        except CacheUnavailable as exc:
            self._failed(exc)
        else:
            self._answered()

    def _l2_open(self) -> bool:
        """While down, let one call through per interval to probe Redis; the rest go without it."""
        if not self.counters.l2_down:
            return True
        now = self._clock()
        if now < self._probe_at:
            self.counters.l2_skipped += 1
            return False
        self._probe_at = now + self._retry_interval  # claimed before awaiting: concurrent calls don't all probe
        return True

    def _failed(self, exc: CacheUnavailable) -> None:
        self.counters.l2_errors += 1
        self._failures_in_a_row += 1
        if not self.counters.l2_down and self._failures_in_a_row >= self._trip_after:
            self.counters.l2_down = True
            self._probe_at = self._clock() + self._retry_interval
            log.warning("response cache: Redis unavailable (%s); serving from the in-process tier only", exc)

    def _answered(self) -> None:
        self._failures_in_a_row = 0
        if self.counters.l2_down:
            self.counters.l2_down = False
            log.info("response cache: Redis answers again; the shared tier is back")
