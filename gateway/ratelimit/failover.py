"""`FailoverLimiter`: a shared backend (Redis) with a policy for when it cannot answer.

fail_open: answer from a local backend meanwhile (limits then hold per process only); fail_closed: re-raise
`LimiterUnavailable` (the engine turns it into a 503). The primary counts as down after `trip_after` failures in a
row (one slow answer on a saturated process is not an outage); while down it is probed at most once per
`retry_interval`, so a dead Redis costs one failed attempt per interval, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from gateway.ratelimit.backend import Admission, Charge, LimiterBackend, LimiterUnavailable

log = logging.getLogger("tollgate.limits")

# How long a lease acquired on the fallback is remembered for its settle, beyond its longest bucket window.
_LEASE_MEMORY = 3600.0


class FailoverLimiter:
    """`primary` while it answers; when it cannot, `fallback` (fail_open) or `LimiterUnavailable` (fail_closed)."""

    def __init__(
        self,
        primary: LimiterBackend,
        fallback: LimiterBackend,
        *,
        fail_open: bool,
        retry_interval: float = 1.0,
        trip_after: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._fail_open = fail_open
        self._retry_interval = retry_interval
        self._clock = clock
        self._trip_after = trip_after
        self._failures_in_a_row = 0
        self._probe_at = 0.0  # while down: when the primary may be tried again
        self._on_fallback: dict[str, float] = {}
        self._releasing: set[asyncio.Task[None]] = set()  # lease id → until when its settle is expected
        self.down = False
        self.fallback_acquires = 0
        self.primary_failures = 0

    async def acquire(self, lease_id: str, charges: Sequence[Charge]) -> Admission:
        """Acquire on the primary; when it cannot answer, on the fallback or not at all (fail_closed)."""
        try:
            admission = await self._on_primary_acquire(lease_id, charges)
        except LimiterUnavailable:
            if not self._fail_open:
                raise
            return await self._fallback_acquire(lease_id, charges)
        return admission

    def _release_on_primary(self, lease_id: str, charges: Sequence[Charge]) -> None:
        """An acquire on the primary whose answer never came (past its deadline, or cancelled) may still have taken
        slots: free them, in the background, at no risk (a release of a slot not held is a no-op)."""
        releases = [Charge(c.bucket, 1) for c in charges if c.bucket.kind == "concurrent"]
        if not releases:
            return

        async def release() -> None:
            with contextlib.suppress(LimiterUnavailable):
                await self._primary.settle(lease_id, releases)

        task = asyncio.ensure_future(release())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def settle(self, lease_id: str, adjustments: Sequence[Charge]) -> None:
        """Settle where the lease was acquired; a primary that cannot answer raises `LimiterUnavailable`."""
        if self._on_fallback.pop(lease_id, None) is not None:
            await self._fallback.settle(lease_id, adjustments)
            return
        self._gate()
        try:
            await self._primary.settle(lease_id, adjustments)
        except LimiterUnavailable:
            self._failed()
            raise
        self._answered()

    async def close(self) -> None:
        """Close both backends."""
        try:
            await self._primary.close()
        finally:
            await self._fallback.close()

    async def _on_primary_acquire(self, lease_id: str, charges: Sequence[Charge]) -> Admission:
        self._gate()
        try:
            admission = await self._primary.acquire(lease_id, charges)
        except LimiterUnavailable:
            self._release_on_primary(lease_id, charges)
            self._failed()
            raise
        except asyncio.CancelledError:  # the client went away mid-check
            self._release_on_primary(lease_id, charges)
            raise
        self._answered()
        return admission

    async def _fallback_acquire(self, lease_id: str, charges: Sequence[Charge]) -> Admission:
        self.fallback_acquires += 1
        admission = await self._fallback.acquire(lease_id, charges)
        if admission.allowed:
            now = self._clock()
            self._forget_old_leases(now)
            longest = max((c.bucket.window for c in charges), default=0.0)
            self._on_fallback[lease_id] = now + longest + _LEASE_MEMORY
        return admission

    def _gate(self) -> None:
        """While down, let one call through per interval to probe the primary; the rest fail at once."""
        if not self.down:
            return
        now = self._clock()
        if now < self._probe_at:
            raise LimiterUnavailable("the rate limit store is down; next attempt in a moment")
        self._probe_at = now + self._retry_interval  # claimed before awaiting: concurrent calls don't all probe

    def _failed(self) -> None:
        self.primary_failures += 1
        self._failures_in_a_row += 1
        if not self.down and self._failures_in_a_row >= self._trip_after:
            self.down = True
            self._probe_at = self._clock() + self._retry_interval
            policy = "failing open: limits hold per process only" if self._fail_open else "failing closed: 503"
            log.warning("rate limit store unavailable; %s until it answers again", policy)

    def _answered(self) -> None:
        self._failures_in_a_row = 0
        if self.down:
            self.down = False
            log.info("rate limit store answers again; limits are shared again")

    def _forget_old_leases(self, now: float) -> None:
        # Leases whose request never settled (no adjustment to make): drop the oldest once their time is up.
        while self._on_fallback:
            lease_id, until = next(iter(self._on_fallback.items()))
            if until > now:
                break
            del self._on_fallback[lease_id]
