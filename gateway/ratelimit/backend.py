"""The limiter backend contract: counters (`Bucket`), what a request charges them (`Charge`), and the answer.

A backend holds the counters and applies charges atomically, all or nothing; it knows nothing about keys, users or
configuration. `MemoryBackend` holds them in one process, `RedisBackend` shares them across replicas, and
`FailoverLimiter` puts a local backend behind a shared one. The arithmetic lives in `gcra`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Kind = Literal["requests", "tokens", "concurrent", "spend"]


@dataclass(frozen=True, slots=True)
class Bucket:
    """One counter: what it limits, for whom."""

    key: str  # e.g. "key:3f2a9c0d:requests" — the backend adds its own namespace prefix
    kind: Kind
    limit: float  # requests or tokens per window; concurrent requests; US dollars per period
    window: float  # seconds: the rate window (requests, tokens) or the lease (concurrent); 0 for spend
    period: str = ""  # spend only: "day" | "week" | "month" | "total" (UTC calendar periods)


@dataclass(frozen=True, slots=True)
class Charge:
    """What one request charges one bucket.

    requests: 1; tokens: the estimate (at settle: actual - estimate, may be negative); concurrent: 1 (the lease id is
    the member); spend: 0 at acquire, the cost at settle.
    """

    bucket: Bucket
    amount: float


@dataclass(frozen=True, slots=True)
class BucketState:
    """A bucket as an acquire left it."""

    bucket: Bucket
    remaining: float  # what is left now (after this charge when allowed)
    reset_after: float  # seconds until the bucket is back to its full limit


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to an acquire: all charges applied (`allowed`), or none."""

    allowed: bool
    states: tuple[BucketState, ...]  # one per charge, same order
    # When denied: seconds until the denying buckets would admit this charge (0 if allowed; spend: until the period
    # ends, 0 for a "total" budget, which never resets).
    retry_after: float
    denied_by: Bucket | None


class LimiterUnavailable(Exception):
    """The backend cannot answer (Redis down or too slow)."""


class LimiterBackend(Protocol):
    """Where the counters live. Implementations: `MemoryBackend`, `RedisBackend`, `FailoverLimiter`."""

    async def acquire(self, lease_id: str, charges: Sequence[Charge]) -> Admission:
        """Apply every charge, or none if any bucket denies; atomic."""
        ...

    async def settle(self, lease_id: str, adjustments: Sequence[Charge]) -> None:
        """When the request ends. tokens: add amount (may be negative); spend: add amount (USD); concurrent: release
        `lease_id` (amount ignored); requests: ignored."""
        ...

    async def close(self) -> None:
        """Release connections; the backend is not used afterwards."""
        ...
