"""`MemoryBackend`: the counters in this process's memory — exact for one process, per process across replicas.

An acquire runs without awaiting anything, so on one event loop it is atomic by construction. Expired entries are
swept at most once per `sweep_interval`, so memory follows the active buckets, not every key ever seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from gateway.ratelimit.backend import Admission, Bucket, BucketState, Charge
from gateway.ratelimit.gcra import SPEND_GRACE, backlog_at, rate_adjust, rate_charge, rate_remaining, spend_period


class _Verdict(NamedTuple):
    """One charge's outcome before anything is written."""

    allowed: bool
    state: BucketState  # allowed: the bucket once charged; denied: the bucket as it is
    retry_after: float


class MemoryBackend:
    """The limiter's counters in a dict per kind, on an injected clock (epoch seconds)."""

    def __init__(self, *, clock: Callable[[], float] = time.time, sweep_interval: float = 60.0) -> None:
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval
        self._rates: dict[str, tuple[float, float]] = {}  # key → (measured at, backlog = TAT - then)
        self._leases: dict[str, dict[str, float]] = {}  # key → lease id → expiry
        self._spend: dict[str, tuple[float, float | None]] = {}  # key:period label → (total USD, expiry)
        self._periods: dict[tuple[str, int], tuple[str, float | None]] = {}  # (period, UTC day) → label, end

    async def acquire(self, lease_id: str, charges: Sequence[Charge]) -> Admission:
        """Apply every charge, or none if any bucket denies."""
        now = self._clock()
        self._maybe_sweep(now)
        staged: dict[str, float] = {}  # rate backlogs charged earlier in this acquire (a bucket named twice)
        verdicts = [self._judge(lease_id, charge, now, staged) for charge in charges]
        denied = [(v.retry_after, i) for i, v in enumerate(verdicts) if not v.allowed]
        if denied:
            retry_after, index = max(denied, key=lambda d: (d[0], -d[1]))
            # Nothing is charged, so every bucket is reported as it is.
            states = tuple(
                v.state if not v.allowed else self._as_is(c.bucket, now) for c, v in zip(charges, verdicts, strict=True)
            )
            return Admission(False, states, retry_after, charges[index].bucket)
        for key, backlog in staged.items():
            self._rates[key] = (now, backlog)
        for charge in charges:
            if charge.bucket.kind == "concurrent":
                self._leases.setdefault(charge.bucket.key, {})[lease_id] = now + charge.bucket.window
        return Admission(True, tuple(v.state for v in verdicts), 0.0, None)

    async def settle(self, lease_id: str, adjustments: Sequence[Charge]) -> None:
        """Tokens and spend: add the amount; concurrent: release the lease; requests: nothing."""
        now = self._clock()
        for charge in adjustments:
            bucket = charge.bucket
            if bucket.kind == "tokens":
                backlog = rate_adjust(self._backlog(bucket.key, now), charge.amount, bucket.limit, bucket.window)
                self._rates[bucket.key] = (now, backlog)
            elif bucket.kind == "spend":
                key, expiry = self._spend_key(bucket, now)
                total = self._spend.get(key, (0.0, expiry))[0]
                self._spend[key] = (total + charge.amount, expiry)
            elif bucket.kind == "concurrent":
                leases = self._leases.get(bucket.key)
                if leases is not None:
                    leases.pop(lease_id, None)
                    if not leases:
                        del self._leases[bucket.key]

    async def close(self) -> None:
        """Nothing to release."""

    def _judge(self, lease_id: str, charge: Charge, now: float, staged: dict[str, float]) -> _Verdict:
        bucket = charge.bucket
        if bucket.kind == "concurrent":
            return self._judge_lease(lease_id, bucket, now)
        if bucket.kind == "spend":
            state = self._spend_state(bucket, now)
            allowed = state.remaining > 0
            return _Verdict(allowed, state, 0.0 if allowed else state.reset_after)
        backlog = staged[bucket.key] if bucket.key in staged else self._backlog(bucket.key, now)
        decision = rate_charge(backlog, charge.amount, bucket.limit, bucket.window)
        if decision.allowed:
            staged[bucket.key] = decision.backlog
        return _Verdict(
            decision.allowed, BucketState(bucket, decision.remaining, decision.backlog), decision.retry_after
        )

    def _judge_lease(self, lease_id: str, bucket: Bucket, now: float) -> _Verdict:
        leases = self._leases.get(bucket.key, {})
        expired = [member for member, expiry in leases.items() if expiry <= now]
        for member in expired:
            del leases[member]
        held = lease_id in leases  # an acquire retried with the same lease id holds one slot, not two
        count = len(leases)
        if held or count < bucket.limit:
            latest = max(leases.values(), default=now) - now
            after = BucketState(bucket, max(0.0, bucket.limit - count - (not held)), max(latest, bucket.window))
            return _Verdict(True, after, 0.0)
        # An upper bound: the earliest lease's expiry; a release usually frees a slot sooner.
        retry_after = min(leases.values(), default=now + bucket.window) - now
        return _Verdict(False, self._as_is(bucket, now), retry_after)

    def _as_is(self, bucket: Bucket, now: float) -> BucketState:
        """The bucket as it stands, uncharged."""
        if bucket.kind == "concurrent":
            leases = [expiry for expiry in self._leases.get(bucket.key, {}).values() if expiry > now]
            return BucketState(bucket, max(0.0, bucket.limit - len(leases)), max(leases, default=now) - now)
        if bucket.kind == "spend":
            return self._spend_state(bucket, now)
        backlog = self._backlog(bucket.key, now)
        return BucketState(bucket, rate_remaining(backlog, bucket.limit, bucket.window), backlog)

    def _spend_state(self, bucket: Bucket, now: float) -> BucketState:
        key, expiry = self._spend_key(bucket, now)
        total = self._spend.get(key, (0.0, None))[0]
        until_end = 0.0 if expiry is None else expiry - SPEND_GRACE - now
        return BucketState(bucket, max(0.0, bucket.limit - total), until_end)

    def _backlog(self, key: str, now: float) -> float:
        entry = self._rates.get(key)
        return 0.0 if entry is None else backlog_at(entry[1], entry[0], now)

    def _spend_key(self, bucket: Bucket, now: float) -> tuple[str, float | None]:
        """The key of the bucket's current period, and when the key expires (None: never)."""
        day = (bucket.period, int(now // 86400))
        period = self._periods.get(day)
        if period is None:
            if len(self._periods) > 16:  # a few periods a day: keep only today's
                self._periods.clear()
            period = self._periods[day] = spend_period(bucket.period, now)
        label, end = period
        return f"{bucket.key}:{label}", None if end is None else end + SPEND_GRACE

    def _maybe_sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        self._rates = {k: v for k, v in self._rates.items() if v[0] + v[1] > now}
        self._spend = {k: v for k, v in self._spend.items() if v[1] is None or v[1] > now}
        for key in list(self._leases):
            live = {member: expiry for member, expiry in self._leases[key].items() if expiry > now}
            if live:
                self._leases[key] = live
            else:
                del self._leases[key]
